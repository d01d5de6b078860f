"""The monitor's picture answers its question: log-scale perplexity against the teacher's reference line, KL
against 0, labelled axes with units, and the numbers of the first and last point in the title."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from swift_lingudistill.monitor_plot import language_figure, plot_language

HISTORY = [
    {"step": 50, "lang_ppl": 3.0, "lang_kl": 0.4},
    {"step": 0, "lang_ppl": 9.0, "lang_kl": 1.5},  # out of order on purpose: plotted by step
    {"step": 100, "lang_ppl": 2.0, "lang_kl": 0.1},
]


@pytest.fixture
def figure():
    figure = language_figure(HISTORY, teacher_ppl=1.5, rows=8, tokens=75)
    yield figure
    plt.close(figure)


def test_axes_scales_labels_and_units(figure):
    left, right = figure.axes
    assert left.get_yscale() == "log" and "perplexity" in left.get_ylabel()
    assert right.get_yscale() == "linear" and "nats per token" in right.get_ylabel()
    assert left.get_xlabel() == right.get_xlabel() == "training step"


def test_the_curves_and_the_reference_lines(figure):
    left, right = figure.axes
    student, teacher = left.get_lines()
    assert list(student.get_xdata()) == [0, 50, 100] and list(student.get_ydata()) == [9.0, 3.0, 2.0]
    assert list(teacher.get_ydata()) == [1.5, 1.5] and "teacher" in teacher.get_label()
    kl, zero = right.get_lines()
    assert list(kl.get_ydata()) == [1.5, 0.4, 0.1] and list(zero.get_ydata()) == [0.0, 0.0]
    assert right.get_ylim()[0] == 0.0


def test_the_title_asks_the_question_and_gives_the_numbers(figure):
    texts = [figure.get_suptitle()] + [t.get_text() for t in figure.texts]
    joined = " ".join(texts)
    assert "Did the language survive?" in joined and "8 rows, 75 answer tokens" in joined
    assert "student 9 (step 0) -> 2 (step 100), teacher 1.5: 84% of the gap closed" in joined  # 1 - ln(2/1.5)/ln(6)
    assert "KL(teacher || student): 1.5 -> 0.1 nats per token" in joined


def test_a_student_below_its_teacher_is_said_so():
    below = [{"step": 0, "lang_ppl": 3.0, "lang_kl": 0.2}, {"step": 10, "lang_ppl": 1.2, "lang_kl": 0.3}]
    figure = language_figure(below, teacher_ppl=1.5)
    assert "teacher 1.5: the student is now below the teacher" in " ".join(t.get_text() for t in figure.texts)
    plt.close(figure)


def test_plot_language_writes_a_png_with_one_point(tmp_path):
    path = plot_language(HISTORY[:1], tmp_path / "one.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
