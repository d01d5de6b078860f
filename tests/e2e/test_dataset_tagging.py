"""Tagging runs inside swift's own dataset loading: local JSONL and registered datasets, never rewritten."""

from __future__ import annotations

import json

import pytest

from swift_lingudistill.config import config_from_dict
from swift_lingudistill.integration.tag_report import tag_report
from swift_lingudistill.preflight import PreflightError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_registered_dataset_with_its_own_preprocessor(tmp_path):
    """A dataset registered with swift (own column names, own preprocess_func), selected by name.

    swift records where each row came from as it resolves the name (a hub id, or the registered path).
    """
    from swift.dataset import DatasetMeta, ResponsePreprocessor, register_dataset

    rows = [
        {"question": "Read the sign.", "answer": "Stop.", "category": "captioning"},  # category wins
        {"question": "What is the capital of Peru?", "answer": "Lima."},  # dataset glob
        {"question": "Name a prime.", "answer": "Seven."},  # dataset glob
    ]
    path = _write(tmp_path / "qa.jsonl", rows)
    register_dataset(
        DatasetMeta(
            dataset_name="lingudistill_test_qa",
            dataset_path=str(path),
            preprocess_func=ResponsePreprocessor(columns={"question": "query", "answer": "response"}),
        ),
        exist_ok=True,
    )
    config = config_from_dict({"teacher": {"model": "self"}, "tagging": {"datasets": {"*/qa.jsonl": "no_distill"}}})
    report = tag_report(config, ["lingudistill_test_qa"]).report
    assert report.counts_by_rule() == {"category:captioning": 1, "dataset:*/qa.jsonl": 2}
    assert report.distilled == 1 and report.rows == 3


def test_local_jsonl_extra_fields_survive_swift_column_cleanup(tmp_path):
    """swift drops unknown columns while loading; the configured tag fields are kept for the tagger."""
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "kind": "ocr"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "kd": 0.5},
    ]
    path = _write(tmp_path / "local.jsonl", rows)
    config = config_from_dict(
        {"teacher": {"model": "self"}, "tagging": {"explicit_field": "kd", "category_fields": ["kind"]}}
    )
    report = tag_report(config, [str(path)]).report
    assert report.counts_by_rule() == {"category:ocr": 1, "explicit": 1}
    assert report.mean_weight == pytest.approx(0.25)


def test_malformed_explicit_tag_stops_with_the_file_line(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "distill": 1},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "distill": 7},
    ]
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(PreflightError, match=r"bad.jsonl line 2: field 'distill' has value 7"):
        tag_report(config_from_dict({"teacher": {"model": "self"}}), [str(path)])
