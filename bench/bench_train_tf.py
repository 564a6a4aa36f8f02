"""TensorFlow training benchmark: the loop of `dlspec train --backend tf` against a hand-written
`model.fit` on the same Keras architecture.

Model and data: the digits CNN (`specs/digits_cnn.dls`) on its recipe's split of
`builtin("digits")` (1,257 training images 8×8), batch 64 (the recipe's; `--batch` to change).

A: dlspec's trainer (`dlspec.train.tf_loop.Trainer.train_epoch`): PyTorch's Adam rule with L2
   weight decay, label-smoothed cross-entropy, the recipe's schedule, a NaN check per step, and the
   training metrics (accuracy, macro F1) from the steps' outputs — everything an epoch of
   `dlspec train --backend tf` does except the val evaluation and the files.
B: the same Keras model (`dlspec.backends.keras.build_model`, same starting weights) compiled with
   `keras.optimizers.Adam(2e-3)`, `CategoricalCrossentropy(from_logits=True, label_smoothing=0.05)`
   and `metrics=["accuracy"]`, trained with `model.fit(x, y, batch_size=64, epochs=1,
   shuffle=True, verbose=0)` — what a person writes by hand.

Timing: one warm-up epoch each (tracing), then `--rounds` rounds; each round times `--epochs`
epochs of A and of B back to back, the order alternating every round. Reported: training
examples per second of each (median over rounds, and minimum epoch time), and A/B speed three
ways: ratio of the medians, ratio of the best epochs, and the median of the per-round paired
ratios (least disturbed by other processes). Goal: A/B >= 0.95.

Run from the repository root:  python bench/bench_train_tf.py [--rounds 9] [--epochs 3] [--batch 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per round and side")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import keras
    import tensorflow as tf

    from dlspec.backends import keras as kb
    from dlspec.data import load_data
    from dlspec.program import compile_file
    from dlspec.train.tf_loop import Trainer

    prog = compile_file(ROOT / "specs" / "digits_cnn.dls")
    cfg = prog.recipes[-1].model_copy(update={"batch": args.batch, "epochs": 1000})
    graph = prog.recipe_graphs[cfg.name]
    bundle = load_data(cfg.data, cfg.seed, ROOT / "specs")
    n = len(bundle.train)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(graph, cfg, bundle, Path(tmp), "/CPU:0", progress=False, echo=lambda _: None)
        start = kb.canonical_weights(trainer.model, graph)
        hand = kb.build_model(graph)
        kb.set_weights(hand, graph, start)
        hand.compile(optimizer=keras.optimizers.Adam(2e-3),
                     loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.05),
                     metrics=["accuracy"])
        x = bundle.train.x[0]
        y = keras.utils.to_categorical(bundle.train.y, 10).astype(np.float32)

        epoch_a = [0]

        def run_a() -> float:
            t0 = time.perf_counter()
            for _ in range(args.epochs):
                epoch_a[0] += 1
                trainer.train_epoch(2 + epoch_a[0] % 10)  # past the warm-up epoch: the full rate
            return time.perf_counter() - t0

        def run_b() -> float:
            t0 = time.perf_counter()
            hand.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=True, verbose=0)
            return time.perf_counter() - t0

        trainer.train_epoch(2)
        hand.fit(x, y, batch_size=args.batch, epochs=1, shuffle=True, verbose=0)
        ta, tb_ = [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                ta.append(run_a())
                tb_.append(run_b())
            else:
                tb_.append(run_b())
                ta.append(run_a())

    per_epoch_a = [t / args.epochs for t in ta]
    per_epoch_b = [t / args.epochs for t in tb_]
    sps = {"dlspec": n / statistics.median(per_epoch_a), "fit": n / statistics.median(per_epoch_b)}
    paired = sorted(b / a for a, b in zip(ta, tb_))
    q = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    result = {
        "model": "digits_cnn", "train_examples": n, "batch": args.batch, "rounds": args.rounds,
        "epochs_per_round": args.epochs, "tensorflow": tf.__version__, "keras": keras.__version__,
        "examples_per_s": {k: round(v, 1) for k, v in sps.items()},
        "best_epoch_s": {"dlspec": round(min(per_epoch_a), 4), "fit": round(min(per_epoch_b), 4)},
        "speed_ratio_of_medians": round(sps["dlspec"] / sps["fit"], 3),
        "speed_ratio_of_minima": round(min(per_epoch_b) / min(per_epoch_a), 3),
        "speed_ratio_paired_median": round(statistics.median(paired), 3),
        "speed_ratio_paired_iqr": [round(q[0], 3), round(q[2], 3)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"digits CNN, {n} training examples, batch {args.batch}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"  dlspec train --backend tf loop : {sps['dlspec']:8.0f} examples/s  (best epoch {min(per_epoch_a) * 1e3:.1f} ms)")
    print(f"  hand-written model.fit         : {sps['fit']:8.0f} examples/s  (best epoch {min(per_epoch_b) * 1e3:.1f} ms)")
    print(f"  dlspec / fit: medians {result['speed_ratio_of_medians']}, minima {result['speed_ratio_of_minima']}, "
          f"paired median {result['speed_ratio_paired_median']} IQR {result['speed_ratio_paired_iqr']}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
