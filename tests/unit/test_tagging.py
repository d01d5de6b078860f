"""Tagging decides each sample's distillation weight in the documented order and carries it in `channel`."""

from __future__ import annotations

import pickle

import pytest

from swift_lingudistill.config import TaggingConfig
from swift_lingudistill.tagging import Decision, Tagger, TaggingError, TagReport, decode_channel, encode_channel

IMG = [{"bytes": None, "path": "/x.png"}]


def row(text: str, images=IMG, **extra) -> dict:
    return {
        "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}],
        "images": images,
        **extra,
    }


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(TaggingConfig(datasets={"*OCR*": 0.0, "captions.jsonl": 0.5}))


ORDER_CASES = [
    # explicit beats everything, including a no_distill category and a vision prompt
    (row("<image>Read the sign.", distill=True, category="ocr"), (1.0, "explicit")),
    (row("<image>Describe this photo.", distill="no_distill", category="captioning"), (0.0, "explicit")),
    (row("<image>Describe this photo.", distill=0.25), (0.25, "explicit")),
    (row("<image>Describe this photo.", distill=None, category="ocr"), (0.0, "category:ocr")),
    # category beats no_image and dataset globs; names are normalised
    (row("How many legs does a spider have?", images=None, category="Chart"), (0.0, "category:chart")),
    (row("<image>Read the text.", category="General VQA"), (1.0, "category:general_vqa")),
    (row("<image>Read it.", category="doc-vqa", dataset="/d/OCR.jsonl"), (0.0, "category:doc_vqa")),
    (row("<image>x", category="", source="ocr"), (1.0, "default")),  # empty category; `source` is not a default field
    # dataset globs: case-insensitive, on the full entry or its file name, before no_image
    (row("<image>Describe this photo.", dataset="/data/latex_ocr_train.jsonl"), (0.0, "dataset:*OCR*")),
    (row("Tell me a joke.", images=None, dataset="/data/Captions.JSONL"), (0.5, "dataset:captions.jsonl")),
    # no_image beats vision patterns: a text-only counting question is language-heavy
    (row("How many legs does a spider have?", images=None), (1.0, "no_image")),
    (row("How many legs does a spider have?", images=[]), (1.0, "no_image")),
    ({"messages": [{"role": "user", "content": "Count to ten."}]}, (1.0, "no_image")),
    (row("Read this.", images=[{"bytes": None, "path": None}]), (1.0, "no_image")),
    # a vision pattern on an image row gives 0
    (row("<image>How many cats are in the picture?"), (0.0, "vision:counting")),
    (row("<image>What is written on the whiteboard?", images=["/x.png"]), (0.0, "vision:reading_text")),
    (row("<video>Locate the ball.", images=None, videos=["/v.mp4"]), (0.0, "vision:grounding")),
    # default otherwise
    (row("<image>Describe this photo."), (1.0, "default")),
    # list-style content: an image part counts as an image, text parts are searched
    (
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "image": "/x.png"}, {"type": "text", "text": "Chart?"}]}
            ]
        },
        (0.0, "vision:chart"),
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": "Describe it."}]}]},
        (1.0, "default"),
    ),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "How many?"}]}]}, (1.0, "no_image")),
    # only user turns are searched
    (
        {
            "messages": [
                {"role": "system", "content": "Read documents carefully."},
                {"role": "user", "content": "<image>Describe this photo."},
                {"role": "assistant", "content": "A table with 3 columns."},
            ],
            "images": ["/x.png"],
        },
        (1.0, "default"),
    ),
]


@pytest.mark.parametrize(("sample", "expected"), ORDER_CASES)
def test_decision_order(tagger: Tagger, sample: dict, expected: tuple[float, str]) -> None:
    assert tagger.decide(sample) == Decision(*expected)


def test_settings_change_the_decision() -> None:
    cfg = TaggingConfig(default=0.5, no_image=None, explicit_field=None, categories={"ocr": 0.3, "mine": 0.7})
    tagger = Tagger(cfg)
    assert tagger.decide(row("Describe it.", images=None, distill=False)) == Decision(0.5, "default")
    assert tagger.decide(row("How many legs?", images=None)) == Decision(0.0, "vision:counting")
    assert tagger.decide(row("x", category="OCR")) == Decision(0.3, "category:ocr")
    assert tagger.decide(row("x", category="mine")) == Decision(0.7, "category:mine")
    other = Tagger(TaggingConfig(explicit_field="use_kd", category_fields=["kind"]))
    assert other.decide(row("x", use_kd="0", distill=True, category="ocr")) == Decision(0.0, "explicit")
    assert other.decide(row("x", kind="ocr", category="captioning")) == Decision(0.0, "category:ocr")


