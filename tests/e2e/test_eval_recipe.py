"""examples/eval/retention.sh (GPUs, real checkpoints) cannot run here; every flag it gives swift is checked."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import typing
from pathlib import Path

import pytest

from swift_lingudistill.config import shipped_config_names

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "eval" / "retention.sh"


def _commands(text: str) -> list[tuple[str, str]]:
    """(subcommand, text) of every `swift <subcommand>` call, continuation lines included."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        match = re.match(r"\s*swift (\w+)", line)
        if not match:
            continue
        end = i
        while lines[end].rstrip().endswith("\\"):
            end += 1
        out.append((match.group(1), "\n".join(lines[i : end + 1])))
    return out


def _fields(subcommand: str) -> set[str]:
    import swift.arguments as arguments

    cls = {"sft": arguments.SftArguments, "eval": arguments.EvalArguments, "export": arguments.ExportArguments}
    return {f.name for f in dataclasses.fields(cls[subcommand])}


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("subcommand", ["sft", "eval", "export"])
def test_every_flag_is_known_to_the_installed_swift(subcommand):
    commands = [text for sub, text in _commands(SCRIPT.read_text()) if sub == subcommand]
    assert commands, f"no swift {subcommand} command in {SCRIPT.name}"
    for text in commands:
        flags = set(re.findall(r"--(\w+)", text))
        assert flags, text
        assert not flags - _fields(subcommand), f"swift {subcommand} does not know {flags - _fields(subcommand)}"


def test_eval_backend_and_plugin_config_are_valid():
    from swift.arguments import EvalArguments

    text = SCRIPT.read_text()
    allowed = typing.get_args(EvalArguments.__dataclass_fields__["eval_backend"].type)
    assert set(re.findall(r"--eval_backend (\w+)", text)) <= set(allowed)
    configs = re.findall(r"LINGUDISTILL_CONFIG=(\S+)", text)
    assert configs and set(configs) <= set(shipped_config_names())  # names: the recipe runs from any folder
    assert "cd " not in text and "plugin_configs/" not in text
    assert "--loss_type lingudistill" in text and '--external_plugins "$PLUGIN"' in text
