"""Every example is checked: shell syntax, the plugin configs it names exist and load, swift flags exist."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest
import yaml

from swift_lingudistill.config import load_config
from tests.support import REPO

SCRIPTS = sorted((REPO / "examples").glob("*.sh"))
# swift YAML configs
YAMLS = sorted([*(REPO / "examples").glob("*.yaml"), *(REPO / "examples" / "multinode").glob("*.yaml")])
MULTINODE = sorted((REPO / "examples" / "multinode").glob("*.sh"))


def sft_fields() -> set[str]:
    from swift.arguments import SftArguments

    return {f.name for f in dataclasses.fields(SftArguments)}


def swift_command(script: str) -> str:
    """The `swift sft` command of a script: from its first line to the last continued line."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r'\s*("\$SWIFT"|swift) sft', line))
    end = next(i for i in range(start, len(lines)) if not lines[i].rstrip().endswith("\\"))
    return "\n".join(lines[start : end + 1])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_script(script, monkeypatch):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/teacher")
    configs = re.findall(r"plugin_configs/[\w.]+\.yaml", text)
    assert configs, f"{script.name} names no plugin config"
    for config in configs:
        load_config(REPO / config)
    assert "--loss_type lingudistill" in text and "--external_plugins" in text
    flags = set(re.findall(r"--(\w+)", swift_command(text)))
    unknown = flags - sft_fields()
    assert not unknown, f"{script.name}: flags swift sft does not know: {unknown}"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_example_swift_yaml(path, monkeypatch):
    data = yaml.safe_load(path.read_text())
    env = data.pop("ENV")
    monkeypatch.setenv("LINGUDISTILL_TEACHER", env.get("LINGUDISTILL_TEACHER", "/models/teacher"))
    load_config(REPO / env["LINGUDISTILL_CONFIG"])
    assert data["loss_type"] == "lingudistill" and (REPO / data["external_plugins"]).exists()
    assert not set(data) - sft_fields()


@pytest.mark.parametrize("script", MULTINODE, ids=lambda p: p.name)
def test_multinode_scripts_parse_and_use_swifts_launcher_variables(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = (REPO / "examples" / "multinode" / "train.sh").read_text()
    for name in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE"):
        assert f"export {name}=" in text
    assert "train.sh" in script.read_text() or script.name == "train.sh"
