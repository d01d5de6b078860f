"""The shipped configs: one copy (inside the package, which the repository's plugin_configs/ links to), named by
their short names wherever a config is named, and loadable for tagging without the teacher's variable."""

from __future__ import annotations

import os

import pytest

from swift_lingudistill.config import (
    ConfigError,
    load_config,
    load_config_for,
    resolve_config_path,
    shipped_config_names,
    shipped_config_path,
)
from swift_lingudistill.config.partial import unneeded_variables
from swift_lingudistill.config.shipped import SHIPPED_DIR
from tests.support import REPO


def test_plugin_configs_is_the_package_folder_not_a_copy():
    link = REPO / "plugin_configs"
    assert link.is_symlink() and link.resolve() == SHIPPED_DIR.resolve() == (REPO / "swift_lingudistill" / "configs")
    assert os.readlink(link) == "swift_lingudistill/configs"  # relative: works in any checkout
    assert shipped_config_names() == ["selective", "self_teacher", "uniform"]


@pytest.mark.parametrize("name", ["selective", "uniform.yaml", " self_teacher ", "uniform.yml"])
def test_a_short_name_is_the_packaged_file(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # any folder: nothing of the repository is needed
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/t")
    stem = name.strip().split(".")[0]
    assert resolve_config_path(name) == shipped_config_path(name) == SHIPPED_DIR / f"{stem}.yaml"
    assert load_config(name) == load_config(SHIPPED_DIR / f"{stem}.yaml")


def test_an_existing_path_wins_and_a_path_is_never_a_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uniform").write_text("teacher: {model: self}\nloss: {lambda: 0.5}\n")
    assert load_config("uniform").loss.lambda_ == 0.5  # the file in this folder, not the shipped one
    assert shipped_config_path("configs/selective") is None and shipped_config_path("nope") is None
    with pytest.raises(ConfigError, match=r"'nope/selective.yaml' is neither a file nor a shipped config"):
        load_config("nope/selective.yaml")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as error:
        load_config("selectve")
    assert "(did you mean `selective`?)" in str(error.value)
    assert "selective, self_teacher, uniform" in str(error.value) and "config selective --out" in str(error.value)


def test_tagging_needs_no_teacher_variable(monkeypatch):
    monkeypatch.delenv("LINGUDISTILL_TEACHER", raising=False)
    with pytest.raises(ConfigError, match="LINGUDISTILL_TEACHER is not set"):
        load_config("selective")  # training needs it
    config = load_config_for("selective", sections=("tagging",))
    assert config.teacher.model == "${LINGUDISTILL_TEACHER}"  # visible as unresolved, never an empty string
    assert "LINGUDISTILL_TEACHER" not in os.environ  # the environment is left as it was
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/t")
    assert config.tagging == load_config("selective").tagging  # the same tagging as training will use


def test_a_variable_the_needed_section_uses_is_still_required(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_FIELD", raising=False)
    monkeypatch.delenv("MY_TEACHER", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("teacher: {model: '${MY_TEACHER}'}\ntagging: {explicit_field: '${MY_FIELD}'}\n")
    assert unneeded_variables(
        {"teacher": {"model": "${MY_TEACHER}"}, "tagging": {"x": "${MY_FIELD}"}}, ["tagging"]
    ) == {"MY_TEACHER"}
    with pytest.raises(ConfigError, match="MY_FIELD is not set"):
        load_config_for(path, sections=("tagging",))
    monkeypatch.setenv("MY_FIELD", "decide")
    assert load_config_for(path, sections=("tagging",)).tagging.explicit_field == "decide"
