"""The machine's limit: ResNet-18 forward on CPU, achieved FLOP/s as a fraction of the machine's
measured float32 matmul FLOP/s, with the same threads.

    python bench/bench_machine.py [--rounds N] [--batch B] [--size S] [--quick] [--json]

One round times a large float32 `torch.matmul` (n×n by n×n, 2n³ FLOPs) and then a no-grad,
eval-mode forward of dlspec's generated ResNet-18 module (FLOPs from dlspec's own count, the
`batch` symbol bound to B; a multiply-add counts 2). The fraction is taken per round (paired)
and reported as median and IQR. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def quartiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    if len(xs) < 2:
        return {"median": xs[0], "q1": xs[0], "q3": xs[0], "min": xs[0], "max": xs[0]}
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1]}


def best_of(fn, inner: int) -> float:
    best = float("inf")
    for _ in range(inner):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--n", type=int, default=2048, help="matmul size")
    ap.add_argument("--quick", action="store_true", help="2 rounds, batch 2, 112×112")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.batch, args.size = 2, 2, 112

    import torch

    from dlspec.backends.torch import build_module
    from dlspec.program import compile_source
    from dlspec.source import SourceFile
    from dlspec.summary import summarize

    # the spec fixes 224×224 inputs; another --size compiles a copy of its text with that size
    spec = ROOT / "specs" / "resnet18.dls"
    text = spec.read_text().replace("3, 224, 224", f"3, {args.size}, {args.size}")
    graph = compile_source(SourceFile(str(spec), text)).models["ResNet18"]
    flops_per_sample = summarize(graph)["flops_per_sample"]
    flops = flops_per_sample * args.batch

    torch.manual_seed(0)
    model = build_module(graph).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    a, b = torch.randn(args.n, args.n), torch.randn(args.n, args.n)
    mm_flops = 2 * args.n ** 3

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def matmul() -> None:
        torch.matmul(a, b)

    forward(), matmul()  # warm-up
    load0 = os.getloadavg()[0]
    mm, fw, frac = [], [], []
    for _ in range(args.rounds):
        t_mm = best_of(matmul, 3)
        t_fw = best_of(forward, 3)
        mm.append(mm_flops / t_mm)
        fw.append(flops / t_fw)
        frac.append((flops / t_fw) / (mm_flops / t_mm))
    res = {
        "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch, "size": args.size,
        "resnet18_flops_per_sample": flops_per_sample, "matmul_n": args.n,
        "matmul_gflops": quartiles([v / 1e9 for v in mm]),
        "resnet18_forward_gflops": quartiles([v / 1e9 for v in fw]),
        "fraction_of_matmul": quartiles(frac),
        "rounds": args.rounds, "load_avg_start": load0, "load_avg_end": os.getloadavg()[0],
    }
    if not args.json:
        m, f, q = res["matmul_gflops"], res["resnet18_forward_gflops"], res["fraction_of_matmul"]
        print(f"torch {res['torch']}, {res['threads']} threads; ResNet-18 batch {args.batch} at {args.size}×{args.size}, "
              f"{flops_per_sample / 1e9:.2f} GFLOPs per sample (dlspec's count)")
        print(f"matmul {args.n}×{args.n} float32: {m['median']:.1f} GFLOP/s [IQR {m['q1']:.1f}–{m['q3']:.1f}]")
        print(f"ResNet-18 forward:          {f['median']:.1f} GFLOP/s [IQR {f['q1']:.1f}–{f['q3']:.1f}]")
        print(f"fraction of matmul FLOP/s:  {q['median']:.2f} [IQR {q['q1']:.2f}–{q['q3']:.2f}], {args.rounds} rounds")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
