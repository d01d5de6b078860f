"""The ``--external_plugins`` file: swift's own ``import_external_file`` puts its folder first on ``sys.path`` for
the rest of the process, so that folder must make nothing of the package importable by a bare name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from swift_lingudistill import plugin_path
from swift_lingudistill.__main__ import main

PACKAGE_DIR = Path(plugin_path()).parents[1]


def bare_names() -> set[str]:
    """Every module or subpackage name of the package, as a bare ``import NAME`` would spell it."""
    names = set()
    for path in PACKAGE_DIR.rglob("*"):
        if path.suffix == ".py" and path.stem != "__init__":
            names.add(path.stem)
        elif path.is_dir() and path.name != "__pycache__":
            names.add(path.name)
    return names - {"__main__", Path(plugin_path()).stem}  # the entry file itself: a name no one else has


def test_plugin_path_prints_the_entry_file(capsys):
    assert main(["plugin-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_absolute() and path == Path(plugin_path()) and path.is_file()
    assert "register()" in path.read_text()


def test_the_entry_file_is_alone_in_its_folder():
    folder = Path(plugin_path()).parent
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == [Path(plugin_path()).name]


def test_after_swift_imports_the_plugin_no_package_module_is_importable_by_a_bare_name(monkeypatch):
    import swift.utils.utils as swift_utils

    monkeypatch.setattr(sys, "path", list(sys.path))  # swift's insertion is undone after the test
    monkeypatch.setattr(swift_utils, "_external_files", [])
    swift_utils.import_external_file(plugin_path())
    assert sys.path[0] == str(Path(plugin_path()).parent)  # what swift did
    names = bare_names()
    assert {"config", "configs", "tagging", "losses", "teacher", "distiller", "trainer", "monitor"} <= names
    leaked = {}
    for name in sorted(names):
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        origin = str(getattr(spec, "origin", None) or getattr(spec, "submodule_search_locations", None) or "")
        if spec is not None and str(PACKAGE_DIR) in origin:
            leaked[name] = origin
    assert not leaked, f"importable by a bare name after --external_plugins: {leaked}"
    # the check itself sees what the inserted folder offers: the entry file, under its own unique name
    assert importlib.util.find_spec(Path(plugin_path()).stem).origin == plugin_path()


@pytest.mark.parametrize("name", ["config", "trainer", "losses", "tagging"])
def test_the_old_layout_would_have_leaked(name, monkeypatch):
    """Control: with the package folder itself on sys.path (the old entry file's folder), the names resolve."""
    monkeypatch.setattr(sys, "path", [str(PACKAGE_DIR), str(PACKAGE_DIR / "integration"), *sys.path])
    spec = importlib.util.find_spec(name) if name not in sys.modules else None
    assert spec is not None and str(PACKAGE_DIR) in str(spec.origin or spec.submodule_search_locations)
