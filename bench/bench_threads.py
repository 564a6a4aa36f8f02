"""Training throughput at 1 thread, at all the CPUs and at `--threads auto`, on a quiet machine and
with CPU-bound neighbours this benchmark starts itself.

    python bench/bench_threads.py [--rounds N] [--neighbours K] [--steps S] [--json]

The step: the digits CNN of specs/digits_cnn.dls (bench_torch.HandDigitsCNN), batch 64 of 1×8×8
images, cross-entropy, SGD: forward, backward, update. Each setting runs in a fresh process that
sets its threads the way `dlspec train --threads ...` does (`dlspec.threads.prepare` before torch
starts; for auto, the same interleaved measurement of 1 and all threads that `tune_torch_trainer`
runs on the first batch, its time reported apart), then times S steps.

A round runs the three settings in turn, quiet, then again with K neighbours (bounded busy loops
in their own processes, each ending by itself after a time limit, killed when the round ends).
Figures are medians over rounds; the ratios compare settings measured in the same round. The
last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64

_NEIGHBOUR = "import time\nend = time.time() + {limit}\nx = 0\nwhile time.time() < end:\n    x += 1\n"


def child(setting: str, steps: int) -> None:
    sys.path.insert(0, str(ROOT))
    from dlspec import threads as T

    avail = T.available_cpus()[0]
    choice = T.prepare("auto" if setting in ("auto", "all") else int(setting))
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_torch import HandDigitsCNN  # specs/digits_cnn.dls, layer for layer

    torch.manual_seed(0)
    model = HandDigitsCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(BATCH, 1, 8, 8)
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    measure_s = 0.0
    n = choice.threads
    if setting == "auto" and avail > 1:
        t = time.perf_counter()
        rates = T.measure_torch(step, sorted({1, avail}))
        measure_s = time.perf_counter() - t
        n = max(rates, key=lambda k: rates[k])
    T.set_torch_threads(n)
    for _ in range(5):  # warm-up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t
    print(json.dumps({"setting": setting, "threads": n, "examples_per_s": steps * BATCH / dt,
                      "measure_s": measure_s}))


def run_child(setting: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, __file__, "--child", setting, "--steps", str(steps)], capture_output=True,
                       text=True, timeout=600, env=env)
    if r.returncode != 0:
        raise SystemExit(f"child {setting} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--neighbours", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.steps)
        return
    sys.path.insert(0, str(ROOT))
    from dlspec.threads import available_cpus

    avail = available_cpus()[0]
    settings = ["1", "all", "auto"]
    results: dict[str, dict[str, list]] = {c: {s: [] for s in settings} for c in ("quiet", "busy")}
    chosen: dict[str, list[int]] = {"quiet": [], "busy": []}
    load = os.getloadavg()[0]
    for r in range(a.rounds):
        for cond in ("quiet", "busy"):
            hood = []
            if cond == "busy":
                hood = [subprocess.Popen([sys.executable, "-c", _NEIGHBOUR.format(limit=600)])
                        for _ in range(a.neighbours)]
                time.sleep(0.5)
            try:
                for s in settings:
                    res = run_child(s, a.steps)
                    results[cond][s].append(res["examples_per_s"])
                    if s == "auto":
                        chosen[cond].append(res["threads"])
            finally:
                for p in hood:
                    p.kill()
                    p.wait()
        print(f"round {r + 1}: " + "; ".join(
            f"{c}: " + ", ".join(f"{s} {results[c][s][-1]:,.0f}" for s in settings) for c in results), flush=True)
    med = {c: {s: statistics.median(v) for s, v in d.items()} for c, d in results.items()}
    summary = {"available_cpus": avail, "neighbours": a.neighbours, "rounds": a.rounds, "steps": a.steps,
               "loadavg_1min_at_start": round(load, 2), "examples_per_s": med, "auto_chose": chosen}
    for c in med:
        best = max(med[c]["1"], med[c]["all"])
        summary[f"{c}_auto_vs_best"] = round(med[c]["auto"] / best, 3)
        summary[f"{c}_auto_vs_all"] = round(med[c]["auto"] / med[c]["all"], 3)
    print(f"\navailable CPUs {avail}; load average at start {load:.2f}; examples/s (median of {a.rounds}):")
    for c in med:
        print(f"  {c:5s}  1 thread {med[c]['1']:8,.0f}   all ({avail}) {med[c]['all']:8,.0f}   auto {med[c]['auto']:8,.0f}"
              f"   auto/best {summary[f'{c}_auto_vs_best']:.3f}  auto/all {summary[f'{c}_auto_vs_all']:.3f}"
              f"   auto chose {chosen[c]}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
