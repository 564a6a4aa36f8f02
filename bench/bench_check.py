"""Checking an architecture: dlspec vs Keras vs PyTorch, each as a whole process.

    python bench/bench_check.py [--rounds N] [--quick] [--json]

For ResNet-18 and ResNet-50, one round runs, as fresh processes and in this order:
  * `python -m dlspec.cli check specs/resnetNN.dls` and `python -m dlspec.cli summary ...`;
  * Keras: build the network (ResNet-18 hand-written in keras.applications style; ResNet-50 is
    `keras.applications.ResNet50(weights=None)`, which downloads nothing) and call `summary()`;
  * PyTorch: construct a hand-written torchvision-style ResNet on the meta device and run one
    forward pass on a meta tensor of [1, 3, 224, 224] — shape inference without arithmetic.
Then `python -c pass`, `dlspec --help` and `dlspec --version` as whole processes (wall and CPU
seconds, the CPU from RUSAGE_CHILDREN). Import time counts for all. Every figure is a ratio against dlspec measured in the same
round (paired), summarized as median and IQR over rounds. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ---- the children: run as `python bench/bench_check.py --child keras|torch 18|50` ---------------


def keras_child(depth: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import layers

    if depth == 50:
        model = keras.applications.ResNet50(weights=None)
    else:
        def conv_bn(x, filters, k, stride, name):
            x = layers.ZeroPadding2D(k // 2, name=f"{name}_pad")(x) if k > 1 else x
            x = layers.Conv2D(filters, k, strides=stride, use_bias=False, name=f"{name}_conv")(x)
            return layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)

        def basic(x, filters, stride, name):
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = conv_bn(x, filters, 1, stride, f"{name}_down")
            y = layers.ReLU(name=f"{name}_relu1")(conv_bn(x, filters, 3, stride, f"{name}_1"))
            y = conv_bn(y, filters, 3, 1, f"{name}_2")
            return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))

        inp = keras.Input((224, 224, 3))
        x = layers.ReLU(name="stem_relu")(conv_bn(inp, 64, 7, 2, "stem"))
        x = layers.ZeroPadding2D(1, name="pool_pad")(x)
        x = layers.MaxPooling2D(3, 2, name="pool")(x)
        for stage, (filters, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            x = basic(x, filters, stride, f"conv{stage}_block1")
            x = basic(x, filters, 1, f"conv{stage}_block2")
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        model = keras.Model(inp, layers.Dense(1000, name="fc")(x), name="resnet18")
    model.summary(print_fn=lambda *a, **k: None)
    print(model.count_params())


def torch_child(depth: int) -> None:
    import torch
    from torch import nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.down = (nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                         if stride != 1 or cin != width else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.down(x))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            out = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.down = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                         if stride != 1 or cin != out else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            return torch.relu(self.bn3(self.conv3(y)) + self.down(x))

    block, counts = (Basic, (2, 2, 2, 2)) if depth == 18 else (Bottleneck, (3, 4, 6, 3))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for i, (width, n) in enumerate(zip((64, 128, 256, 512), counts)):
                for j in range(n):
                    layers.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                    cin = width * block.expansion
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    with torch.device("meta"):
        model = ResNet()
        y = model(torch.empty(1, 3, 224, 224))
    print(tuple(y.shape), sum(p.numel() for p in model.parameters()))


# ---- the parent ------------------------------------------------------------------------------


def commands(depth: int) -> dict[str, list[str]]:
    spec = f"specs/resnet{depth}.dls"
    me = str(Path(__file__).resolve())
    return {
        "dlspec_check": [sys.executable, "-m", "dlspec.cli", "check", spec],
        "dlspec_summary": [sys.executable, "-m", "dlspec.cli", "summary", spec],
        "keras_summary": [sys.executable, me, "--child", "keras", str(depth)],
        "torch_meta_forward": [sys.executable, me, "--child", "torch", str(depth)],
    }


def run_once(argv: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall seconds of one whole process; its CPU seconds (user + system) appended to `cpu`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr[-2000:]}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return dt


#: the processes people wait on besides check and summary, and a bare interpreter to compare with
STARTUP = {
    "python_pass": [sys.executable, "-c", "pass"],
    "dlspec_help": [sys.executable, "-m", "dlspec.cli", "--help"],
    "dlspec_version": [sys.executable, "-m", "dlspec.cli", "--version"],
}


def quartiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    if len(xs) < 2:
        return {"median": xs[0], "q1": xs[0], "q3": xs[0], "min": xs[0], "max": xs[0]}
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1]}


def bench(rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out: dict = {"rounds": rounds, "load_avg_start": os.getloadavg()[0], "models": {}}
    for depth in (18, 50):
        cmds = commands(depth)
        for argv in cmds.values():  # warm the page cache and any bytecode once
            run_once(argv, env)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(rounds):
            for k, argv in cmds.items():
                times[k].append(run_once(argv, env))
        ratios = {}
        for base in ("dlspec_check", "dlspec_summary"):
            for other in ("keras_summary", "torch_meta_forward"):
                paired = [o / b for o, b in zip(times[other], times[base], strict=True)]
                ratios[f"{other}/{base}"] = quartiles(paired)
        out["models"][f"resnet{depth}"] = {"seconds": {k: quartiles(v) for k, v in times.items()}, "ratios": ratios}
    for argv in STARTUP.values():
        run_once(argv, env)
    wall: dict[str, list[float]] = {k: [] for k in STARTUP}
    cpu: dict[str, list[float]] = {k: [] for k in STARTUP}
    for _ in range(max(rounds, 5)):
        for k, argv in STARTUP.items():
            wall[k].append(run_once(argv, env, cpu[k]))
    out["startup"] = {k: {"seconds": quartiles(wall[k]), "cpu_seconds": quartiles(cpu[k])} for k in STARTUP}
    out["load_avg_end"] = os.getloadavg()[0]
    r50 = out["models"]["resnet50"]
    out["goal"] = "dlspec check/summary ≥ 10× faster than Keras summary() and the PyTorch meta forward"
    out["goal_met"] = all(r["median"] >= 10 for m in out["models"].values() for r in m["ratios"].values())
    out["startup_goal"] = ("ResNet-50 check ≤ 0.15 s, ≥ 25× the PyTorch meta forward, ≥ 50× Keras; "
                           "--help and --version ≤ 0.1 s (on a quiet 2-core machine)")
    out["startup_goal_met"] = (r50["seconds"]["dlspec_check"]["median"] <= 0.15
                               and r50["ratios"]["torch_meta_forward/dlspec_check"]["median"] >= 25
                               and r50["ratios"]["keras_summary/dlspec_check"]["median"] >= 50
                               and all(out["startup"][k]["seconds"]["median"] <= 0.1
                                       for k in ("dlspec_help", "dlspec_version")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="2 rounds")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "DEPTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        (keras_child if args.child[0] == "keras" else torch_child)(int(args.child[1]))
        return
    res = bench(2 if args.quick else args.rounds)
    if not args.json:
        print(f"{res['rounds']} rounds, load average {res['load_avg_start']:.2f} → {res['load_avg_end']:.2f}")
        for model, m in res["models"].items():
            s = m["seconds"]
            print(f"{model}: " + ", ".join(f"{k} {v['median']:.2f} s [{v['q1']:.2f}–{v['q3']:.2f}]" for k, v in s.items()))
            for k, r in m["ratios"].items():
                print(f"    {k:40s} {r['median']:6.2f}× [IQR {r['q1']:.2f}–{r['q3']:.2f}]")
        for k, v in res["startup"].items():
            print(f"{k}: {v['seconds']['median']:.3f} s [{v['seconds']['q1']:.3f}–{v['seconds']['q3']:.3f}], "
                  f"CPU {v['cpu_seconds']['median']:.3f} s")
        print(f"goal (≥ 10×) met: {res['goal_met']}")
        print(f"start-up goal ({res['startup_goal']}) met: {res['startup_goal_met']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
