"""Compiled against eager training steps, as `dlspec train --compile` runs them.

    python bench/bench_compile.py [--steps N] [--rounds R] [--threads N] [--json]

The network: ResNet-18 (bench_torch.HandResNet18, 10 classes) at 64×64, batch 32, SGD with
momentum: forward, cross-entropy, backward, update. Two copies from the same initial weights, one
called directly (eager), one through `dlspec.jit.CompiledForward` (torch.compile, dynamic batch
size), both in this process. The warm-up (the compiled copy's first step, the compile included)
is timed apart; then rounds of N eager and N compiled steps alternate, and the ratio is that of
the median step times. The last line printed is JSON.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from dlspec import threads as T

    choice = T.prepare("auto" if a.threads == "auto" else int(a.threads))
    import torch
    from bench_torch import HandResNet18

    from dlspec.jit import CompiledForward

    T.set_torch_threads(choice.threads)
    torch.manual_seed(0)
    eager = HandResNet18(num_classes=10)
    comp = HandResNet18(num_classes=10)
    comp.load_state_dict(eager.state_dict())
    x = torch.randn(32, 3, 64, 64)
    y = torch.randint(0, 10, (32,))
    said: list[str] = []
    fwd = CompiledForward(comp, said.append)

    def stepper(model, forward):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> float:
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            opt.step()
            return time.perf_counter() - t
        return step

    e_step, c_step = stepper(eager, eager), stepper(comp, fwd)
    load = os.getloadavg()[0]
    cpu0 = time.process_time()
    warmup = c_step()
    warm_cpu = time.process_time() - cpu0
    if fwd.failed is not None:
        raise SystemExit(f"torch.compile failed: {fwd.failed}")
    e_step()
    c_step()  # one more untimed step each
    e_times: list[float] = []
    c_times: list[float] = []
    for r in range(a.rounds):
        e_times += [e_step() for _ in range(a.steps)]
        c_times += [c_step() for _ in range(a.steps)]
        print(f"round {r + 1}: eager {a.steps / sum(e_times[-a.steps:]):.2f} steps/s, "
              f"compiled {a.steps / sum(c_times[-a.steps:]):.2f} steps/s", flush=True)
    e, c = statistics.median(e_times), statistics.median(c_times)
    summary = {"network": "ResNet-18 64x64 batch 32", "threads": choice.threads, "available_cpus": choice.available,
               "loadavg_1min_at_start": round(load, 2), "warmup_s": round(warmup, 2), "warmup_cpu_s": round(warm_cpu, 2),
               "eager_steps_per_s": round(1 / e, 3), "compiled_steps_per_s": round(1 / c, 3),
               "speedup": round(e / c, 3), "steps": a.steps, "rounds": a.rounds,
               "torch": torch.__version__}
    print(f"\nResNet-18 64×64 batch 32, {choice.threads} thread(s), load average at start {load:.2f}: "
          f"eager {1 / e:.2f} steps/s, compiled {1 / c:.2f} steps/s, {e / c:.2f}× after a {warmup:.1f} s warm-up "
          f"({warm_cpu:.1f} s CPU)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