VISION_PROMPTS = [
    ("<image>What does the sign say?", "reading_text"),
    ("<image>Transcribe the handwritten note.", "reading_text"),
    ("<image>What is the total on this receipt?", "document"),
    ("<image>Summarize the PDF.", "document"),
    ("<image>Which year has the highest value in the bar chart?", "chart"),
    ("<image>What is the label on the y-axis of the graph?", "chart"),
    ("<image>Convert the table into markdown.", "table"),
    ("<image>What is in the second column?", "table"),
    ("<image>How many people are standing?", "counting"),
    ("<image>Count the apples.", "counting"),
    ("<image>Output the bounding box of the dog.", "grounding"),
    ("<image>Give the coordinates of the red car.", "grounding"),
    ("<image><ref>the man</ref>", "grounding"),
]


@pytest.mark.parametrize(("prompt", "pattern"), VISION_PROMPTS)
def test_default_vision_patterns_hit(prompt: str, pattern: str) -> None:
    assert Tagger(TaggingConfig()).decide(row(prompt)) == Decision(0.0, f"vision:{pattern}")


@pytest.mark.parametrize(
    "prompt",
    [
        "<image>Describe this photo.",
        "<image>What is the capital of France?",
        "<image>Write a short poem inspired by this image.",
        "<image>What breed is this dog, and what is it known for?",
        "<image>Why might the person in the picture be happy?",
    ],
)
def test_default_vision_patterns_miss_language_prompts(prompt: str) -> None:
    assert Tagger(TaggingConfig()).decide(row(prompt)) == Decision(1.0, "default")


@pytest.mark.parametrize("value", ["maybe", 2.5, -0.1, [1], {"w": 1}, ""])
def test_malformed_explicit_value_raises(value) -> None:
    with pytest.raises(TaggingError) as err:
        Tagger(TaggingConfig()).decide(row("x", distill=value, dataset="/data/my.jsonl"), index=17)
    message = str(err.value)
    assert "row 18 of /data/my.jsonl" in message  # counted from 1: the 18th row
    assert "'distill'" in message and repr(value) in message
    assert "true/false, distill/no_distill, or a number in [0, 1]" in message


def test_explicit_error_without_index_or_dataset() -> None:
    with pytest.raises(TaggingError, match=r"row: field 'distill' has value 'maybe'"):
        Tagger(TaggingConfig()).decide(row("x", distill="maybe"))


def test_unknown_category_default() -> None:
    tagger = Tagger(TaggingConfig(default=0.5))
    sample = row("<image>How many cats?", category="Memes")
    assert tagger.decide(sample) == Decision(0.5, "unknown_category")
    assert tagger.explain(sample) == (Decision(0.5, "unknown_category"), "memes")


def test_unknown_category_rules() -> None:
    tagger = Tagger(TaggingConfig(unknown_category="rules"))
    assert tagger.explain(row("<image>How many cats?", category="memes")) == (
        Decision(0.0, "vision:counting"),
        "memes",
    )
    assert tagger.explain(row("Hi", images=None, category="memes")) == (Decision(1.0, "no_image"), "memes")
    assert tagger.explain(row("<image>Describe.", category="ocr")) == (Decision(0.0, "category:ocr"), None)


def test_unknown_category_error() -> None:
    tagger = Tagger(TaggingConfig(unknown_category="error", categories={"memes_v2": 1.0}))
    with pytest.raises(TaggingError) as err:
        tagger.decide(row("x", category="Memes", dataset="/d/a.jsonl"), index=3)
    message = str(err.value)
    assert "row 4 of /d/a.jsonl" in message and "'Memes'" in message
    assert "captioning" in message and "memes_v2" in message and "ocr" in message


