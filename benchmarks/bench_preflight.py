"""Start-up cost of the pre-flight on a large dataset: the default row cap against a full scan.

Builds the demo's tiny Qwen2.5-VL and teacher, writes an N-row JSONL of the demo's rows (two thirds with a
56x56 or 84x56 PNG, one third text-only; the images are shared files), then times the plugin's whole
activation (config, flags, teacher configs and tokenizers, teacher weights, the student's processor, the data
scan) as `swift sft` runs it before the student loads, in a fresh process per setting:

- ``cap 1``: ``preflight.max_rows: 1`` (the scan's fixed costs: the processor load, the teacher's weights);
- ``default``: ``preflight.max_rows: 1000``;
- ``full``: ``preflight.max_rows: null`` (every row).

    python benchmarks/bench_preflight.py                     # 100000 rows, in a temporary folder
    python benchmarks/bench_preflight.py --rows 20000 --out /tmp/preflight_bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"cap 1": "1", "default": "1000", "full": "null"}


def _child(assets: Path, data: Path, max_rows: str) -> None:
    """Time one activation in this process (imports excluded) and print it as JSON."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "MODELSCOPE_OFFLINE": "1", "USE_HF": "1", "TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
    config = data.parent / f"config_{max_rows}.yaml"
    config.write_text(f"teacher:\n  model: {assets / 'original_lm'}\npreflight:\n  max_rows: {max_rows}\n")
    os.environ["LINGUDISTILL_CONFIG"] = str(config)
    from swift import SftArguments
    from swift.utils import parse_args

    from swift_lingudistill.integration.activation import activate
    from swift_lingudistill.integration.registration import register

    register()
    argv = ["--model", str(assets / "degraded_vlm"), "--model_type", "qwen2_5_vl", "--template", "qwen2_5_vl",
            "--dataset", str(data), "--output_dir", str(data.parent / "runs"), "--loss_type", "lingudistill",
            "--use_hf", "true", "--check_model", "false", "--fp16", "false", "--bf16", "false"]  # fmt: skip
    args = parse_args(SftArguments, argv)[0]
    wall, cpu = time.perf_counter(), time.process_time()
    activate(args)
    print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        _child(Path(ns.child[0]), Path(ns.child[1]), ns.child[2])
        return
    out = ns.out or Path(tempfile.mkdtemp(prefix="bench_preflight_"))
    out.mkdir(parents=True, exist_ok=True)
    from swift_lingudistill.tiny import build_demo_assets

    assets = build_demo_assets(out / "assets")
    rows = assets["dataset"].read_text().splitlines()
    data = out / f"rows_{ns.rows}.jsonl"
    with data.open("w") as handle:
        for i in range(ns.rows):
            handle.write(rows[i % len(rows)] + "\n")
    print(f"{ns.rows} rows, {data.stat().st_size / 1e6:.1f} MB: {data}")
    print(f"{'setting':<8} {'rows read':>10} {'wall s':>8} {'cpu s':>8}   (load average {os.getloadavg()[0]:.1f})")
    for name, max_rows in SETTINGS.items():
        cmd = [sys.executable, __file__, "--child", str(out / "assets"), str(data), max_rows]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        read = ns.rows if max_rows == "null" else min(int(max_rows), ns.rows)
        print(f"{name:<8} {read:>10} {result['wall_s']:>8.1f} {result['cpu_s']:>8.1f}")
    print(f"(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
