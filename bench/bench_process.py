"""A whole `dlspec train` process against a hand-written PyTorch script doing the same job.

    python bench/bench_process.py [--rounds R] [--epochs N] [--json]

Both processes start from nothing, load scikit-learn's 8x8 digits, train the digits CNN of
`specs/digits_cnn.dls` (two conv-batchnorm-ReLU-maxpool stages, dropout, dense 128, dense 10) for
N epochs with Adam(2e-3, weight decay 1e-4), label-smoothed cross-entropy, batch 64 and a
warm-up + cosine schedule, evaluate the validation split every epoch and the test split once, and
save the weights (safetensors). The hand script is written to a temporary folder by this file (see
HAND_SCRIPT); `dlspec train` additionally writes its whole run folder (metrics, curves.png,
checkpoints, config, generated model source), which is the point of comparing them.

Rounds alternate the order (dlspec first, then the script; then the reverse). Reported per
process: median wall time, median peak resident memory (each child's own, from `os.wait4`) and
the median peak of the process tree's resident memory (proportional set size, sampled, a shared
page counted once in all: `dlspec train` forks a helper that draws curves.png, dlspec/train/plotter.py), and the
ratios dlspec / hand (goal: time <= 1.1, memory <= 1.15). The last line printed is JSON.
Bytecode caches are written (the two would otherwise pay for compiling their imports every time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HAND_SCRIPT = textwrap.dedent('''
    import json, math, sys
    import numpy as np
    import torch
    from torch import nn
    from sklearn.datasets import load_digits
    from safetensors.torch import save_file

    torch.set_num_threads(int(sys.argv[3]))
    epochs, out = int(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.data.reshape(-1, 1, 8, 8) / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    n_tr, n_va = int(0.7 * len(y)), int(0.15 * len(y))
    tr, va, te = order[:n_tr], order[n_tr:n_tr + n_va], order[n_tr + n_va:]

    def stage(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    net = nn.Sequential(*stage(1, 32), *stage(32, 64), nn.Flatten(), nn.Dropout(0.3), nn.Linear(256, 128),
                        nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(tr) / 64)
    total, warm = epochs * steps_per_epoch, steps_per_epoch

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)

    def evaluate(idx):
        net.eval()
        with torch.no_grad():
            logits = net(x[idx])
            return loss_fn(logits, y[idx]).item(), (logits.argmax(1) == y[idx]).float().mean().item()

    log = []
    for epoch in range(epochs):
        net.train()
        perm = tr[torch.randperm(len(tr))]
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(net(x[b]), y[b])
            loss.backward()
            opt.step()
            sched.step()
        log.append({"epoch": epoch + 1, "val": evaluate(va)})
        print(f"epoch {epoch + 1}: val loss {log[-1]['val'][0]:.4f} accuracy {log[-1]['val'][1]:.4f}")
    test = evaluate(te)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out + "/model.safetensors")
    with open(out + "/metrics.json", "w") as f:
        json.dump({"epochs": log, "test": test}, f)
    print(f"test accuracy {test[1]:.4f}")
''')


def _tree_rss(pid: int) -> int:
    """Proportional set size (bytes) of `pid` and all its descendants: a page shared by k
    processes counts 1/k in each, so a forked child's shared pages are counted once in all."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, the child's own peak resident memory and the peak of its process tree (MiB;
    the tree's proportional set size, sampled every 20 ms, so it can miss a short peak; dlspec's curve-drawing helper
    is a process of that tree)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, peak[0] / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="threads for both (dlspec: --threads)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "hand_train.py")
        script.write_text(HAND_SCRIPT, encoding="utf-8")

        def dlspec_cmd(r: int) -> list[str]:
            return [sys.executable, "-m", "dlspec.cli", "train", "specs/digits_cnn.dls", "--epochs", str(a.epochs),
                    "--out", str(Path(tmp, f"run{r}")), "--quiet", "--threads", str(a.threads)]

        def hand_cmd(r: int) -> list[str]:
            out = Path(tmp, f"hand{r}")
            out.mkdir()
            return [sys.executable, str(script), str(a.epochs), str(out), str(a.threads)]

        # one untimed pair first: bytecode caches written, files in the page cache
        _run(dlspec_cmd(-1), env)
        _run(hand_cmd(-1), env)
        rows: dict[str, list[tuple[float, float, float]]] = {"dlspec": [], "hand": []}
        for r in range(a.rounds):
            order = [("dlspec", dlspec_cmd), ("hand", hand_cmd)]
            for name, cmd in order if r % 2 == 0 else order[::-1]:
                rows[name].append(_run(cmd(r), env))
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in rows.items()}
    result = {
        "epochs": a.epochs, "rounds": a.rounds, "threads": a.threads,
        "dlspec_s": round(med["dlspec"][0], 3), "hand_s": round(med["hand"][0], 3),
        "dlspec_mib": round(med["dlspec"][1], 1), "hand_mib": round(med["hand"][1], 1),
        "time_ratio": round(med["dlspec"][0] / med["hand"][0], 3),
        "memory_ratio": round(med["dlspec"][1] / med["hand"][1], 3),
        "dlspec_tree_mib": round(med["dlspec"][2], 1), "hand_tree_mib": round(med["hand"][2], 1),
        "tree_memory_ratio": round(med["dlspec"][2] / med["hand"][2], 3),
        "load_average": os.getloadavg()[0],
    }
    if not a.json:
        print(f"{'process':<10}{'wall s (median)':>18}{'peak MiB':>12}{'tree peak MiB':>16}")
        for k in ("dlspec", "hand"):
            print(f"{k:<10}{med[k][0]:>18.2f}{med[k][1]:>12.0f}{med[k][2]:>16.0f}")
        print(f"dlspec / hand: time {result['time_ratio']:.2f}x (goal <= 1.10), "
              f"memory {result['memory_ratio']:.2f}x (goal <= 1.15), "
              f"process tree {result['tree_memory_ratio']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
