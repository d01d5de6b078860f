"""`swift sft` step time and peak memory: `--loss_type lingudistill` vs plain `swift sft`, same student and data.

Student: a random Qwen2.5-VL with a Qwen2-shaped language model (hidden 512, 8 layers, real 151936-token
vocabulary), built from a random Qwen2 LM that serves as the separate teacher. Full fine-tuning, float32, CPU.

- default (short rows): 64 rows, each a 224x224 image (64 image tokens) and about as many text tokens; batch 4.
  Configurations: plain; the mix (`selective.yaml`, half the rows `distill: true`); the worst case (`uniform.yaml`,
  every row distilled); `--bf16-teacher` adds the mix with the teacher's weights in bfloat16.
- `--long` (long-context rows): 16 rows of about 4100 tokens (a 672x672 image, 576 tokens, a ~1500-token prompt
  and a ~2000-token supervised answer); batch 1. Configurations: plain; the mix with a bf16 teacher (the default
  fused-linear loss); the same with `loss.fused_linear: false` (the logits path, for reference). With
  ``--worst``: plain and every row distilled with a bf16 teacher (with batch 1 the mix's measured steps may happen
  not to distil at all; this is its upper bound).

Every run trains the same batches in the same order (same seeds), so the configurations are compared step for
step. Per-step wall and CPU seconds (user + system, all threads: it varies less with what else runs) come from a
step clock (`step_clock.py`), the first `--warmup` steps left out; peak memory is the peak RSS of the training
process. Runs are interleaved (plain, A, B, plain, A, B, ...) because the machine is shared and noisy; the
ratios are per round (same-round pairs), then averaged.

    python benchmarks/bench_step.py                      # short rows, 2 rounds
    python benchmarks/bench_step.py --long               # L ~ 4100, batch 1, 2 rounds
    python benchmarks/bench_step.py --long --worst       # L ~ 4100: plain vs every row distilled
    python benchmarks/bench_step.py --bf16-teacher --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
OFFLINE = {k: "1" for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MODELSCOPE_OFFLINE")}
PLAIN = "plain swift sft"


def build_assets(root: Path, rows: int, long: bool) -> dict:
    from PIL import Image

    from swift_lingudistill.tiny import TinySize, build_qwen2_lm, build_qwen_vl, qwen_tokenizer

    size = TinySize(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1536)
    tokenizer = qwen_tokenizer()
    side = 672 if long else 224
    teacher = build_qwen2_lm(root / "teacher", size, seed=0, tokenizer=tokenizer)
    # max_pixels lets the images through unresized: (224 / 14)^2 / 4 = 64 image tokens, 672: 576.
    student = build_qwen_vl(
        root / "student", "qwen2_5_vl", size, lm_dir=teacher, perturb=0.3, tokenizer=tokenizer, max_pixels=side * side
    )
    images = root / "images"
    images.mkdir(exist_ok=True)
    data = root / "data.jsonl"
    repeat_q, repeat_a = (125, 125) if long else (2, 2)
    with open(data, "w") as f:
        for i in range(rows):
            path = images / f"{i}.png"
            Image.new("RGB", (side, side), ((i * 37) % 255, (i * 91) % 255, 128)).save(path)
            question = "<image>" + "Describe the picture and then tell me a fact about colours. " * repeat_q
            answer = "The picture is a flat square of one colour. Colours mix additively in light. " * repeat_a
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


def run(assets: dict, out: Path, args: argparse.Namespace, config: str | None) -> dict:
    """One training run in a child process (swift's own sft entry point); returns its per-step numbers."""
    batch, max_length = (1, 4608) if args.long else (4, 512)
    cmd = [sys.executable, swift_cli(), "--model", str(assets["student"]), "--model_type", "qwen2_5_vl"]
    cmd += ["--template", "qwen2_5_vl", "--dataset", str(assets["data"]), "--output_dir", str(out)]
    cmd += ["--tuner_type", "full", "--torch_dtype", "float32", "--fp16", "false", "--bf16", "false"]
    cmd += ["--use_hf", "true", "--check_model", "false", "--max_steps", str(args.steps), "--logging_steps", "1"]
    cmd += ["--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps", "1"]
    cmd += ["--max_length", str(max_length), "--split_dataset_ratio", "0", "--dataloader_num_workers", "0"]
    cmd += ["--report_to", "none", "--save_strategy", "no", "--dataset_num_proc", "1", "--seed", "42"]
    cmd += ["--data_seed", "42", "--callbacks", "step_clock", "--external_plugins", str(HERE / "step_clock.py")]
    clock = out / "steps.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE, "USE_HF": "1", "TOKENIZERS_PARALLELISM": "false", "STEP_CLOCK_LOG": str(clock)}
    env.pop("LINGUDISTILL_CONFIG", None)
    if config is not None:
        from swift_lingudistill import plugin_path

        cmd += [plugin_path(), "--loss_type", "lingudistill"]
        env["LINGUDISTILL_CONFIG"] = config
        env["LINGUDISTILL_TEACHER"] = str(assets["teacher"])
    # A wrapper process so RUSAGE_CHILDREN's peak RSS is this run's alone.
    wrapper = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
    wrapper += "u = resource.getrusage(resource.RUSAGE_CHILDREN); print('PEAK_KB', u.ru_maxrss); sys.exit(r)"
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"swift sft failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    peak_kb = int(proc.stdout.split("PEAK_KB")[-1].split()[0])
    steps = [json.loads(line) for line in clock.read_text().splitlines()][args.warmup :]
    log = next(out.glob("v*-*/logging.jsonl"))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    frac = [r["distill_frac"] for r in records if "distill_frac" in r and "loss" in r]
    return {
        "wall": statistics.mean(s["wall"] for s in steps),
        "cpu": statistics.mean(s["cpu"] for s in steps),
        "walls": [s["wall"] for s in steps],
        "peak_mb": peak_kb / 1024,
        "frac": statistics.mean(frac[args.warmup :]) if len(frac) > args.warmup else None,
    }


def configurations(root: Path, args: argparse.Namespace) -> dict[str, str | None]:
    """name -> plugin config path (None: plain swift sft)."""

    def variant(name: str, base: str, **loss_and_teacher: dict) -> str:
        data = yaml.safe_load((REPO / "plugin_configs" / base).read_text())
        for section, values in loss_and_teacher.items():
            data.setdefault(section, {}).update(values)
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    if args.long:
        configs = {
            PLAIN: None,
            "mix, bf16 teacher": variant("mix_bf16", "selective.yaml", teacher={"dtype": "bfloat16"}),
            "mix, bf16 t., logits path": variant(
                "mix_bf16_logits", "selective.yaml", teacher={"dtype": "bfloat16"}, loss={"fused_linear": False}
            ),
        }
        if args.worst:  # every row distilled: every measured step runs the teacher (the mix's upper bound)
            configs = {
                PLAIN: None,
                "worst, bf16 teacher": variant("worst_bf16", "uniform.yaml", teacher={"dtype": "bfloat16"}),
            }
        return configs
    configs = {
        PLAIN: None,
        "lingudistill, mix": str(REPO / "plugin_configs" / "selective.yaml"),
        "lingudistill, worst": str(REPO / "plugin_configs" / "uniform.yaml"),
    }
    if args.bf16_teacher:
        configs["mix, bf16 teacher"] = variant("mix_bf16", "selective.yaml", teacher={"dtype": "bfloat16"})
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="long-context rows (about 4100 tokens), batch 1")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 10 short, 6 long)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the averages")
    parser.add_argument("--rows", type=int, default=None, help="dataset rows (default 64 short, 16 long)")
    parser.add_argument("--bf16-teacher", action="store_true", help="short rows: also the mix with a bf16 teacher")
    parser.add_argument("--worst", action="store_true", help="long rows: plain vs every row distilled (bf16 teacher)")
    args = parser.parse_args()
    args.steps = args.steps or (6 if args.long else 10)
    rows = args.rows or (16 if args.long else 64)
    with open("/proc/loadavg") as f:
        print(f"load average at start: {' '.join(f.read().split()[:3])}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        configs = configurations(root, args)
        assets = build_assets(root, rows, args.long)
        results: dict[str, list[dict]] = {name: [] for name in configs}
        for round_ in range(args.rounds):
            for name, config in configs.items():
                r = run(assets, root / f"r{round_}-{len(results[name])}-{abs(hash(name))}", args, config)
                results[name].append(r)
                print(f"round {round_ + 1} {name:<26} {r['wall']:7.2f} s/step {r['cpu']:7.2f} CPU s/step "
                      f"peak {r['peak_mb']:7.0f} MB", flush=True)  # fmt: skip
    with open("/proc/loadavg") as f:
        print(f"load average at end: {' '.join(f.read().split()[:3])}")
    _table(results, args)


def _table(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    base = results[PLAIN]
    print()
    kind = "long rows (~4100 tokens), batch 1" if args.long else "short rows (~130 tokens), batch 4"
    print(f"{kind}; {args.steps - args.warmup} measured steps per run, {args.rounds} rounds; ratios: per round, "
          "averaged")  # fmt: skip
    header = f"{'configuration':<26} | {'s/step':>7} {'x plain':>7} | {'CPU s/step':>10} {'x plain':>7} | "
    header += f"{'peak MB':>8} {'x plain':>7} | distill_frac"
    print(header)
    print("-" * len(header))
    for name, rows in results.items():

        def ratio(key: str, rows: list[dict] = rows) -> float:
            return statistics.mean(r[key] / b[key] for r, b in zip(rows, base, strict=True))

        frac = "-" if rows[-1]["frac"] is None else f"{rows[-1]['frac']:.2f}"
        print(
            f"{name:<26} | {statistics.mean(r['wall'] for r in rows):>7.2f} {ratio('wall'):>7.2f} | "
            f"{statistics.mean(r['cpu'] for r in rows):>10.2f} {ratio('cpu'):>7.2f} | "
            f"{max(r['peak_mb'] for r in rows):>8.0f} {ratio('peak_mb'):>7.2f} | {frac}"
        )


if __name__ == "__main__":
    main()
