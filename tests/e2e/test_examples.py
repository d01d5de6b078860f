"""Every example and every README command a user copies: shell syntax, the plugin configs they name load (shipped
names included), swift flags exist, nothing points into the repository (they run from any folder after
`pip install`), and every hub id resolves as written on the hub swift will use (ModelScope, or Hugging Face where
the command sets USE_HF=1): it is one of the ids swift 4.6 registers or uses itself."""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from swift_lingudistill.config import load_config, shipped_config_names
from tests.support import REPO

SCRIPTS = sorted((REPO / "examples").glob("*.sh"))
# swift YAML configs
YAMLS = sorted([*(REPO / "examples").glob("*.yaml"), *(REPO / "examples" / "multinode").glob("*.yaml")])
MULTINODE = sorted((REPO / "examples" / "multinode").glob("*.sh"))
USER_SCRIPTS = [s for s in SCRIPTS if s.name != "demo.sh"]  # demo.sh runs the repository's own demo
README = (REPO / "README.md").read_text(encoding="utf-8")
HUB_ID = r"[A-Za-z0-9][\w.-]*/[\w.-]+"


def sft_fields() -> set[str]:
    from swift.arguments import SftArguments

    return {f.name for f in dataclasses.fields(SftArguments)}


@functools.cache
def swift_hub_ids() -> dict[str, set[str]]:
    """{'ms': ids, 'hf': ids}: the model ids swift 4.6 registers, plus ModelScope ids its own source loads by name
    (a teacher such as AI-ModelScope/vicuna-7b-v1.5 is a plain LM, not a registered model)."""
    import swift
    from swift.model import MODEL_MAPPING

    ids = {"ms": set(), "hf": set()}
    for meta in MODEL_MAPPING.values():
        for group in meta.model_groups:
            for model in group.models:
                ids["ms"].add(model.ms_model_id)
                ids["hf"].add(model.hf_model_id)
    named = set()
    for path in Path(swift.__file__).parent.rglob("*.py"):
        named |= set(re.findall(rf"'({HUB_ID})'", path.read_text(encoding="utf-8", errors="ignore")))
    return {"ms": ids["ms"] | (named - ids["hf"]), "hf": ids["hf"]}  # a Hugging Face id is no ModelScope id


def swift_command(script: str) -> str:
    """The `swift sft` command of a script: from its first line to the last continued line."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r'\s*("\$SWIFT"|swift) sft', line))
    end = next(i for i in range(start, len(lines)) if not lines[i].rstrip().endswith("\\"))
    return "\n".join(lines[start : end + 1])


def named_configs(text: str) -> list[str]:
    """The plugin configs a script or command names: `LINGUDISTILL_CONFIG=X` (or `${LINGUDISTILL_CONFIG:-X}`)."""
    return re.findall(r"LINGUDISTILL_CONFIG(?:=|:-|: )\$?\{?(?:LINGUDISTILL_CONFIG:-)?([\w./-]+)", text)


def hub_ids(command: str) -> list[str]:
    """The hub ids a command downloads: --model and the teacher (LINGUDISTILL_TEACHER)."""
    found = re.findall(rf"--model (?:\\\n\s*)?({HUB_ID})", command)
    found += re.findall(rf"LINGUDISTILL_TEACHER(?:=|:-|: )\$?\{{?(?:LINGUDISTILL_TEACHER:-)?({HUB_ID})", command)
    found += re.findall(rf"^model: ({HUB_ID})", command, flags=re.M)
    return [i for i in found if not i.startswith(("output/", "my_", "demo_assets/"))]


def check_ids(command: str, where: str) -> None:
    hub = "hf" if re.search(r"USE_HF=1|use_hf: true|--use_hf true", command) else "ms"
    for model_id in hub_ids(command):
        assert model_id in swift_hub_ids()[hub], f"{where}: {model_id} is not a {hub} id swift 4.6 knows"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_script(script, monkeypatch):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/teacher")
    configs = named_configs(text)
    assert configs, f"{script.name} names no plugin config"
    for config in configs:
        load_config(config if config in shipped_config_names() else REPO / config)
    assert "--loss_type lingudistill" in text and "--external_plugins" in text
    flags = set(re.findall(r"--(\w+)", swift_command(text)))
    unknown = flags - sft_fields()
    assert not unknown, f"{script.name}: flags swift sft does not know: {unknown}"


@pytest.mark.parametrize("script", USER_SCRIPTS, ids=lambda p: p.name)
def test_user_scripts_run_from_any_folder_with_ids_swift_resolves(script):
    text = script.read_text()
    assert not re.search(r"plugin_configs/|swift_lingudistill/|cd \"\$\(dirname", text), script.name
    assert all(config in shipped_config_names() for config in named_configs(text))
    assert hub_ids(text), f"{script.name} names no model"
    check_ids(text, script.name)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_example_swift_yaml(path, monkeypatch):
    data = yaml.safe_load(path.read_text())
    env = data.pop("ENV")
    monkeypatch.setenv("LINGUDISTILL_TEACHER", env.get("LINGUDISTILL_TEACHER", "/models/teacher"))
    assert env["LINGUDISTILL_CONFIG"] in shipped_config_names()  # a name: works from any folder
    load_config(env["LINGUDISTILL_CONFIG"])
    assert data["loss_type"] == "lingudistill" and not set(data) - sft_fields()
    # the plugin file is an installed path, so it comes on the command line (the header says how; train.sh adds it)
    launcher = path.read_text() + (REPO / "examples" / "multinode" / "train.sh").read_text()
    assert "external_plugins" not in data and "-m swift_lingudistill plugin-path" in launcher
    check_ids(path.read_text(), path.name)


@pytest.mark.parametrize("script", MULTINODE, ids=lambda p: p.name)
def test_multinode_scripts_parse_and_use_swifts_launcher_variables(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = (REPO / "examples" / "multinode" / "train.sh").read_text()
    for name in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE"):
        assert f"export {name}=" in text
    assert "train.sh" in script.read_text() or script.name == "train.sh"


def readme_commands() -> list[str]:
    """Each command in the README's bash blocks (continued lines joined), skipping comments."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        text = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_readme_swift_commands_use_real_flags_shipped_configs_and_resolvable_ids(monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/teacher")
    commands = [c for c in readme_commands() if re.search(r"\bswift sft\b", c)]
    assert len(commands) >= 7
    for command in commands:
        flags = set(re.findall(r" --(\w+)", command.split("swift sft", 1)[1]))
        assert not flags - sft_fields(), f"README: flags swift sft does not know in {command!r}"
        for config in named_configs(command):
            if config not in shipped_config_names():  # a file an earlier README command writes
                assert f"--out {config}" in README, f"README: {config} is neither shipped nor written first"
                continue
            load_config(config)
        assert "plugin_configs/" not in command, command
        check_ids(command, "README")
