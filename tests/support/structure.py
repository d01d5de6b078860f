"""The package's import graph, read from its source with ``ast`` (lazy imports inside functions included), its
tiers, and the text drawing kept in docs/ARCHITECTURE.md.

    python -m tests.support.structure            # print the drawing
    python -m tests.support.structure --write    # rewrite it in docs/ARCHITECTURE.md

A new module must be given a tier in ``TIERS`` (the structure test says so); an import may point to the same
tier or one below, never up.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from pathlib import Path

from tests.support import REPO

PACKAGE = "swift_lingudistill"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"
SWIFT_SUBPACKAGE = "integration"

# Top to bottom. Module names are relative to the package; PACKAGE itself is its __init__.
TIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry points", ("__main__", "plugin_entry.swift_lingudistill_plugin", PACKAGE)),
    ("swift: registration", ("integration", "integration.registration")),
    ("swift: hooks swift calls", ("integration.activation", "integration.trainer", "integration.monitor",
                                  "integration.tag_report")),
    ("swift: the pre-flight", ("integration.preflight", "integration.dataset_scan")),
    ("swift: one job each", ("integration.flag_checks", "integration.teacher_resolution",
                             "integration.teacher_loading", "integration.resume", "integration.dataset_tagging",
                             "integration.row_guard", "integration.redaction")),
    ("swift: leaves", ("integration.run_state", "integration.version")),
    ("core: one training step", ("distiller",)),
    ("core: pre-flight checks", ("preflight", "preflight.*")),
    ("core: teacher and KV sharing", ("teacher", "kv_share")),
    ("core: model families", ("families", "families.*")),
    ("core: rotary re-basing", ("rope_rebase",)),
    ("core: losses", ("losses", "loss_inputs", "divergences")),
    ("core: tagging", ("tagging",)),
    ("core: the monitor's plot", ("monitor_plot",)),
    ("core: configuration", ("config", "config.*")),
    ("demo assets (build-demo)", ("tiny", "tiny.*")),
)  # fmt: skip


def package_modules(root: Path = REPO / PACKAGE) -> dict[str, Path]:
    """Relative module name -> file, for every .py file of the package."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or PACKAGE] = path
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute dotted name an ``ImportFrom`` refers to (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    here = [PACKAGE, *([] if module == PACKAGE else module.split("."))]
    base = here if is_package else here[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Every absolute name imported anywhere in ``source`` (top level, in functions, under TYPE_CHECKING):
    ``import x.y`` gives ``x.y``, ``from x import y`` gives ``x.y`` (a module or a name inside ``x``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, is_package)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _internal(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an absolute import name lands on (the longest module prefix), or None if external."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) if parts else PACKAGE


def import_graph(root: Path = REPO / PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> package modules it imports, module -> external top-level packages it imports)."""
    modules = package_modules(root)
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = imported_names(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
        internal[module] = {t for t in (_internal(n, modules) for n in names) if t and t != module}
        external[module] = {n.split(".")[0] for n in names if n and _internal(n, modules) is None}
    return internal, external


def tier_of(module: str) -> int | None:
    for index, (_, patterns) in enumerate(TIERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return index
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import that points to a higher tier than its own."""
    return [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a]) if tier_of(b) < tier_of(a)]


def drawing() -> str:
    """The tiers top to bottom, each module with the package modules it imports; [swift] marks ms-swift users."""
    internal, external = import_graph()
    width = max(len(m) for m in internal) + len(" [swift]") + 1
    lines = [
        "Tiers run top to bottom; an arrow points to its own tier or a lower one (never up), and the graph has",
        "no cycle. [swift] marks the modules that import ms-swift: all of them sit in the swift tiers.",
    ]
    for index, (title, _) in enumerate(TIERS):
        members = sorted(m for m in internal if tier_of(m) == index)
        lines += ["", f"{title} ".ljust(width + 40, "-")]
        for module in members:
            mark = " [swift]" if "swift" in external[module] else ""
            targets = sorted(internal[module]) or ["(nothing of the package)"]
            rows = [targets[i : i + 3] for i in range(0, len(targets), 3)]  # three a line: the drawing stays narrow
            text = [", ".join(row) + ("," if i < len(rows) - 1 else "") for i, row in enumerate(rows)]
            lines.append(f"  {(module + mark).ljust(width)}-> {text[0]}")
            lines += [f"  {''.ljust(width)}   {row}" for row in text[1:]]
    return "\n".join(lines)


def architecture_block() -> str:
    return f"{BEGIN}\n```text\n{drawing()}\n```\n{END}"


def write_architecture() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    ARCHITECTURE.write_text(head + architecture_block() + tail, encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_architecture()
    else:
        print(drawing())
