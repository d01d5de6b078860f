"""The pre-flight counts what training will distil: its tags, and the rows it says swift drops for length, are
exactly what swift's own loader (with the plugin's tagging hook) and swift's own template give."""

from __future__ import annotations

import json

from swift_lingudistill.config import config_from_dict
from swift_lingudistill.integration.dataset_tagging import tagging
from swift_lingudistill.integration.tag_report import tag_report
from swift_lingudistill.tagging import TagReport, decode_channel

MAX_LENGTH = 40


def _dataset(demo_assets, tmp_path):
    """The demo's rows (vision, language and text-only kinds, some tagged), plus long rows of every kind."""
    rows = [json.loads(line) for line in demo_assets["dataset"].read_text().splitlines()]
    long = "Explain this in detail, please. " * 8
    rows.insert(3, {"messages": [{"role": "user", "content": long}, {"role": "assistant", "content": "No."}]})
    rows.insert(9, {**rows[1], "messages": [{"role": "user", "content": "<image>" + long},
                                            {"role": "assistant", "content": "No."}]})  # fmt: skip
    rows.append({**rows[0], "distill": False, "category": "ocr"})
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tag_report_counts_match_swifts_own_loading_and_template(demo_assets, tmp_path):
    from swift.dataset import load_dataset
    from swift.model import get_model_processor
    from swift.template import MaxLengthError, get_template

    path = _dataset(demo_assets, tmp_path)
    config = config_from_dict({"teacher": {"model": "self"}, "preflight": {"max_bad_rows": 100}})
    result = tag_report(config, [str(path)], model=str(demo_assets["student"]), template="qwen2_5_vl",
                        max_length=MAX_LENGTH)  # fmt: skip
    assert result.error is None and result.scans[0].measured

    # The reference: swift loads and tags the file, swift's template (as `swift sft --max_length` builds it)
    # raises MaxLengthError on the rows it will drop.
    _, processor = get_model_processor(str(demo_assets["student"]), load_model=False, model_type="qwen2_5_vl")
    template = get_template(processor, template_type="qwen2_5_vl", max_length=MAX_LENGTH, truncation_strategy="raise")
    template.set_mode("train")
    with tagging(config):
        loaded, _ = load_dataset([str(path)], split_dataset_ratio=0.0, shuffle=False)
    trained, dropped = TagReport(), []
    for index, row in enumerate(loaded):
        try:
            template.encode(dict(row), return_length=True)
        except MaxLengthError:
            dropped.append(f"{path} line {index + 1}")
            continue
        trained.add(decode_channel(row["channel"])[1])

    assert dropped and [b.where for b in result.scans[0].bad] == dropped
    assert result.report.counts_by_rule() == trained.counts_by_rule()
    assert (result.report.rows, result.report.distilled) == (trained.rows, trained.distilled)
    assert abs(result.report.weight_sum - trained.weight_sum) < 1e-9
    assert f"distilled (w > 0): {trained.distilled} of {trained.rows} rows" in result.format()