@pytest.mark.parametrize("original", [None, "", "web", "a|b", "x|ld=", "ld=0.5;default", "|ld=1.0;explicit"])
@pytest.mark.parametrize(
    "decision",
    [
        Decision(0.0, "explicit"),
        Decision(1.0, "default"),
        Decision(0.25, "dataset:*OCR*"),
        Decision(1 / 3, "category:general_vqa"),
        Decision(1.0, "rule;with|pipe"),
    ],
)
def test_channel_round_trip(original: str | None, decision: Decision) -> None:
    encoded = encode_channel(original, decision)
    assert isinstance(encoded, str)
    back_original, back = decode_channel(encoded)
    assert back_original == original
    assert back == decision and back.weight == decision.weight


@pytest.mark.parametrize("value", [None, "", "web", "a|b", "|ld=", "|ld=nan-ish;x", "ld=1.0", "|ld=2.0;x"])
def test_decode_untagged_raises(value) -> None:
    with pytest.raises(TaggingError, match=r"without a LinguDistill tag.*preprocessor did not run.*cached_dataset"):
        decode_channel(value)


def test_tag_row_keeps_channel_and_is_idempotent() -> None:
    tagger = Tagger(TaggingConfig())
    sample = row("<image>Count the dots.", channel="web")
    out = tagger.tag_row(sample, 0)
    assert set(out) == {"channel"}
    assert decode_channel(out["channel"]) == ("web", Decision(0.0, "vision:counting"))
    again = tagger.tag_row({**sample, **out, "distill": True}, 0)
    assert decode_channel(again["channel"]) == ("web", Decision(1.0, "explicit"))
    assert decode_channel(tagger.tag_row(row("Hi", images=None))["channel"]) == (None, Decision(1.0, "no_image"))


def test_tagger_pickles() -> None:
    tagger = Tagger(TaggingConfig(datasets={"*ocr*": 0.0}, vision_patterns={"mine": r"\bzebra\b"}))
    clone = pickle.loads(pickle.dumps(tagger))
    samples = [sample for sample, _ in ORDER_CASES] + [row("<image>Is that a ZEBRA?"), row("<image>x", dataset="o.ocr")]
    assert [clone.decide(s) for s in samples] == [tagger.decide(s) for s in samples]
    assert clone.decide(row("<image>Is that a ZEBRA?")) == Decision(0.0, "vision:mine")


def test_tag_report_counts() -> None:
    tagger = Tagger(TaggingConfig(unknown_category="rules"))
    samples = [
        row("Hi", images=None),  # no_image 1
        row("Why?", images=None),  # no_image 1
        row("<image>How many cats?"),  # vision:counting 0
        row("<image>Describe this.", distill=0.5),  # explicit 0.5
        row("<image>Describe this.", category="ocr"),  # category:ocr 0
        row("<image>Describe this.", category="memes"),  # default 1, unknown memes
        row("<image>Read the text.", category="memes"),  # vision:reading_text 0, unknown memes
        row("<image>Describe this."),  # default 1
    ]
    report = TagReport()
    for sample in samples:
        report.add(*tagger.explain(sample))
    assert report.rows == 8
    assert report.distilled == 5
    assert report.distill_share == 5 / 8
    assert report.mean_weight == pytest.approx(4.5 / 8)
    assert report.counts_by_rule() == {
        "no_image": 2,
        "default": 2,
        "vision:counting": 1,
        "explicit": 1,
        "category:ocr": 1,
        "vision:reading_text": 1,
    }
    assert report.unknown_categories() == {"memes": 2}

    text = report.format("tag report")
    assert text.splitlines()[0] == "tag report"
    assert "no_image" in text and "vision:reading_text" in text and "25.0%" in text
    assert "5 of 8 rows (62.5%)" in text
    assert "memes (2)" in text

    other = TagReport()
    other.add(Decision(0.0, "vision:chart"), "cartoons")
    other.add(Decision(1.0, "no_image"))
    report.merge(other)
    assert report.rows == 10 and report.distilled == 6 and report.distill_share == 0.6
    assert report.mean_weight == pytest.approx(5.5 / 10)
    assert report.counts_by_rule()["no_image"] == 3 and report.counts_by_rule()["vision:chart"] == 1
    assert report.unknown_categories() == {"memes": 2, "cartoons": 1}


def test_empty_report() -> None:
    report = TagReport()
    assert report.rows == 0 and report.distill_share == 0.0 and report.mean_weight == 0.0
    assert "0 of 0 rows" in report.format()
    assert "unknown categories" not in report.format()
