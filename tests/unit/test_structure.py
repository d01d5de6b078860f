"""The package's shape: an import graph without cycles or upward arrows, ms-swift imported only by the
``integration`` subpackage, no private member reached across modules, small files, and the drawing in
docs/ARCHITECTURE.md current."""

from __future__ import annotations

import ast

import pytest

from tests.support import REPO
from tests.support.structure import (
    ARCHITECTURE,
    PACKAGE,
    SWIFT_SUBPACKAGE,
    architecture_block,
    find_cycle,
    import_graph,
    imported_names,
    package_modules,
    tier_of,
    upward_imports,
)

MAX_LINES = 400


def test_the_import_graph_has_no_cycle():
    internal, _ = import_graph()
    assert find_cycle(internal) is None, f"import cycle: {' -> '.join(find_cycle(internal))}"


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_every_module_has_a_tier_and_no_import_points_up():
    internal, _ = import_graph()
    untiered = sorted(m for m in internal if tier_of(m) is None)
    assert not untiered, f"give these modules a tier in tests/support/structure.py TIERS: {untiered}"
    assert not upward_imports(internal), f"imports pointing to a higher tier: {upward_imports(internal)}"


def test_only_the_swift_subpackage_imports_ms_swift():
    """Lazy imports count: ``imported_names`` walks the whole syntax tree, not only the top level."""
    _, external = import_graph()
    outside = {m for m in external if m != SWIFT_SUBPACKAGE and not m.startswith(SWIFT_SUBPACKAGE + ".")}
    offenders = sorted(m for m in outside if "swift" in external[m])
    assert not offenders, f"modules outside {PACKAGE}.{SWIFT_SUBPACKAGE} that import ms-swift: {offenders}"
    assert any("swift" in external[m] for m in external if m.startswith(SWIFT_SUBPACKAGE + "."))


def test_lazy_and_type_checking_imports_are_seen():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from swift.trainers import Seq2SeqTrainer\n"
        "def f():\n    import swift.loss\n    from .config import load_config\n"
    )
    names = imported_names(source, module="distiller")
    assert {"swift.trainers.Seq2SeqTrainer", "swift.loss", f"{PACKAGE}.config.load_config"} <= names


def _private_definitions(modules) -> dict[str, set[str]]:
    """'_name' -> the modules that define it (functions, classes, attributes assigned on an object)."""
    defined: dict[str, set[str]] = {}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names = [node.attr]
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    defined.setdefault(name, set()).add(module)
    return defined


def test_no_private_member_is_reached_from_another_module():
    modules = package_modules()
    defined = _private_definitions(modules)
    reaches = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE)):
                reaches += [f"{module}: import {a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                owners = defined.get(node.attr, set())
                if not on_self and owners and module not in owners:
                    reaches.append(f"{module}:{node.lineno} .{node.attr} (defined in {sorted(owners)})")
    assert not reaches, "private members reached across modules (make them public or move them):\n" + "\n".join(reaches)


def test_the_architecture_drawing_is_current():
    assert architecture_block() in ARCHITECTURE.read_text(encoding="utf-8"), (
        "docs/ARCHITECTURE.md's import graph is stale: run `python -m tests.support.structure --write`"
    )


@pytest.mark.parametrize("folder", ["swift_lingudistill", "tests", "benchmarks", "examples"])
def test_no_file_is_over_400_lines(folder):
    long = {str(p.relative_to(REPO)): n for p in (REPO / folder).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}  # fmt: skip
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"
