"""`python -m swift_lingudistill`: plugin-path, validate, and tag-report on a dataset with known answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from swift_lingudistill import plugin_path
from swift_lingudistill.__main__ import main
from tests.support import REPO
from tests.support.swift_runs import OFFLINE


def test_plugin_path_is_the_thin_plugin_file(capsys):
    assert main(["plugin-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_absolute() and path == Path(plugin_path()) and path.name == "swift_plugin.py"
    assert "register()" in path.read_text()


def test_validate_prints_the_resolved_config(capsys, monkeypatch):
    monkeypatch.setenv("LINGUDISTILL_TEACHER", "/models/t")
    assert main(["validate", str(REPO / "plugin_configs" / "selective.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "model: /models/t" in out and "divergence: forward_kl" in out


def test_validate_rejects_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {model: self}\nloss: {temperature: -1}\n")
    assert main(["validate", str(bad)]) == 2
    assert "loss.temperature = -1" in capsys.readouterr().err


def _dataset(tmp_path: Path) -> Path:
    img = tmp_path / "a.png"
    Image.new("RGB", (56, 56), (10, 20, 30)).save(img)

    def row(question: str, image: bool = True, **extra) -> dict:
        messages = [{"role": "user", "content": ("<image>" if image else "") + question}]
        messages.append({"role": "assistant", "content": "ok"})
        return {"messages": messages, **({"images": [str(img)]} if image else {}), **extra}

    rows = [
        row("Describe this.", distill=True),  # explicit
        row("How many dogs?", distill=0.25),  # explicit beats the counting pattern
        row("What is this?", category="OCR"),  # category -> 0
        row("How many cats?", category="Captioning"),  # category beats the pattern -> 1
        row("What is this?", category="weird"),  # unknown category -> default
        row("Tell me a joke.", image=False),  # no image
        row("How many legs does a spider have?", image=False),  # no image beats the pattern
        row("How many birds are there?"),  # vision:counting
        row("Count the apples."),  # vision:counting
        row("Read the text on the sign."),  # vision:reading_text
        row("Describe the scene."),  # default
    ]
    path = tmp_path / "known.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_tag_report_counts_a_known_dataset(tmp_path):
    data = _dataset(tmp_path)
    env = {**os.environ, **OFFLINE, "LINGUDISTILL_TEACHER": "/unused"}
    cmd = [sys.executable, "-m", "swift_lingudistill", "tag-report", "--config"]
    cmd += [str(REPO / "plugin_configs" / "selective.yaml"), "--dataset", str(data)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    expected = {
        "explicit": (2, "0.625"),
        "category:ocr": (1, "0.000"),
        "category:captioning": (1, "1.000"),
        "unknown_category": (1, "1.000"),
        "no_image": (2, "1.000"),
        "vision:counting": (2, "0.000"),
        "vision:reading_text": (1, "0.000"),
        "default": (1, "1.000"),
    }
    for rule, (rows, weight) in expected.items():
        assert lines[rule][1] == str(rows) and lines[rule][3] == weight, proc.stdout
    assert "distilled (w > 0): 7 of 11 rows (63.6%)" in proc.stdout
    assert "weird" in proc.stdout  # the unknown category is named
