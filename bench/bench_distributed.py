"""Data-parallel training throughput: `dlspec train --nproc N` for N = 1 and 2 on this machine.

Model and data: the digits CNN (`specs/digits_cnn.dls`) on its recipe's split of
`builtin("digits")` (1,257 training images 8×8), the recipe's global batch of 64 (`--batch`).

Each round runs `dlspec train specs/digits_cnn.dls --epochs E --nproc N --quiet` as a fresh
process for every N (order alternating between rounds) and reads the run's `metrics.jsonl`: each
epoch's `time` covers its training pass and its validation pass. Reported per N:

* epoch throughput: training examples per second of epoch time (median over the epochs after the
  first of every round — the first pays for lazy initialization), and the best epoch;
* whole command: wall time of the process, start-up, launch and rendezvous included.

With N = 1 the trainer runs in the launching process with PyTorch's default threads (one per
core); with N >= 2 every worker gets cores ÷ N threads (OMP_NUM_THREADS), as torchrun does. So
that the comparison is not only one of threading, N = 1 also runs with one thread (`1x1t`).
Early stopping is off (`--epochs` runs them all: the recipe's patience is not reached in 4 epochs).

Run from the repository root:  python bench/bench_distributed.py [--rounds 3] [--epochs 4] [--nproc 1 1x1t 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_cnn.dls"


def train_examples(batch: int) -> int:
    sys.path.insert(0, str(ROOT))
    from dlspec.data import load_data
    from dlspec.program import compile_file
    from dlspec.train.session import pick_recipe

    cfg = pick_recipe(compile_file(SPEC), None, SPEC)
    return len(load_data(cfg.data, cfg.seed, SPEC.parent).train)


def one_run(config: str, epochs: int, batch: int, folder: Path) -> tuple[float, list[float]]:
    """`config`: a process count, or `1x1t` for one process with one thread."""
    nproc = int(config.split("x")[0])
    run = folder / f"n{config}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if config.endswith("1t"):
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "dlspec.cli", "train", str(SPEC), "--epochs", str(epochs), "--batch", str(batch),
           "--nproc", str(nproc), "--out", str(run), "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=folder)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    times = [json.loads(line)["time"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return wall, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--nproc", nargs="+", default=["1", "1x1t", "2"],
                    help="configurations: a process count, or 1x1t (one process, one thread)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    args = ap.parse_args()
    n_train = train_examples(args.batch)
    walls: dict[str, list[float]] = {n: [] for n in args.nproc}
    epochs: dict[str, list[float]] = {n: [] for n in args.nproc}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for rnd in range(args.rounds):
            order = args.nproc if rnd % 2 == 0 else list(reversed(args.nproc))
            for n in order:
                wall, times = one_run(n, args.epochs, args.batch, Path(tmp))
                walls[n].append(wall)
                epochs[n].extend(times[1:])
    result = {"machine_cores": os.cpu_count(), "load_average": os.getloadavg(), "train_examples": n_train,
              "batch": args.batch, "epochs": args.epochs, "rounds": args.rounds, "by_nproc": {}}
    base = None
    for n in args.nproc:
        med = statistics.median(epochs[n])
        row = {"examples_per_s": n_train / med, "best_examples_per_s": n_train / min(epochs[n]),
               "median_epoch_s": med, "median_wall_s": statistics.median(walls[n])}
        base = base or row["examples_per_s"]
        row["speedup_vs_first"] = row["examples_per_s"] / base
        result["by_nproc"][n] = row
    for n, row in result["by_nproc"].items():
        print(f"--nproc {n}: {row['examples_per_s']:.0f} examples/s (best epoch {row['best_examples_per_s']:.0f}), "
              f"median epoch {row['median_epoch_s']:.3f} s, whole command {row['median_wall_s']:.1f} s, "
              f"× {row['speedup_vs_first']:.2f}")
    print(f"load average during the run: {', '.join(f'{v:.1f}' for v in result['load_average'])}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
