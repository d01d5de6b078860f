"""The world the bad-input table runs in: the demo's models, broken copies of them, images, finished runs,
and one runner that sends a case through the CLI's ``main()`` or swift's real ``sft_main`` in this process.

"Before the student loaded" is proven by a sentinel student: the demo VLM's files with every weight saved at
shape [1], so loading it fails with transformers' size-mismatch error. A case that stops with its own
message on the sentinel stopped before the student's weights were read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.support.swift_runs import CPU_FLAGS

STUDENT_LOADED = "ignore_mismatched_sizes"  # what loading the sentinel student raises
SECRET = "/private/tok_3f9a7c1e"  # a value only ${LD_SECRET_TEACHER} holds

TEXT_ROW = {"messages": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."}]}
IMAGE_ROW = {
    "messages": [{"role": "user", "content": "<image>Describe it."}, {"role": "assistant", "content": "A shape."}],
    "images": ["{img}"],
}
LONG_ROW = {
    "messages": [{"role": "user", "content": "Tell me about it. " * 30}, {"role": "assistant", "content": "Fine."}],
    "distill": True,
}

BASE_CONFIG = """teacher:
  model: {teacher}
loss:
  lambda: 1.0
"""


@dataclass(frozen=True)
class Case:
    """One bad input: how it is given, what must be said, how the command ends, and when."""

    id: str
    entry: str  # validate | tag-report | sft
    expect: tuple[str, ...]  # fragments of the message (or of the run's output)
    code: int  # the command's exit status (sft: swift's CLI turns an exception into 1)
    config: str | None = BASE_CONFIG  # YAML text; placeholders {teacher} {secret_var} ...
    rows: tuple | None = (TEXT_ROW, IMAGE_ROW)  # dicts, or raw JSONL lines (str)
    args: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    student: str = "sentinel"  # sentinel | real
    before_student: bool = True  # False: the plugin cannot know it before the student loads
    absent: tuple[str, ...] = ()  # fragments that must not appear in the output or the run's files


@dataclass
class Outcome:
    code: int
    output: str  # the message, the captured stdout/stderr and swift's log


def build_world(root: Path, demo: dict) -> dict[str, Path]:
    """Every checkpoint, image and earlier run the cases refer to, built from the demo's assets."""
    world = {"student": Path(demo["student"]), "teacher": Path(demo["teacher"]), "root": root}
    world["sentinel"] = _linked_copy(demo["student"], root / "sentinel", skip="model.safetensors")
    with safe_open(str(Path(demo["student"]) / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    save_file({k: torch.zeros(1) for k in keys}, str(world["sentinel"] / "model.safetensors"))
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        folder = _linked_copy(demo["teacher"], root / f"{name}_teacher", skip="model.safetensors")
        weights = load_file(str(Path(demo["teacher"]) / "model.safetensors"))
        weights["model.layers.0.mlp.down_proj.weight"][0, 0] = value
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        world[f"{name}_teacher"] = folder
    config = json.loads((Path(demo["teacher"]) / "config.json").read_text())
    variants = {
        "remote_teacher": ("config.json", {**config, "auto_map": {"AutoConfig": "evil.EvilConfig"}}),
        "unknown_type_teacher": ("config.json", {**config, "model_type": "mystery_lm"}),
        "other_lineage_teacher": ("config.json", {**config, "rms_norm_eps": 1e-3}),
    }
    for name, (file, data) in variants.items():
        folder = _linked_copy(demo["teacher"], root / name, skip=file)
        (folder / file).write_text(json.dumps(data))
        world[name] = folder
    tokenizer = json.loads((Path(demo["teacher"]) / "tokenizer_config.json").read_text())
    folder = _linked_copy(demo["teacher"], root / "remote_tokenizer_teacher", skip="tokenizer_config.json")
    remote_tokenizer = {**tokenizer, "auto_map": {"AutoTokenizer": ["evil.T", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(remote_tokenizer))
    world["remote_tokenizer_teacher"] = folder
    world["marker"] = root / "remote_code_ran"
    evil = f"open({str(world['marker'])!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n"
    for name in ("remote_teacher", "remote_tokenizer_teacher"):
        (world[name] / "evil.py").write_text(evil + "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    world["no_config_teacher"] = root / "no_config_teacher"
    world["no_config_teacher"].mkdir()
    (world["no_config_teacher"] / "model.safetensors").write_bytes(b"")
    _images(root, world)
    world["runs"] = root / "runs"
    world["finished"] = _finished_run(world["runs"] / "v0-20260101-000000", world["teacher"])
    world["resumable"] = _finished_run(root / "resumable_runs" / "v0-20260101-000000", "${LD_RESUME_TEACHER}")
    (root / "configs").mkdir()
    (root / "configs" / "a.yaml").write_text(BASE_CONFIG.format(teacher="self"))
    return world


def _linked_copy(source: str | Path, target: Path, skip: str) -> Path:
    target.mkdir(parents=True)
    for item in Path(source).iterdir():
        if item.name != skip:
            (target / item.name).symlink_to(item)
    return target


def _images(root: Path, world: dict) -> None:
    folder = root / "images"
    folder.mkdir()
    good = folder / "good.png"
    Image.new("RGB", (56, 56), (200, 30, 30)).save(good)
    (folder / "corrupt.png").write_bytes(b"this is not an image at all" * 10)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:60])
    world.update(img=good, corrupt=folder / "corrupt.png", truncated=folder / "truncated.png")
    world["missing"] = folder / "missing.png"


def _finished_run(folder: Path, teacher: str | Path) -> Path:
    """What a finished LinguDistill run leaves: its config, args, log and a checkpoint carrying the config."""
    checkpoint = folder / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    text = "# LinguDistill config resolved from an earlier run\n" + BASE_CONFIG.format(teacher=teacher)
    for target in (folder, checkpoint):
        (target / "lingudistill_config.yaml").write_text(text)
    (folder / "args.json").write_text(json.dumps({"loss_type": "lingudistill"}))
    (folder / "logging.jsonl").write_text(json.dumps({"loss": 1.0}) + "\n")
    return folder


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fill(text: str, world: dict) -> str:
    """Replace ``{name}`` placeholders by the world's paths (str.format would trip over JSON braces)."""
    for key, value in world.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def write_case_files(case: Case, world: dict, folder: Path) -> tuple[Path | None, Path | None]:
    """The case's config and dataset files (either may be None when the case gives none)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = None
    if case.config is not None:
        config = folder / "config.yaml"
        config.write_text(fill(case.config, world))
    data = None
    if case.rows is not None:
        data = folder / "data.jsonl"
        lines = [r if isinstance(r, str) else json.dumps(r) for r in case.rows]
        data.write_text(fill("".join(line + "\n" for line in lines), world) if lines else "")
    return config, data


def sft_argv(world: dict, case: Case, data: Path | None) -> list[str]:
    student = world["student"] if case.student == "real" else world["sentinel"]
    argv = ["--model", str(student), "--model_type", "qwen2_5_vl", "--template", "qwen2_5_vl"]
    argv += ["--dataset", str(data), "--output_dir", str(world["runs"]), "--max_steps", "1"]
    argv += ["--per_device_train_batch_size", "2", "--tuner_type", "full", *CPU_FLAGS]
    return argv + [fill(a, world) for a in case.args]


def run_case(case: Case, world: dict, folder: Path, capfd, monkeypatch) -> Outcome:
    """Send the case through its entry point in this process; the message is whatever the user would read."""
    from swift_lingudistill.__main__ import main

    config, data = write_case_files(case, world, folder)
    monkeypatch.delenv("LINGUDISTILL_CONFIG", raising=False)
    monkeypatch.setenv("LINGUDISTILL_TEACHER", str(world["teacher"]))
    for key, value in case.env.items():
        monkeypatch.setenv(key, fill(value, world))
    capfd.readouterr()
    log = io.StringIO()  # swift's log handler writes to the stream it found at import, outside capfd
    handler = logging.StreamHandler(log)
    swift_logger = logging.getLogger("swift")
    swift_logger.addHandler(handler)
    message, code = "", 0
    if case.entry == "validate":
        code = main(["validate", str(config)])
    elif case.entry == "tag-report":
        code = main(
            ["tag-report", "--config", str(config), "--dataset", str(data), *(fill(a, world) for a in case.args)]
        )
    else:
        from swift import sft_main

        if config is not None and "LINGUDISTILL_CONFIG" not in case.env:
            monkeypatch.setenv("LINGUDISTILL_CONFIG", str(config))
        environ = dict(os.environ)
        try:
            sft_main(sft_argv(world, case, data))
        except Exception as e:  # what `swift sft` prints before exiting with status 1
            message, code = f"{type(e).__name__}: {e}", 1
        finally:
            swift_logger.removeHandler(handler)
            # swift's argument parsing exports settings into os.environ (TENSORBOARD_LOGGING_DIR = this case's
            # folder, ...); left there, every later `swift sft` subprocess of this worker would inherit them.
            for key in set(os.environ) - set(environ):
                del os.environ[key]
            os.environ.update(environ)
    captured = capfd.readouterr()
    return Outcome(code, "\n".join((message, log.getvalue(), captured.out, captured.err)))


def new_run_folders(world: dict, before: set[str]) -> list[Path]:
    return [p for p in world["runs"].iterdir() if p.name not in before]
