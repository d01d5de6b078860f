"""The README's config table says what the schema says, and the documents the code cites exist."""

from __future__ import annotations

import re

import yaml

from swift_lingudistill.config import LinguDistillConfig
from tests.support import REPO

HEADER = "| field | default | meaning |"


def schema_fields() -> dict[str, object]:
    """'section.field' (by alias, as YAML spells it) -> its default in YAML terms, for every leaf field."""
    defaults = LinguDistillConfig(teacher={"model": "x"}).model_dump(mode="json", by_alias=True)
    fields = {}
    for section_name, section in LinguDistillConfig.model_fields.items():
        for name, field in section.annotation.model_fields.items():
            key = field.alias or name
            fields[f"{section_name}.{key}"] = defaults[section_name][key]
    return fields


def readme_rows() -> dict[str, str]:
    """'section.field' -> the default cell, for every row of the README's config table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index(HEADER) :].split("\n\n", 1)[0].splitlines()[2:]
    rows = {}
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_every_schema_field_has_a_readme_row_and_every_row_a_field():
    fields, rows = schema_fields(), readme_rows()
    missing, unknown = sorted(set(fields) - set(rows)), sorted(set(rows) - set(fields))
    assert not missing, f"schema fields missing from the README table: {missing}"
    assert not unknown, f"README rows naming no schema field: {unknown}"


def test_readme_defaults_are_the_schema_defaults():
    """A default cell that is one literal (`image`, `1.0`, `[category]`) or `none` must equal the schema's."""
    fields, checked = schema_fields(), 0
    for name, cell in readme_rows().items():
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal:
            assert yaml.safe_load(literal.group(1)) == fields[name], f"{name}: README says {cell}"
            checked += 1
        elif cell == "none":
            assert fields[name] is None, f"{name}: README says none, the schema {fields[name]!r}"
            checked += 1
    assert checked >= 20


def test_the_documents_the_code_cites_exist():
    cited = set()
    for folder in ("swift_lingudistill", "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            cited |= set(re.findall(r"docs/[A-Z_]+\.md", path.read_text(encoding="utf-8")))
    assert {"docs/METHOD.md", "docs/ARCHITECTURE.md"} <= cited
    assert all((REPO / doc).is_file() for doc in cited), sorted(d for d in cited if not (REPO / d).is_file())


def test_the_method_note_numbers_the_invariants_the_tests_cite():
    text = (REPO / "docs" / "METHOD.md").read_text(encoding="utf-8")
    section = text[text.index("## Invariants") :]
    assert [int(n) for n in re.findall(r"^(\d)\. \*\*", section, flags=re.M)] == [1, 2, 3, 4, 5, 6]
