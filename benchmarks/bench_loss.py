"""Distillation loss: peak extra memory and forward+backward time, LinguDistill's chunked loss vs naive.

Both start from the same inputs as in training: the student's logits ``[T, V]`` (from swift's forward,
requiring grad) and the teacher's final hidden states ``[T, H]`` plus its lm_head ``[V, H]``. The naive
version materialises the teacher's logits and full-vocabulary float32 log-softmaxes (what peers do); the
chunked one never holds a full-size float32 ``[T, V]`` tensor.

Each measurement runs in a fresh subprocess; peak memory is the process's peak RSS minus its RSS once the
inputs exist (CPU: torch has no allocator statistics here). Ratios compare the two in the same run.

    python benchmarks/bench_loss.py                      # T = 1024, 4096, 8192; V = 151936; H = 1024; bf16
    python benchmarks/bench_loss.py --tokens 1024 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive(student: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Forward KL over the full vocabulary, written the obvious way."""
    teacher = hidden @ weight.T  # [T, V] in the model dtype
    log_s = F.log_softmax(student.float(), dim=-1)  # [T, V] float32
    log_t = F.log_softmax(teacher.float(), dim=-1)  # [T, V] float32
    return (log_t.exp() * (log_t - log_s)).sum()


def chunked(student: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    from swift_lingudistill.losses import TeacherHead, distill_sum

    total, _ = distill_sum(student, TeacherHead(hidden, weight), torch.ones(student.shape[0]))
    return total


def _measure(kind: str, tokens: int, vocab: int, hidden_size: int, dtype: str, repeats: int) -> dict:
    """Run in a child process: one kind, one size; returns peak extra MB and mean seconds."""
    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    student = torch.randn(tokens, vocab, dtype=torch_dtype).requires_grad_(True)
    hidden = torch.randn(tokens, hidden_size, dtype=torch_dtype)
    weight = torch.randn(vocab, hidden_size, dtype=torch_dtype) / hidden_size**0.5
    fn = naive if kind == "naive" else chunked
    base = _rss_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(student, hidden, weight).backward()
        times.append(time.perf_counter() - start)
        student.grad = None
    return {"peak_extra_mb": _peak_mb() - base, "seconds": sum(times) / len(times)}


def _child(kind: str, tokens: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--tokens", str(tokens), "--vocab", str(args.vocab)]
    cmd += ["--hidden", str(args.hidden), "--dtype", args.dtype, "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == -9:
        return {"error": "exit -9"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (tokens,) = args.tokens
        print(json.dumps(_measure(args.child, tokens, args.vocab, args.hidden, args.dtype, args.repeats)))
        return

    print(f"distillation loss, forward + backward: V={args.vocab}, H={args.hidden}, inputs {args.dtype}, CPU")
    one = args.tokens[0]
    print(f"(one [T, V] float32 tensor = {one * args.vocab * 4 / 2**20:.0f} MB at T={one})")
    header = f"{'T':>6} | {'naive MB':>9} {'chunked MB':>10} {'ratio':>6} | "
    header += f"{'naive s':>8} {'chunked s':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for tokens in args.tokens:
        a, b = _child("naive", tokens, args), _child("chunked", tokens, args)
        if "error" in b:
            print(f"{tokens:>6} | chunked failed: {b['error']}")
            continue
        if "error" in a:  # exit -9: the kernel killed it for memory
            reason = "OOM" if a["error"] == "exit -9" else "failed"  # the kernel killed it / see its error
            print(
                f"{tokens:>6} | {reason:>9} {b['peak_extra_mb']:>10.0f} {'-':>6} | "
                f"{'-':>8} {b['seconds']:>9.2f} {'-':>6}"
            )
            if reason == "failed":
                print(f"{'':>6} | naive: {a['error']}")
            continue
        mem_ratio = b["peak_extra_mb"] / max(a["peak_extra_mb"], 1e-9)
        time_ratio = b["seconds"] / a["seconds"]
        print(
            f"{tokens:>6} | {a['peak_extra_mb']:>9.0f} {b['peak_extra_mb']:>10.0f} {mem_ratio:>6.3f} | "
            f"{a['seconds']:>8.2f} {b['seconds']:>9.2f} {time_ratio:>6.2f}"
        )


if __name__ == "__main__":
    main()
