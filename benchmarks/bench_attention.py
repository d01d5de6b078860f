"""The teacher's attention over the student's K/V: extra memory and time, dense mask vs query chunks (the default).

One teacher layer's attention call, as ``kv_share`` makes it: a row of L tokens, a prompt, an image block over
half the sequence (shared K/V: the student's) and text after it, the last quarter supervised; the compact plan
gives the teacher Lq = its own positions up to the last supervised one (about L / 2). Heads as Qwen2.5-VL-3B's
language model: 16 query heads, 2 K/V heads, head size 128; float32.

- ``dense``: the whole boolean mask [1, 1, Lq, L + Lq] at once (kept for the whole teacher forward), one SDPA call;
- ``chunked``: query chunks with one mask block each (at most ``teacher_attention.MASK_ELEMENTS`` entries) and only
  the keys each chunk can see.

Each measurement runs in a fresh subprocess; extra memory is the peak RSS above the RSS once the inputs and the
plan exist, so it counts the mask, SDPA's float bias and the output. Both paths' outputs are compared in the run.

    python benchmarks/bench_attention.py                  # L = 2048, 8192, 16384
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _inputs(seq_len: int, heads: int, kv_heads: int, dim: int):
    from swift_lingudistill.kv_share import build_plan

    positions = torch.arange(seq_len)[None]  # [1, L]
    image = (positions >= 16) & (positions < 16 + seq_len // 2)  # the image block: half the row
    answer = positions >= seq_len - seq_len // 4  # the last quarter supervised
    valid = torch.ones(1, seq_len, dtype=torch.bool)
    plan, _ = build_plan(answer, image, valid)
    n_q = plan.q_pos.shape[1]
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(1, heads, n_q, dim, generator=gen)
    student = tuple(torch.randn(1, kv_heads, seq_len, dim, generator=gen) for _ in range(2))
    own = tuple(torch.randn(1, kv_heads, n_q, dim, generator=gen) for _ in range(2))
    return plan, query, student, own


def _measure(path: str, seq_len: int, heads: int, kv_heads: int, dim: int) -> dict:
    from swift_lingudistill.teacher_attention import attend

    plan, query, student, own = _inputs(seq_len, heads, kv_heads, dim)
    base = _rss_mb()
    start = time.perf_counter()
    cpu = time.process_time()
    with torch.no_grad():
        out = attend(query, student, own, plan, dense=path == "dense")
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # A fingerprint of the output, to check that both paths agree.
    probe = out[0, :, :: max(1, out.shape[2] // 64)].double()
    return {"extra_mb": peak - base, "seconds": seconds, "cpu_s": cpu_s, "lq": plan.q_pos.shape[1],
            "probe": probe.flatten().tolist()}  # fmt: skip


def _child(path: str, seq_len: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--seq-len", str(seq_len), "--heads", str(args.heads)]
    cmd += ["--kv-heads", str(args.kv_heads), "--dim", str(args.dim)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{path} at L={seq_len} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--child", choices=["dense", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (seq_len,) = args.seq_len
        print(json.dumps(_measure(args.child, seq_len, args.heads, args.kv_heads, args.dim)))
        return
    print(f"teacher attention, one layer call: {args.heads} heads, {args.kv_heads} K/V heads, head size {args.dim}, "
          "float32, CPU; extra MB = peak RSS above the inputs")  # fmt: skip
    header = f"{'L':>6} {'Lq':>6} | {'dense MB':>9} {'chunked MB':>10} {'ratio':>6} | "
    header += f"{'dense s':>8} {'chunked s':>9} {'ratio':>6} | {'dense CPU s':>11} {'chunked CPU s':>13} | max diff"
    print(header)
    print("-" * len(header))
    for seq_len in args.seq_len:
        dense, chunked = _child("dense", seq_len, args), _child("chunked", seq_len, args)
        diff = max(abs(a - b) for a, b in zip(dense["probe"], chunked["probe"], strict=True))
        print(
            f"{seq_len:>6} {dense['lq']:>6} | {dense['extra_mb']:>9.0f} {chunked['extra_mb']:>10.0f} "
            f"{chunked['extra_mb'] / max(dense['extra_mb'], 1e-9):>6.3f} | {dense['seconds']:>8.2f} "
            f"{chunked['seconds']:>9.2f} {chunked['seconds'] / dense['seconds']:>6.2f} | {dense['cpu_s']:>11.2f} "
            f"{chunked['cpu_s']:>13.2f} | {diff:.1e}"
        )


if __name__ == "__main__":
    main()
