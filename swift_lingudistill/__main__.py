"""``python -m swift_lingudistill``: plugin-path, validate, tag-report, build-demo."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _plugin_path(_: argparse.Namespace) -> int:
    from . import plugin_path

    print(plugin_path())
    return 0


def _load(path: str):
    """The validated config, or None after printing every problem (the command then exits with 2)."""
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return None


def _validate(ns: argparse.Namespace) -> int:
    from .config import dump_config

    config = _load(ns.config)
    if config is None:
        return 2
    print(f"# {ns.config}: valid. Resolved (defaults filled in):")
    print(dump_config(config), end="")
    return 0


def _tag_report(ns: argparse.Namespace) -> int:
    from .integration.tag_report import tag_report

    config = _load(ns.config)
    if config is None:
        return 2
    report = tag_report(config, ns.dataset, num_proc=ns.num_proc)
    print(report.format(title=f"LinguDistill tagging of {', '.join(ns.dataset)} with {ns.config}"))
    return 0


def _build_demo(ns: argparse.Namespace) -> int:
    from .tiny import build_demo_assets

    paths = build_demo_assets(ns.out, family=ns.family, perturb=ns.perturb, seed=ns.seed)
    for name, path in paths.items():
        print(f"{name}={path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m swift_lingudistill`` and the ``swift-lingudistill`` script."""
    parser = argparse.ArgumentParser(prog="python -m swift_lingudistill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugin-path", help="print the absolute path to give `swift sft --external_plugins`")
    p.set_defaults(run=_plugin_path)

    p = sub.add_parser("validate", help="check a plugin config and print it resolved")
    p.add_argument("config", help="a plugin config YAML, e.g. plugin_configs/selective.yaml")
    p.set_defaults(run=_validate)

    p = sub.add_parser("tag-report", help="how each tagging rule decides a dataset, before any training")
    p.add_argument("--config", required=True, help="the plugin config YAML")
    p.add_argument("--dataset", required=True, nargs="+", help="what you give swift's --dataset (paths or ids)")
    p.add_argument("--num_proc", type=int, default=1, help="processes for loading, as swift's --dataset_num_proc")
    p.set_defaults(run=_tag_report)

    p = sub.add_parser("build-demo", help="build the demo's tiny teacher LM, degraded VLM and mixed dataset")
    p.add_argument("--out", default="demo_assets", help="output folder (default: demo_assets)")
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen2_vl"])
    p.add_argument("--perturb", type=float, default=0.5, help="noise added to the VLM's language model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_build_demo)

    ns = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return ns.run(ns)


if __name__ == "__main__":
    sys.exit(main())
