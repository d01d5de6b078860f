"""Every shipped config loads; every bad config is refused with the field, the value, why and the fix."""

from __future__ import annotations

import pytest
import yaml

from swift_lingudistill.config import (
    DEFAULT_CATEGORIES,
    ConfigError,
    LinguDistillConfig,
    config_from_dict,
    dump_config,
    load_config,
)
from tests.support import REPO

SHIPPED = sorted((REPO / "plugin_configs").glob("*.yaml"))


def test_the_three_required_configs_ship():
    assert {p.name for p in SHIPPED} >= {"selective.yaml", "uniform.yaml", "self_teacher.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_every_setting_is_commented(path, monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/teacher")
    config = load_config(path)
    assert isinstance(config, LinguDistillConfig)
    for line in path.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{path.name}: setting without its one-line reason: {line!r}"
    # dump -> load round-trips to the same resolved config
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config


def test_shipped_settings_mean_what_their_names_say(monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/teacher")
    selective = load_config(REPO / "plugin_configs" / "selective.yaml")
    uniform = load_config(REPO / "plugin_configs" / "uniform.yaml")
    self_teacher = load_config(REPO / "plugin_configs" / "self_teacher.yaml")
    assert selective.teacher.model == "/models/teacher" and selective.tagging.vision_patterns
    assert uniform.tagging.vision_patterns == {} and uniform.tagging.no_image is None
    assert uniform.tagging.explicit_field is None and uniform.tagging.category_fields == []
    assert self_teacher.teacher.is_self


def test_unset_environment_reference_is_an_error(monkeypatch):
    monkeypatch.delenv("LINGUDISTILL_TEACHER", raising=False)
    with pytest.raises(
        ConfigError, match=r"teacher.model = '\$\{LINGUDISTILL_TEACHER\}'.*export LINGUDISTILL_TEACHER="
    ):
        load_config(REPO / "plugin_configs" / "selective.yaml")


BAD = [
    ({"loss": {}}, ["teacher: required but missing", "teacher:\n        model:"]),
    ({"teacher": {}}, ["teacher.model: required but missing", "or to `self`"]),
    ({"teacher": {"model": "x"}, "loss": {"tempreature": 2}}, ["loss.tempreature: unknown key", "`temperature`"]),
    ({"teacher": {"model": "x"}, "extra": 1}, ["extra: unknown key", "loss, monitor, preflight, tagging, teacher"]),
    ({"teacher": {"model": "x"}, "loss": {"temperature": 0}}, ["loss.temperature = 0", "greater than 0"]),
    ({"teacher": {"model": "x"}, "loss": {"lambda": -1}}, ["loss.lambda = -1", "greater than or equal to 0"]),
    ({"teacher": {"model": "x"}, "loss": {"lambda": "big"}}, ["loss.lambda = 'big'", "valid number"]),
    ({"teacher": {"model": "x"}, "loss": {"top_k": 0}}, ["loss.top_k = 0"]),
    ({"teacher": {"model": "x"}, "loss": {"beta": 0.5}}, ["beta only applies to divergence jsd"]),
    ({"teacher": {"model": "x"}, "loss": {"divergence": "jsd", "beta": 1.5}}, ["loss.beta = 1.5"]),
    (
        {"teacher": {"model": "x"}, "loss": {"divergence": "reverse_kl", "top_k": 8}},
        ["top_k needs divergence forward_kl"],
    ),
    ({"teacher": {"model": "x"}, "loss": {"mode": "replace"}}, ["mode replace needs loss.alpha"]),
    ({"teacher": {"model": "x"}, "loss": {"alpha": 0.5}}, ["alpha only applies to mode replace"]),
    (
        {"teacher": {"model": "x"}, "kv_share": {"scope": "text"}},
        ["kv_share.scope = 'text'", "'image', 'prompt', 'all' or 'none'"],
    ),
    ({"teacher": {"model": "x"}, "kv_share": {"detach": "maybe"}}, ["kv_share.detach = 'maybe'"]),
    ({"teacher": {"model": "self", "model_type": "qwen2"}}, ["model_type does not apply to `model: self`"]),
    ({"teacher": {"model": "x"}, "tagging": {"default": "sometimes"}}, ["tagging.default = 'sometimes'"]),
    ({"teacher": {"model": "x"}, "tagging": {"categories": {"ocr": 3}}}, ["tagging.categories", "[0, 1]"]),
    (
        {"teacher": {"model": "x"}, "tagging": {"vision_patterns": {"bad": "(("}}},
        ["vision_patterns.bad is not a valid"],
    ),
    ({"teacher": {"model": "x"}, "tagging": {"unknown_category": "guess"}}, ["tagging.unknown_category = 'guess'"]),
]


@pytest.mark.parametrize(("data", "expected"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config_names_field_value_and_fix(data, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "bad.yaml")
    message = str(info.value)
    assert message.startswith("Invalid LinguDistill config bad.yaml")
    for fragment in expected:
        assert fragment in message


def test_every_problem_is_reported_at_once():
    data = {"teacher": {"model": "x"}, "loss": {"temperature": -1, "lambda": -2}, "kv_share": {"scope": "?"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).count("\n  - ") == 3


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="is neither a file nor a shipped config"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty)


def test_defaults_are_the_papers_setting():
    config = config_from_dict({"teacher": {"model": "x"}})
    assert config.kv_share.scope == "image" and config.kv_share.detach is True
    assert config.loss.divergence == "forward_kl" and config.loss.temperature == 1.0 and config.loss.lambda_ == 1.0
    assert config.loss.mode == "add" and config.loss.top_k is None
    assert config.tagging.default == 1.0 and config.tagging.no_image == 1.0
    assert config.loss.beta is None
    assert config_from_dict({"teacher": {"model": "x"}, "loss": {"divergence": "jsd"}}).loss.beta == 0.5


def test_weights_accept_words_and_categories_merge_over_the_paper_split():
    config = config_from_dict(
        {"teacher": {"model": "x"}, "tagging": {"default": "no_distill", "categories": {"My OCR": 1, "chart": True}}}
    )
    weights = config.tagging.category_weights()
    assert config.tagging.default == 0.0
    assert weights["my_ocr"] == 1.0 and weights["chart"] == 1.0  # user entries override
    assert weights["counting"] == DEFAULT_CATEGORIES["counting"] == 0.0  # the rest of the paper's split stays
