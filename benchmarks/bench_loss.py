"""Training loss alone (CE + distillation): peak extra memory and forward+backward time of three implementations.

All three start from what a training step has when the student's forward reaches its output layer: the student's
final hidden states ``[T, H]`` and its output layer ``[V, H]`` (trainable: full fine-tuning), the teacher's final
hidden states ``[T, H]`` and its frozen output layer. Each computes CE on every token plus forward KL on every
token, and backward to the student's hidden states and output weight.

- ``naive``: the obvious way: both logits ``[T, V]`` in the model dtype, float32 log-softmaxes over them;
- ``logits``: the student's logits from its output layer (as the model's forward returns them), then
  LinguDistill's chunked loss on them (the teacher's logits made chunk by chunk): the path before the fused one;
- ``fused``: the fused-linear path: no ``[T, V]`` tensor on either side, in any dtype.

Each measurement runs in a fresh subprocess; peak memory is the process's peak RSS minus its RSS once the inputs
exist (CPU: torch has no allocator statistics here). Ratios compare the implementations in the same run. A
measurement predicted (linearly in T, from the sizes measured before it) not to fit in the memory available now is
not run: its memory is printed extrapolated, with a ``~``.

    python benchmarks/bench_loss.py                      # T = 1024, 4096, 8192, 16384; V = 151936; H = 1024; bf16
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

KINDS = ("naive", "logits", "fused")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def naive(hidden, weight, labels, t_hidden, t_weight) -> torch.Tensor:
    """CE + forward KL over the full vocabulary, written the obvious way."""
    logits = hidden @ weight.T  # [T, V] in the model dtype
    teacher = t_hidden @ t_weight.T  # [T, V]
    log_s = F.log_softmax(logits.float(), dim=-1)  # [T, V] float32
    log_t = F.log_softmax(teacher.float(), dim=-1)  # [T, V] float32
    return F.nll_loss(log_s, labels, reduction="sum") + (log_t.exp() * (log_t - log_s)).sum()


def _chunked(student, labels, t_hidden, t_weight) -> torch.Tensor:
    from swift_lingudistill.losses import TeacherHead, fused_loss

    n = labels.shape[0]
    rows = torch.arange(n)
    total, _, _ = fused_loss(student, labels, torch.ones(n), TeacherHead(t_hidden, t_weight), torch.ones(n), rows)
    return total


def logits_path(hidden, weight, labels, t_hidden, t_weight) -> torch.Tensor:
    return _chunked(hidden @ weight.T, labels, t_hidden, t_weight)  # the model's [T, V] logits, then the loss


def fused(hidden, weight, labels, t_hidden, t_weight) -> torch.Tensor:
    from swift_lingudistill.losses import StudentHead

    return _chunked(StudentHead(hidden, weight), labels, t_hidden, t_weight)


def _measure(kind: str, tokens: int, vocab: int, hidden_size: int, dtype: str, repeats: int) -> dict:
    """Run in a child process: one kind, one size; returns peak extra MB and mean seconds."""
    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    hidden = torch.randn(tokens, hidden_size, dtype=torch_dtype).requires_grad_(True)
    weight = (torch.randn(vocab, hidden_size) / hidden_size**0.5).to(torch_dtype).requires_grad_(True)
    labels = torch.randint(0, vocab, (tokens,))
    t_hidden = torch.randn(tokens, hidden_size, dtype=torch_dtype)
    t_weight = (torch.randn(vocab, hidden_size) / hidden_size**0.5).to(torch_dtype)
    fn = {"naive": naive, "logits": logits_path, "fused": fused}[kind]
    base = _rss_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(hidden, weight, labels, t_hidden, t_weight).backward()
        times.append(time.perf_counter() - start)
        hidden.grad = weight.grad = None
    return {"peak_extra_mb": _peak_mb() - base, "seconds": sum(times) / len(times)}


def _child(kind: str, tokens: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--tokens", str(tokens), "--vocab", str(args.vocab)]
    cmd += ["--hidden", str(args.hidden), "--dtype", args.dtype, "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == -9:
        return {"error": "killed (out of memory)"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _extrapolate(points: list[tuple[int, float]], tokens: int) -> float | None:
    """Peak extra MB at ``tokens`` from a line through the two largest sizes measured (memory grows linearly)."""
    if len(points) < 2:
        return None
    (t0, m0), (t1, m1) = points[-2], points[-1]
    return m1 + (m1 - m0) / (t1 - t0) * (tokens - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--headroom-mb", type=float, default=2048, help="memory left free for everything else")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (tokens,) = args.tokens
        print(json.dumps(_measure(args.child, tokens, args.vocab, args.hidden, args.dtype, args.repeats)))
        return

    print("training loss (CE + forward KL), forward + backward to the student's hidden states and output weight:")
    print(f"V={args.vocab}, H={args.hidden}, {args.dtype}, CPU; memory = peak RSS above the inputs, MB")
    print(f"(one [T, V] float32 tensor = {args.vocab * 4 / 2**20 * 1024:.0f} MB per 1024 tokens; ~ = extrapolated)")
    header = f"{'T':>6} | {'naive MB':>9} {'logits MB':>9} {'fused MB':>9} | {'fused/naive':>11} {'fused/logits':>12}"
    header += f" | {'naive s':>8} {'logits s':>8} {'fused s':>8} {'fused/logits':>12}"
    print(header)
    print("-" * len(header))
    measured: dict[str, list[tuple[int, float]]] = {k: [] for k in KINDS}
    for tokens in args.tokens:
        row: dict[str, dict] = {}
        for kind in KINDS:
            predicted = _extrapolate(measured[kind], tokens)
            if predicted is not None and predicted > _available_mb() - args.headroom_mb:
                row[kind] = {"extrapolated_mb": predicted}
                continue
            result = _child(kind, tokens, args)
            row[kind] = result
            if "error" not in result:
                measured[kind].append((tokens, result["peak_extra_mb"]))
        print(_format_row(tokens, row))
        for kind, result in row.items():
            if "error" in result:
                print(f"{'':>6}   {kind}: {result['error']}")


def _format_row(tokens: int, row: dict[str, dict]) -> str:
    def mem(kind: str) -> tuple[str, float | None]:
        r = row[kind]
        if "peak_extra_mb" in r:
            return f"{r['peak_extra_mb']:.0f}", r["peak_extra_mb"]
        if "extrapolated_mb" in r:
            return f"~{r['extrapolated_mb']:.0f}", r["extrapolated_mb"]
        return "failed", None

    def ratio(a: float | None, b: float | None, approx: bool) -> str:
        return "-" if a is None or b is None else f"{'~' if approx else ''}{a / max(b, 1e-9):.3f}"

    def secs(kind: str) -> tuple[str, float | None]:
        s = row[kind].get("seconds")
        return ("-", None) if s is None else (f"{s:.2f}", s)

    (n_txt, n_mb), (l_txt, l_mb), (f_txt, f_mb) = (mem(k) for k in KINDS)
    approx_n, approx_l = "extrapolated_mb" in row["naive"], "extrapolated_mb" in row["logits"]
    (n_s_txt, _), (l_s_txt, l_s), (f_s_txt, f_s) = (secs(k) for k in KINDS)
    return (
        f"{tokens:>6} | {n_txt:>9} {l_txt:>9} {f_txt:>9} | {ratio(f_mb, n_mb, approx_n):>11} "
        f"{ratio(f_mb, l_mb, approx_l):>12} | {n_s_txt:>8} {l_s_txt:>8} {f_s_txt:>8} {ratio(f_s, l_s, False):>12}"
    )


if __name__ == "__main__":
    main()
