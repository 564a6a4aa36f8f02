"""Deployment runtimes benchmark: `dlspec bench` on the digits CNN (a trained run), the sentiment
BiLSTM (a trained run) and ResNet-18 (`specs/resnet18.dls`, seeded weights, 224×224 images), batch
1 and 32. Every runtime runs in a fresh process on the same rows after warm-up; each figure is
also a ratio to eager PyTorch measured in the same run (see dlspec/bench.py for what is
and is not measured). The two runs are trained first (a few epochs: the timings do not depend on
the weights' quality) into a temporary folder.

Run from the repository root:  python bench/bench_deploy.py [--threads N] [--budget S] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = (("digits CNN", "specs/digits_cnn.dls", 3), ("sentiment BiLSTM", "specs/sentiment_bilstm.dls", 2),
          ("ResNet-18", "specs/resnet18.dls", None))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--budget", type=float, default=5.0)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    dlspec = [sys.executable, "-m", "dlspec.cli"]
    reports = {}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        for title, spec, epochs in MODELS:
            source = ROOT / spec
            if epochs is not None:
                run = Path(tmp) / source.stem
                subprocess.run([*dlspec, "train", str(source), "--epochs", str(epochs), "--out", str(run), "--quiet"],
                               check=True, cwd=ROOT, capture_output=True)
                source = run
            res = subprocess.run([*dlspec, "bench", str(source), "--batch", args.batch, "--threads", str(args.threads),
                                  "--budget", str(args.budget), "--json"], check=True, cwd=ROOT, capture_output=True,
                                 text=True)
            reports[title] = json.loads(res.stdout)
            if not args.json:
                from dlspec.bench import table

                print(f"## {title}\n\n```\n{table(reports[title])}\n```\n", flush=True)
    if args.json:
        print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
