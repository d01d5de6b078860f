"""`swift sft` step time and peak memory: `--loss_type lingudistill` vs plain `swift sft`, same student and data.

Student: a random Qwen2.5-VL with a Qwen2-shaped language model (hidden 512, 8 layers, real 151936-token
vocabulary), built from a random Qwen2 LM that serves as the separate teacher. Data: 64 rows, each a
224x224 image (64 image tokens) and about as many text tokens, so images are about half of each sequence;
half the rows carry `distill: true`, half `distill: false` (the realistic mix, `selective.yaml`). The worst
case distils every row (`uniform.yaml`). Full fine-tuning, batch 4, float32, CPU.

Seconds per step come from swift's own `train_speed(s/it)` (elapsed / steps) at two step counts, so the
start-up and the first steps cancel out; peak memory is the peak RSS of the training process. Runs are
interleaved (plain, mix, worst, plain, ...) because the machine is shared and noisy; CPU seconds per step
(user + system, all threads) are reported too: they vary less with what else runs.

    python benchmarks/bench_step.py                 # 3 rounds x 3 configurations
    python benchmarks/bench_step.py --rounds 1 --steps 6 14
    python benchmarks/bench_step.py --bf16-teacher   # plus the mix with the teacher's weights in bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {k: "1" for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MODELSCOPE_OFFLINE")}


def build_assets(root: Path, rows: int) -> dict:
    from PIL import Image

    from swift_lingudistill.tiny import TinySize, build_qwen2_lm, build_qwen_vl, qwen_tokenizer

    size = TinySize(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1536)
    tokenizer = qwen_tokenizer()
    teacher = build_qwen2_lm(root / "teacher", size, seed=0, tokenizer=tokenizer)
    # max_pixels lets 224x224 images through unresized: (224 / 14)^2 / 4 = 64 image tokens.
    student = build_qwen_vl(
        root / "student", "qwen2_5_vl", size, lm_dir=teacher, perturb=0.3, tokenizer=tokenizer, max_pixels=224 * 224
    )
    images = root / "images"
    images.mkdir(exist_ok=True)
    data = root / "data.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            path = images / f"{i}.png"
            Image.new("RGB", (224, 224), ((i * 37) % 255, (i * 91) % 255, 128)).save(path)
            question = "<image>Describe the picture and then tell me a fact about colours. " * 2
            answer = "The picture is a flat square of one colour. Colours mix additively in light. " * 2
            row = {
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                "images": [str(path)],
                "distill": i % 2 == 0,
            }
            f.write(json.dumps(row) + "\n")
    return {"teacher": teacher, "student": student, "data": data}


def swift_cli() -> str:
    import swift

    return str(Path(swift.__file__).parent / "cli" / "sft.py")


def run(assets: dict, out: Path, steps: int, config: str | None) -> dict:
    """One training run in a child process (swift's own sft entry point); returns swift's numbers."""
    cmd = [sys.executable, swift_cli(), "--model", str(assets["student"]), "--model_type", "qwen2_5_vl"]
    cmd += ["--template", "qwen2_5_vl", "--dataset", str(assets["data"]), "--output_dir", str(out)]
    cmd += ["--tuner_type", "full", "--torch_dtype", "float32", "--fp16", "false", "--bf16", "false"]
    cmd += ["--use_hf", "true", "--check_model", "false", "--max_steps", str(steps), "--logging_steps", "1"]
    cmd += ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_length", "512"]
    cmd += ["--split_dataset_ratio", "0", "--dataloader_num_workers", "0", "--report_to", "none"]
    cmd += ["--save_strategy", "no", "--dataset_num_proc", "1"]
    env = {**os.environ, **OFFLINE, "USE_HF": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LINGUDISTILL_CONFIG", None)
    if config is not None:
        from swift_lingudistill import plugin_path

        cmd += ["--external_plugins", plugin_path(), "--loss_type", "lingudistill"]
        env["LINGUDISTILL_CONFIG"] = str(REPO / "plugin_configs" / config) if "/" not in config else config
        env["LINGUDISTILL_TEACHER"] = str(assets["teacher"])
    # A wrapper process so RUSAGE_CHILDREN's peak RSS is this run's alone.
    wrapper = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
    wrapper += "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    wrapper += "print('PEAK_KB', u.ru_maxrss, 'CPU_S', u.ru_utime + u.ru_stime); sys.exit(r)"
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"swift sft failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    tail = proc.stdout.split("PEAK_KB")[-1].split()
    peak_kb, cpu_s = int(tail[0]), float(tail[2])
    log = next(out.glob("v*-*/logging.jsonl"))
    records = [json.loads(line) for line in log.read_text().splitlines() if "train_speed(s/it)" in line]
    steps_done = [r for r in records if "loss" in r]
    last = steps_done[-1]
    elapsed = last["train_speed(s/it)"] * int(last["global_step/max_steps"].split("/")[0])
    frac = _mean(steps_done, "distill_frac")
    return {"elapsed": elapsed, "cpu": cpu_s, "peak_mb": peak_kb / 1024, "distill_frac": frac}


def _mean(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 16], help="two step counts; their difference times")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--bf16-teacher", action="store_true", help="also the mix with `teacher.dtype: bfloat16`")
    args = parser.parse_args()
    configs = {"plain swift sft": None, "lingudistill, mix": "selective.yaml", "lingudistill, worst": "uniform.yaml"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.bf16_teacher:
            import yaml

            data = yaml.safe_load((REPO / "plugin_configs" / "selective.yaml").read_text())
            data["teacher"]["dtype"] = "bfloat16"
            (root / "selective_bf16.yaml").write_text(yaml.safe_dump(data))
            configs["mix, bf16 teacher"] = str(root / "selective_bf16.yaml")
        assets = build_assets(root, args.rows)
        results: dict[str, list[dict]] = {name: [] for name in configs}
        for round_ in range(args.rounds):
            for name, config in configs.items():
                short, long_ = (run(assets, root / f"r{round_}-{n}-{config}", n, config) for n in args.steps)
                steps = args.steps[1] - args.steps[0]
                per_step = (long_["elapsed"] - short["elapsed"]) / steps
                cpu_per_step = (long_["cpu"] - short["cpu"]) / steps
                results[name].append(
                    {"s_per_step": per_step, "cpu_per_step": cpu_per_step, "peak_mb": long_["peak_mb"],
                     "frac": long_["distill_frac"]}
                )  # fmt: skip
                print(
                    f"round {round_ + 1} {name:<20} {per_step:6.3f} s/step {cpu_per_step:6.3f} CPU s/step "
                    f"peak {long_['peak_mb']:7.0f} MB"
                )
    base_t = sum(r["s_per_step"] for r in results["plain swift sft"]) / args.rounds
    base_c = sum(r["cpu_per_step"] for r in results["plain swift sft"]) / args.rounds
    base_m = max(r["peak_mb"] for r in results["plain swift sft"])
    print()
    header = f"{'configuration':<22} | {'s/step':>7} {'x plain':>7} | {'CPU s/step':>10} {'x plain':>7} | "
    header += f"{'peak MB':>8} {'x plain':>7} | distill_frac"
    print(header)
    print("-" * len(header))
    for name, rows in results.items():
        t = sum(r["s_per_step"] for r in rows) / len(rows)
        c = sum(r["cpu_per_step"] for r in rows) / len(rows)
        m = max(r["peak_mb"] for r in rows)
        frac = rows[-1]["frac"]
        print(
            f"{name:<22} | {t:>7.3f} {t / base_t:>7.2f} | {c:>10.3f} {c / base_c:>7.2f} | "
            f"{m:>8.0f} {m / base_m:>7.2f} | {'-' if frac is None else f'{frac:.2f}'}"
        )


if __name__ == "__main__":
    main()
