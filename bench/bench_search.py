"""Hyper-parameter search against a hand-tuned spec, and the share of a space the checker rejects.

    python bench/bench_search.py [--trials 30] [--workers 1] [--out /tmp/bench_search]

1. trains the hand-tuned `specs/digits_cnn.dls` (the baseline, `dlspec train`), then runs
   `dlspec search specs/search_digits_cnn.dls` (width, dropout, learning rate, schedule) with the
   same data, split and epochs; prints both test accuracies and wall times and their ratios;
2. counts the configurations of `specs/search_transformer.dls` (d_model, heads, ff) the checker
   rejects before training (`dlspec search --check`), and how long checking one takes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlspec.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_search"))
    ap.add_argument("--skip-digits", action="store_true")
    a = ap.parse_args()
    if a.out.exists():
        shutil.rmtree(a.out)
    a.out.mkdir(parents=True)

    t0 = time.perf_counter()
    r = cli("search", "specs/search_transformer.dls", "--check", "--json")
    check_s = time.perf_counter() - t0
    probe = json.loads(r.stdout)
    rejected = probe["configs"] - probe["valid"]
    print(f"transformer space (d_model x heads x ff x 3 lr points): {probe['configs']} configurations, "
          f"{rejected} rejected by the checker ({rejected / probe['configs']:.0%}), "
          f"checked in {check_s:.1f} s ({1000 * check_s / probe['configs']:.1f} ms each, process start included)")
    if a.skip_digits:
        return

    t0 = time.perf_counter()
    cli("train", "specs/digits_cnn.dls", "--out", str(a.out / "hand"), "--quiet")
    hand_s = time.perf_counter() - t0
    hand = json.loads((a.out / "hand" / "test_metrics.json").read_text())

    t0 = time.perf_counter()
    r = cli("search", "specs/search_digits_cnn.dls", "-o", str(a.out / "search"), "--trials", str(a.trials),
            "--workers", str(a.workers), "--json", "--quiet")
    search_s = time.perf_counter() - t0
    s = json.loads(r.stdout)["summary"]
    best = s["best"]
    c = s["counts"]
    cli("check", str(a.out / "search" / "best.dls"))
    print(f"hand-tuned digits_cnn.dls: test accuracy {hand['accuracy']:.4f}, {hand_s:.0f} s")
    print(f"search ({a.trials} trials, {a.workers} worker(s); {c['complete']} complete, {c['pruned']} pruned, "
          f"{c['invalid']} rejected): best trial {best['trial']} val_accuracy {best['value']:.4f}, "
          f"test accuracy {best['test'].get('accuracy', float('nan')):.4f}, {search_s:.0f} s")
    print(f"best params: {json.dumps(best['params'])}")
    print(f"ratios: test accuracy search/hand {best['test'].get('accuracy', 0) / hand['accuracy']:.4f}, "
          f"wall time search/hand {search_s / hand_s:.1f}x")


if __name__ == "__main__":
    main()
