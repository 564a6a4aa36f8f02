"""Train the issue's goal models with `dlspec train` (dlspec.train.session.train) and check the goals:

    digits CNN       specs/digits_cnn.dls      test accuracy >= 0.97, wall time < 3 min on 2 CPU cores
    iris MLP         specs/iris_mlp.dls        test accuracy >= 0.95
    sunspots GRU     specs/sunspots_gru.dls    test MAE below the persistence (last value) forecast's
    sequence LSTM    specs/sequence_lstm.dls   test accuracy >= 0.95 on builtin("sequence")
    U-Net            specs/unet.dls            test Dice >= 0.9 on builtin("segmentation")

Each model is trained exactly as `dlspec train SPEC --out DIR` would (the spec's recipe, its seed,
early stopping, checkpoints, logs); wall time is the whole `train()` call: compiling the spec,
loading the data, every epoch with its evaluation and checkpoint, the curves and the test
evaluation.

The persistence forecast predicts the next year's sunspot number as this year's: on the same test
windows, prediction = x[:, -1, 0] (the last input step). Inputs and targets are standardized with
the same train-split mean and std, so both MAEs are first computed in standardized units (the
units of dlspec's `mae` metric) and also reported in sunspot numbers (× std).

Run from the repository root:  python bench/train_goals.py [--only digits,iris] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlspec.train.session import train  # noqa: E402

torch.set_num_threads(2)

GOALS = [
    # key, spec, metric, goal, higher is better
    ("digits", "specs/digits_cnn.dls", "accuracy", 0.97),
    ("iris", "specs/iris_mlp.dls", "accuracy", 0.95),
    ("sunspots", "specs/sunspots_gru.dls", "mae", None),  # goal: below persistence
    ("sequence", "specs/sequence_lstm.dls", "accuracy", 0.95),
    ("unet", "specs/unet.dls", "dice", 0.90),
]


def persistence_mae(spec: Path) -> tuple[float, float]:
    """(MAE in standardized units, std) of the last-value forecast on the test windows."""
    from dlspec import compile_file
    from dlspec.data import load_data
    from dlspec.train.session import pick_recipe

    cfg = pick_recipe(compile_file(spec), None, spec)
    bundle = load_data(cfg.data, cfg.seed, spec.parent)
    x, y = bundle.test.x[0], bundle.test.y
    assert x.ndim == 3 and x.shape[2] == 1 and y.shape == (len(x), 1), (x.shape, y.shape)
    pred = x[:, -1, 0]
    return float(np.mean(np.abs(pred.astype(np.float64) - y[:, 0].astype(np.float64)))), float(bundle.normalization["std"])


def run_one(key: str, spec: str, root: Path) -> dict:
    lines: list[str] = []
    t0 = time.perf_counter()
    out = train(ROOT / spec, out=root / key, progress=False, echo=lines.append)
    wall = time.perf_counter() - t0
    recs = [json.loads(s) for s in (out.run / "metrics.jsonl").read_text().splitlines() if s.strip()]
    return {"key": key, "spec": spec, "test": out.test, "wall_s": wall, "epochs_run": out.epochs_run,
            "stopped_early": out.stopped_early, "best": out.best, "epoch_s": [r["time"] for r in recs],
            "run": str(out.run)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(g[0] for g in GOALS))
    ap.add_argument("--keep", type=Path, help="keep the run folders under this folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    want = set(args.only.split(",")) if args.only else {g[0] for g in GOALS}
    root = args.keep or Path(tempfile.mkdtemp(prefix="dlspec-goals-"))
    root.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    results = []
    for key, spec, metric, goal in GOALS:
        if key not in want:
            continue
        r = run_one(key, spec, root)
        value = r["test"][metric]
        r["metric"], r["value"] = metric, value
        if key == "sunspots":
            p, std = persistence_mae(ROOT / spec)
            r["persistence_mae"], r["std"] = p, std
            r["goal"] = f"< persistence {p:.4f}"
            r["met"] = value < p
        else:
            r["goal"] = f">= {goal}"
            r["met"] = value >= goal
        if key == "digits":
            r["met_time"] = r["wall_s"] < 180
        results.append(r)
        print(f"{key}: test {metric} {value:.4f} ({r['goal']}), {r['epochs_run']} epochs, {r['wall_s']:.1f} s", flush=True)
    load1 = os.getloadavg()
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "load_avg": [load0, load1],
                          "results": results}, indent=1, default=str))
        return
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; run folders under {root}\n")
    print("| Model (spec) | test metric | goal | met | epochs run (early stop) | wall time | median epoch |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        extra = ""
        if r["key"] == "sunspots":
            extra = (f" (= {r['value'] * r['std']:.2f} sunspots; persistence {r['persistence_mae']:.4f}"
                     f" = {r['persistence_mae'] * r['std']:.2f} sunspots; ratio {r['value'] / r['persistence_mae']:.3f})")
        goal = r["goal"] + (" and < 180 s" if r["key"] == "digits" else "")
        met = r["met"] and r.get("met_time", True)
        others = ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items() if k not in (r["metric"], "loss"))
        print(f"| {r['key']} (`{r['spec']}`) | {r['metric']} {r['value']:.4f}{extra}{'; ' + others if others else ''} | "
              f"{goal} | {'yes' if met else 'NO'} | {r['epochs_run']}{' (yes)' if r['stopped_early'] else ''} | "
              f"{r['wall_s']:.1f} s | {float(np.median(r['epoch_s'])):.2f} s |")


if __name__ == "__main__":
    main()
