"""The pre-flight's core, without swift: rows read with their lines, images judged, teacher files judged, the
scan's counts and the verdict's numbers; the config's `${VAR}` names kept through copies and dumps."""

from __future__ import annotations

import base64
import io
import json
import multiprocessing

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from swift_lingudistill.config import TaggingConfig, config_from_dict, displayed_value, dump_config
from swift_lingudistill.preflight import (
    PreflightError,
    RowTooLong,
    bad_rows_error,
    check_images,
    nonfinite_tensors,
    read_rows,
    remote_code_reasons,
    scan_rows,
)
from swift_lingudistill.tagging import Tagger

ROW = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}


def test_rows_carry_their_file_lines_and_the_cap_reads_no_further(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(ROW) + "\n\n" + json.dumps(ROW) + "\n" + "{broken\n")
    assert [where for where, _ in read_rows(path, limit=2)] == ["line 2", "line 4"]  # the broken line is never read
    with pytest.raises(PreflightError, match=r"d.jsonl line 5 is not valid JSON .* '\{broken'"):
        list(read_rows(path))
    array = tmp_path / "d.json"
    array.write_text(json.dumps([ROW, ROW, 3]))
    with pytest.raises(PreflightError, match=r"d\.json item 3 is a JSON int, not an object"):
        list(read_rows(array))


def test_images_missing_corrupt_truncated_and_inline(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:40])
    inline = base64.b64encode(good.read_bytes()).decode()
    assert check_images({"images": [str(good), {"path": str(good), "bytes": None}, inline, "https://x/y.png"]}) == []
    problems = check_images(
        {"images": [str(tmp_path / "none.png"), str(tmp_path / "bad.png"), str(tmp_path / "cut.png")]}
    )
    assert len(problems) == 3
    assert "none.png' does not exist" in problems[0] and "bad.png is not a readable image" in problems[1]
    assert "cut.png is not a readable image" in problems[2]
    monkeypatch.setenv("ROOT_IMAGE_DIR", str(tmp_path))  # swift's second place to look
    assert check_images({"images": ["good.png"]}) == []
    parts = {"messages": [{"role": "user", "content": [{"type": "image", "image": "nowhere.png"}]}]}
    assert "nowhere.png' does not exist" in check_images(parts)[0]


def test_remote_code_is_found_in_the_json_text(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert remote_code_reasons(tmp_path) == []
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mine", "auto_map": {"AutoModel": "m.M"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["t.T", None]}}))
    reasons = remote_code_reasons(tmp_path)
    assert reasons == [
        "config.json has an auto_map (m.M)",
        "config.json's model_type 'mine' is not built into transformers",
        "tokenizer_config.json has an auto_map (t.T)",
    ]


def test_nonfinite_tensors_are_named_with_their_count(tmp_path):
    good = {"a": torch.ones(3), "ids": torch.arange(4)}
    save_file(good, str(tmp_path / "model-1.safetensors"))
    assert nonfinite_tensors(tmp_path) == (2, [])
    bad = torch.ones(2, 5)
    bad[0, 1], bad[1, 2] = float("nan"), float("-inf")
    save_file({"w": bad}, str(tmp_path / "model-2.safetensors"))
    assert nonfinite_tensors(tmp_path) == (3, ["model-2.safetensors: w (2 of 10 values are NaN or infinite)"])
    assert nonfinite_tensors(tmp_path / "nowhere") == (0, [])


def _measure(limit: int):
    def measure(row: dict) -> int:
        length = len(row["messages"][0]["content"])
        if row.get("boom"):
            raise KeyError("no such token")
        if length > limit:
            raise RowTooLong(length)
        return length

    return measure


def test_scan_counts_what_trains_and_what_does_not():
    def row(text: str, **extra) -> dict:
        return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "."}], **extra}

    rows = [row("short", distill=True), row("x" * 50, distill=True), row("y" * 60, distill=False),
            row("ok", boom=True, distill=0.5), row("fine", distill=0.0), row("never read")]  # fmt: skip
    numbered = [(f"line {i + 1}", r) for i, r in enumerate(rows)]
    result = scan_rows(numbered, "d.jsonl", Tagger(TaggingConfig()), limit=5, measure=_measure(10), max_length=10)
    assert (result.rows, result.more, result.longest) == (5, True, 60)
    assert [b.where for b in result.bad] == ["d.jsonl line 2", "d.jsonl line 3", "d.jsonl line 4"]
    assert "50 tokens, longer than --max_length 10" in result.bad[0].reason
    assert "KeyError" in result.bad[2].reason and "another random row" in result.bad[2].reason
    assert (result.report.rows, result.report.distilled, result.bad_distilled) == (2, 1, 2)
    assert "the first 5 rows (preflight.max_rows: 5" in result.summary()
    error = bad_rows_error([result], allowed=2, max_length=10)
    message = str(error)
    assert "3 row(s) of the data would not train as written, more than preflight.max_bad_rows (2)" in message
    assert "Effect: 3 of 5 checked rows are distilled as written; 1 of the 2 that would train." in message
    assert "the longest checked row has 60 tokens, the limit is 10" in message and "max_bad_rows: 3" in message
    assert bad_rows_error([result], allowed=3, max_length=10) is None


def test_scan_collects_tag_errors_with_their_lines():
    rows = [("line 1", {**ROW, "distill": "maybe"}), ("line 2", ROW), ("line 3", {**ROW, "distill": 7})]
    with pytest.raises(PreflightError) as info:
        scan_rows(rows, "d.jsonl", Tagger(TaggingConfig()))
    message = str(info.value)
    assert "d.jsonl line 1: field 'distill' has value 'maybe'" in message and "d.jsonl line 3:" in message


def test_env_values_are_named_in_dumps_and_copies(monkeypatch):
    monkeypatch.setenv("LD_T", "/very/private/teacher")
    config = config_from_dict({"teacher": {"model": "${LD_T}"}, "loss": {"lambda": 2.0}})
    assert config.teacher.model == "/very/private/teacher"
    copied = config.model_copy(update={"teacher": config.teacher.model_copy(update={"model_type": "qwen2"})})
    for each in (config, copied):
        text = dump_config(each)
        assert "/very/private" not in text and yaml.safe_load(text)["teacher"]["model"] == "${LD_T}"
        assert displayed_value(each, "teacher.model", "/very/private/teacher/abs") == "${LD_T}"
    assert yaml.safe_load(dump_config(copied))["teacher"]["model_type"] == "qwen2"
    assert config_from_dict(yaml.safe_load(dump_config(copied))).teacher.model == "/very/private/teacher"


def test_bad_rows_are_counted_once_across_processes():
    from swift_lingudistill.integration.row_guard import BadRowCounter, BadRowsMetric

    counter = BadRowCounter(allowed=2)
    counter.add(ROW, ValueError("x"))
    worker = multiprocessing.get_context("fork").Process(target=_add_rows, args=(counter,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0 and counter.total == 2  # ROW again (not counted) and one new row
    metric = BadRowsMetric(counter)
    assert metric.compute() == {"value": 2.0} and metric.compute() == {"value": 0.0}
    assert counter.error() is None
    counter.add({**ROW, "n": 3}, ValueError("x"))
    assert "bad row 3 of this process" in str(counter.error())


def _add_rows(counter) -> None:
    counter.add(ROW, ValueError("again"))
    counter.add({**ROW, "n": 2}, ValueError("new"))


def test_image_bytes_inline_decode(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert check_images({"images": [{"bytes": buffer.getvalue(), "path": None}]}) == []
    assert "inline image bytes is not a readable image" in check_images({"images": [{"bytes": b"xx", "path": None}]})[0]
