"""PyTorch backend and `dlspec train` benchmark: generated modules and the dlspec trainer against
hand-written PyTorch.

(a) Forward + backward step time of the module `build_module` generates vs a hand-written
    `nn.Module` of the same architecture, same weights (the generated state_dict is loaded into
    the hand-written module; outputs are asserted equal), for ResNet-18 (torchvision-style
    BasicBlock) and the embedding + bidirectional-LSTM classifier of `specs/sentiment_bilstm.dls`.
    One step = zero_grad, forward in train mode, cross-entropy, backward (no optimizer step).
    ResNet-18 is also compared with a hand-written variant using out-of-place ReLU and residual
    add (as the generated code does) to show where a difference comes from.
    Timing: warm-up, then N rounds that each time A and B back to back, the order alternating
    every round (AB, BA, AB, ...); each round times `inner` steps of each. Reported: median,
    IQR and minimum of the per-step time, and the speed of the generated module relative to the
    hand-written one (hand_time / generated_time; 1.0 = equal, goal >= 0.98) three ways: ratio
    of the medians, ratio of the minima, and the median [IQR] of the per-round paired ratios
    (A and B of one round ran seconds apart, so they share the machine's load; this is the
    figure least disturbed by other processes).

(b) `dlspec train` on the digits CNN (`specs/digits_cnn.dls`) vs a hand-written minimal PyTorch
    loop on the same data (same split, same optimizer Adam(2e-3, wd=1e-4), label-smoothed
    cross-entropy, batch 64, warm-up + cosine schedule, same shuffling rule):
      - train-step throughput: `Trainer.train_epoch` (dlspec) vs the hand loop's training pass,
        epochs interleaved one by one, order alternating; examples/s of the training part alone.
      - whole-epoch wall time: `Trainer.fit()` (per epoch: train, evaluate train + val split,
        metrics.jsonl/csv, best weights, checkpoint; once: curves.png, test evaluation) divided
        by its epochs, vs (i) the hand loop training only and (ii) the hand loop that also
        evaluates the train and val splits every epoch and the test split once. Rounds of the
        three interleaved (order reversed every other round); the median per-epoch time of the
        rounds, and `fit()`'s time broken down (the `time` it logs per epoch = train + evaluate
        train and val; checkpoints; curves.png; the rest).
      Goal: dlspec / hand throughput >= 0.95.

Run from the repository root:  python bench/bench_torch.py [--quick] [--size 112] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlspec  # noqa: E402
from dlspec.backends.torch import build_module  # noqa: E402

torch.set_num_threads(2)


# ---- hand-written models ------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.inplace:
            out += identity
        else:
            out = out + identity
        out = self.relu(out)
        return out


class HandResNet18(nn.Module):
    """torchvision.models.resnet18, written out (no torchvision dependency). inplace=False: the
    same with out-of-place ReLU and residual add, as the generated module computes them."""

    def __init__(self, num_classes: int = 1000, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=inplace)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, self.inplace)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, inplace=self.inplace) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class HandBiLSTM(nn.Module):
    """specs/sentiment_bilstm.dls by hand: embedding(50, 32) -> dropout(0.1) -> BiLSTM(64), last
    forward and backward hidden states concatenated -> dropout(0.3) -> dense(2)."""

    def __init__(self, vocab: int = 50, dim: int = 32, hidden: int = 64, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.drop_in = nn.Dropout(0.1)
        self.encoder = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.drop_out = nn.Dropout(0.3)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(self.drop_in(self.embed(tokens)))
        return self.head(self.drop_out(torch.cat([h[-2], h[-1]], dim=1)))


class HandDigitsCNN(nn.Module):
    """specs/digits_cnn.dls by hand."""

    def __init__(self, classes: int = 10, p: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(p), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(p),
                                  nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---- helpers --------------------------------------------------------------------------------------


def nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def copy_state(src: nn.Module, dst: nn.Module) -> None:
    """Load src's state_dict into dst by position (both list their tensors in the same order);
    shapes are asserted equal, tensor by tensor."""
    s, d = src.state_dict(), dst.state_dict()
    assert len(s) == len(d), (len(s), len(d))
    new = {}
    for (ks, vs), (kd, vd) in zip(s.items(), d.items()):
        assert vs.shape == vd.shape, (ks, kd, vs.shape, vd.shape)
        assert ks.rsplit(".", 1)[-1] == kd.rsplit(".", 1)[-1], (ks, kd)
        new[kd] = vs.clone()
    dst.load_state_dict(new)


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    return step


def timed(f, spent: dict, key: str):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t0
    return wrapper


def interleaved(fa, fb, rounds: int, inner: int, warmup: int) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for r in range(rounds):
        order = ((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb), (fa, ta))
        for f, out in order:
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            out.append((time.perf_counter() - t0) / inner)
    return ta, tb


# ---- (a) generated vs hand-written modules -----------------------------------------------------------


def bench_module(name: str, gen: nn.Module, hand: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 rounds: int, inner: int, warmup: int, atol: float) -> dict:
    pg, ph = nparams(gen), nparams(hand)
    assert pg == ph, f"{name}: parameter counts differ: generated {pg:,} vs hand-written {ph:,}"
    copy_state(gen, hand)
    gen.eval(), hand.eval()
    with torch.no_grad():
        og, oh = gen(x), hand(x)
    diff = float((og - oh).abs().max())
    assert og.shape == oh.shape and torch.allclose(og, oh, rtol=0, atol=atol), f"{name}: outputs differ by {diff}"
    gen.train(), hand.train()
    tg, th = interleaved(step_fn(gen, x, y), step_fn(hand, x, y), rounds, inner, warmup)
    qg, qh = quantiles(tg), quantiles(th)
    paired = quantiles([h / g for g, h in zip(tg, th)])
    return {"model": name, "params": pg, "max_abs_output_diff": diff, "rounds": rounds, "inner": inner,
            "generated_ms": [v * 1e3 for v in qg], "hand_ms": [v * 1e3 for v in qh],
            "generated_min_ms": min(tg) * 1e3, "hand_min_ms": min(th) * 1e3,
            "ratio_hand_over_generated": qh[1] / qg[1], "ratio_of_minima": min(th) / min(tg),
            "paired_ratio": paired}


def part_a(args) -> list[dict]:
    torch.manual_seed(0)
    res = []
    g = dlspec.compile_file(ROOT / "specs/resnet18.dls").models["ResNet18"]
    gen = build_module(g)
    hand = HandResNet18()
    s = args.size
    x = torch.randn(args.rn_batch, 3, s, s)
    y = torch.randint(0, 1000, (args.rn_batch,))
    res.append(bench_module(f"ResNet-18, batch {args.rn_batch}, 3x{s}x{s}", gen, hand, x, y,
                            rounds=args.rn_rounds, inner=1, warmup=2, atol=1e-4))
    res.append(bench_module(f"ResNet-18 vs hand-written with out-of-place ReLU/add, batch {args.rn_batch}, 3x{s}x{s}",
                            gen, HandResNet18(inplace=False), x, y, rounds=args.rn_rounds, inner=1, warmup=2, atol=1e-4))
    if args.calibrate:  # A/A: two identical modules in the two slots; shows the method's own bias and spread
        res.append(bench_module(f"A/A calibration: generated vs generated ResNet-18, 3x{s}x{s}", gen, build_module(g),
                                x, y, rounds=args.rn_rounds, inner=1, warmup=2, atol=0.0))
    g = dlspec.compile_file(ROOT / "specs/sentiment_bilstm.dls").recipe_graphs["SentimentBiLSTM"]
    gen = build_module(g)
    hand = HandBiLSTM()
    x = torch.randint(0, 50, (64, 32))
    y = torch.randint(0, 2, (64,))
    res.append(bench_module("BiLSTM classifier, batch 64, 32 tokens", gen, hand, x, y,
                            rounds=args.lstm_rounds, inner=10, warmup=10, atol=0.0))
    return res


# ---- (b) dlspec train vs a hand-written loop ---------------------------------------------------------


def make_trainer(run: Path, epochs: int, early_stop: bool = False):
    from dlspec.data import check_against_model, load_data
    from dlspec.train import torch_loop as tl
    from dlspec.train.session import pick_recipe

    spec = ROOT / "specs/digits_cnn.dls"
    prog = dlspec.compile_file(spec)
    cfg = pick_recipe(prog, None, spec)
    upd = {"epochs": epochs}
    if not early_stop:
        upd["early_stop"] = None
    cfg = cfg.model_copy(update=upd)
    graph = prog.recipe_graphs[cfg.name]
    bundle = load_data(cfg.data, cfg.seed, spec.parent)
    check_against_model(bundle, graph)
    run.mkdir(parents=True, exist_ok=True)
    return tl.Trainer(graph, cfg, bundle, run, torch.device("cpu"), cfg.seed, progress=False, echo=lambda s: None)


class HandLoop:
    """The minimal PyTorch loop: same data tensors, optimizer, loss, batch, schedule, shuffling."""

    def __init__(self, trainer, epochs: int):
        torch.manual_seed(0)
        self.model = HandDigitsCNN()
        assert nparams(self.model) == nparams(trainer.model)
        tr, va, te = trainer.bundle.train, trainer.bundle.val, trainer.bundle.test
        self.x, self.y = torch.from_numpy(tr.x[0]), torch.from_numpy(tr.y)
        self.xv, self.yv = torch.from_numpy(va.x[0]), torch.from_numpy(va.y)
        self.xt, self.yt = torch.from_numpy(te.x[0]), torch.from_numpy(te.y)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=2e-3, weight_decay=1e-4)
        S = torch.optim.lr_scheduler
        self.sched = S.SequentialLR(self.opt, [S.LinearLR(self.opt, 0.01, 1.0, total_iters=1),
                                               S.CosineAnnealingLR(self.opt, T_max=max(epochs - 1, 1))], milestones=[1])
        self.batch = 64

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        n = len(self.x)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for i in range(0, n, self.batch):
            idx = order[i : i + self.batch]
            xb, yb = self.x[idx], self.y[idx]
            loss = F.cross_entropy(self.model(xb), yb, label_smoothing=0.05)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
        self.sched.step()
        return total / n

    @torch.no_grad()
    def accuracy(self, x, y) -> float:
        self.model.eval()
        correct = 0
        for i in range(0, len(x), 256):
            correct += int((self.model(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum())
        return correct / len(x)

    def fit(self, epochs: int, evaluate: bool) -> float:
        for e in range(1, epochs + 1):
            self.train_epoch(e)
            if evaluate:
                self.accuracy(self.x, self.y)
                self.accuracy(self.xv, self.yv)
        return self.accuracy(self.xt, self.yt)


def part_b(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="dlspec-bench-"))
    n_epochs = args.train_epochs
    trainer = make_trainer(tmp / "steps", n_epochs)
    hand = HandLoop(trainer, n_epochs)
    n_train = len(trainer.train_data)
    # train-step throughput: epochs interleaved, order alternating
    trainer.train_epoch(1), hand.train_epoch(1)  # warm-up
    td, th = [], []
    for e in range(n_epochs):
        pair = ((lambda e=e: trainer.train_epoch(e + 2), td), (lambda e=e: hand.train_epoch(e + 2), th))
        for f, out in (pair if e % 2 == 0 else pair[::-1]):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
    qd, qh = quantiles(td), quantiles(th)
    paired = quantiles([h / d for d, h in zip(td, th)])

    # whole-epoch wall time: fit() vs the hand loop, `fit_rounds` rounds, interleaved
    fit_epochs = args.fit_epochs
    wd, wh, wh_eval, accs, parts = [], [], [], {}, []
    for r in range(args.fit_rounds):
        jobs = ["dlspec", "hand", "hand_eval"]
        if r % 2:
            jobs.reverse()
        for j in jobs:
            if j == "dlspec":
                t = make_trainer(tmp / f"fit{r}", fit_epochs)
                spent = {"save_checkpoint": 0.0, "plot": 0.0}
                for obj, meth in ((t, "save_checkpoint"), (t.log, "plot")):
                    setattr(obj, meth, timed(getattr(obj, meth), spent, meth))
                t0 = time.perf_counter()
                out = t.fit()
                total = time.perf_counter() - t0
                wd.append(total / fit_epochs)
                logged = sum(rec["time"] for rec in t.log.records)  # per epoch: train + evaluate train and val
                parts.append({"train_and_eval": logged / fit_epochs, "checkpoints": spent["save_checkpoint"] / fit_epochs,
                              "curves_png_once": spent["plot"] / fit_epochs,
                              "rest": (total - logged - spent["save_checkpoint"] - spent["plot"]) / fit_epochs})
                accs["dlspec"] = out.test["accuracy"]
            else:
                h = HandLoop(trainer, fit_epochs)
                t0 = time.perf_counter()
                acc = h.fit(fit_epochs, evaluate=(j == "hand_eval"))
                (wh if j == "hand" else wh_eval).append((time.perf_counter() - t0) / fit_epochs)
                accs[j] = acc
    md, mh, mhe = statistics.median(wd), statistics.median(wh), statistics.median(wh_eval)
    return {
        "train_examples": n_train, "batch": 64, "step_epochs": n_epochs,
        "train_epoch_s": {"dlspec": qd, "hand": qh},
        "train_examples_per_s": {"dlspec": n_train / qd[1], "hand": n_train / qh[1]},
        "ratio_train_steps": qh[1] / qd[1], "paired_ratio_train_steps": paired,
        "min_epoch_s": {"dlspec": min(td), "hand": min(th)},
        "fit_epochs": fit_epochs, "fit_rounds": args.fit_rounds,
        "epoch_wall_s": {"dlspec_fit": md, "hand_train_only": mh, "hand_train_eval": mhe,
                         "all": {"dlspec_fit": wd, "hand_train_only": wh, "hand_train_eval": wh_eval}},
        "fit_breakdown_s_per_epoch": {k: statistics.median(p[k] for p in parts) for k in parts[0]},
        "ratio_whole_epoch_vs_hand_train_only": mh / md,
        "ratio_whole_epoch_vs_hand_train_eval": mhe / md,
        "test_accuracy": accs,
    }


# ---- report -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=112, help="ResNet-18 input height/width (default 112)")
    ap.add_argument("--rn-batch", type=int, default=8)
    ap.add_argument("--rn-rounds", type=int, default=20)
    ap.add_argument("--lstm-rounds", type=int, default=40)
    ap.add_argument("--train-epochs", type=int, default=20)
    ap.add_argument("--fit-epochs", type=int, default=10)
    ap.add_argument("--fit-rounds", type=int, default=5)
    ap.add_argument("--calibrate", action="store_true", help="also time ResNet-18 against an identical copy (A/A)")
    ap.add_argument("--quick", action="store_true", help="few rounds, for a smoke test")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rn_rounds, args.lstm_rounds, args.train_epochs, args.fit_epochs, args.fit_rounds = 4, 6, 4, 2, 1
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    a = part_a(args)
    b = part_b(args)
    load1 = os.getloadavg()
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "load_avg_start": load0, "load_avg_end": load1,
            "seconds": time.perf_counter() - t_start}
    if args.json:
        print(json.dumps({"machine": info, "modules": a, "train": b}, indent=1))
        return
    print(f"torch {info['torch']}, {info['threads']} threads, {info['cpus']} CPUs, Python {info['python']}; "
          f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; {info['seconds']:.0f} s in all\n")
    print("(a) forward + backward step time, generated vs hand-written module (same weights)")
    print("| Model | params | max abs output diff | generated median [IQR] (min) | hand-written median [IQR] (min) "
          "| hand/generated: medians; minima; paired per round median [IQR] |")
    print("|---|---|---|---|---|---|")
    for r in a:
        g, h, pr = r["generated_ms"], r["hand_ms"], r["paired_ratio"]
        print(f"| {r['model']} ({r['rounds']} rounds x {r['inner']} steps) | {r['params']:,} | {r['max_abs_output_diff']:.1e} "
              f"| {g[1]:.2f} ms [{g[0]:.2f}–{g[2]:.2f}] ({r['generated_min_ms']:.2f}) "
              f"| {h[1]:.2f} ms [{h[0]:.2f}–{h[2]:.2f}] ({r['hand_min_ms']:.2f}) "
              f"| {r['ratio_hand_over_generated']:.3f}; {r['ratio_of_minima']:.3f}; {pr[1]:.3f} [{pr[0]:.3f}–{pr[2]:.3f}] |")
    print(f"\n(b) digits CNN, {b['train_examples']} training examples, batch {b['batch']}")
    d, h = b["train_epoch_s"]["dlspec"], b["train_epoch_s"]["hand"]
    print("| What is timed | dlspec | hand-written | ratio (dlspec throughput / hand) |")
    print("|---|---|---|---|")
    print(f"| training pass per epoch ({b['step_epochs']} epochs interleaved), median [IQR] | "
          f"{d[1] * 1e3:.1f} ms [{d[0] * 1e3:.1f}–{d[2] * 1e3:.1f}] = {b['train_examples_per_s']['dlspec']:,.0f} ex/s | "
          f"{h[1] * 1e3:.1f} ms [{h[0] * 1e3:.1f}–{h[2] * 1e3:.1f}] = {b['train_examples_per_s']['hand']:,.0f} ex/s | "
          f"medians {b['ratio_train_steps']:.3f}; minima {b['min_epoch_s']['hand'] / b['min_epoch_s']['dlspec']:.3f}; "
          f"paired per epoch {b['paired_ratio_train_steps'][1]:.3f} [{b['paired_ratio_train_steps'][0]:.3f}–"
          f"{b['paired_ratio_train_steps'][2]:.3f}] |")
    w = b["epoch_wall_s"]
    print(f"| whole epoch: `Trainer.fit()` / epochs ({b['fit_epochs']} epochs, median of {b['fit_rounds']}) vs hand, training only | "
          f"{w['dlspec_fit'] * 1e3:.1f} ms | {w['hand_train_only'] * 1e3:.1f} ms | {b['ratio_whole_epoch_vs_hand_train_only']:.3f} |")
    print(f"| whole epoch vs hand loop that also evaluates train + val each epoch | "
          f"{w['dlspec_fit'] * 1e3:.1f} ms | {w['hand_train_eval'] * 1e3:.1f} ms | {b['ratio_whole_epoch_vs_hand_train_eval']:.3f} |")
    bd = b["fit_breakdown_s_per_epoch"]
    print("\n`Trainer.fit()` per epoch (median over rounds): " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in bd.items())
          + "  (train_and_eval = the `time` logged per epoch; curves_png_once and rest (test evaluation, best/last "
          "weights, metrics files) are spread over the epochs)")
    print(f"\ntest accuracy after the timed fits: {', '.join(f'{k} {v:.3f}' for k, v in b['test_accuracy'].items())}")
    print("\nratios (goal), paired medians: ResNet-18 hand/generated {:.3f} (>= 0.98; vs out-of-place hand-written "
          "{:.3f}), BiLSTM {:.3f} (>= 0.98), train steps {:.3f} (>= 0.95); whole epoch (medians) vs hand training "
          "only {:.3f}, vs hand with evaluation {:.3f}".format(
              a[0]["paired_ratio"][1], a[1]["paired_ratio"][1], a[-1]["paired_ratio"][1], b["paired_ratio_train_steps"][1],
              b["ratio_whole_epoch_vs_hand_train_only"], b["ratio_whole_epoch_vs_hand_train_eval"]))


if __name__ == "__main__":
    main()
