"""Measure the training programs beyond one model, each trained with `dlspec train`
(dlspec.train.session.train) exactly as the command line would:

    gan       specs/dcgan.dls on builtin("digits", size=16), timed (goal: under 10 minutes on 2 CPU
              cores). A classifier trained with dlspec on the same 16×16 digits
              (specs/digits16_cnn.dls) judges 1,000 samples drawn with a fixed seed: the goal is
              that at least 70% get one class with softmax confidence > 0.9, and all ten classes
              occur among those confident samples.
    transfer  specs/digits_pretrain.dls (digits 0–4), then specs/digits_finetune.dls (digits 5–9,
              20 labelled training images per class, frozen features, new head) against the same
              spec without the pre-trained weights (its frozen features random) and against the
              network trained from scratch with every layer trainable; same recipe, seeds 0–3.
              Goal: fine-tuning clearly better on the test split.
    distill   specs/digits_cnn.dls (the teacher), then specs/digits_distill.dls against the same
              student trained alone: the distillation recipe minus its teacher (same data, seed,
              epochs, optimizer, schedule).

Run from the repository root:

    python bench/programs_goals.py [--only gan,transfer,distill] [--keep DIR] [--json FILE] [--threads 2]

Prints one line per measurement and the load average during it (the machine is shared, so
wall times are pessimistic); --json also writes every number to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlspec.train.session import train  # noqa: E402


def quiet(_: str) -> None:
    pass


def timed_train(spec: Path, out: Path, **kw) -> tuple[object, float, float]:
    """(outcome, seconds, mean 1-minute load average over the run)."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    outcome = train(spec, out=out, progress=False, echo=quiet, **kw)
    seconds = time.perf_counter() - t0
    return outcome, seconds, (load0 + os.getloadavg()[0]) / 2


def classify(run: Path, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities of the classifier in `run` (its best weights) for `images`."""
    from dlspec.backends import torch as tb
    from dlspec.train.session import _best_weights, load_run

    graph, _, _ = load_run(run)
    model = tb.build_module(graph).eval()
    tb.load_weights(model, graph, _best_weights(run))
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(images).float()), dim=1).numpy()


def gan(work: Path, specs: Path) -> dict:
    from dlspec.train.gan import draw_samples

    out, seconds, load = timed_train(specs / "dcgan.dls", work / "dcgan")
    print(f"gan: DCGAN trained {out.epochs_run} epochs in {seconds:.1f} s (load {load:.2f}); "
          f"last epoch: {json.dumps(out.test)}")
    clf, clf_seconds, _ = timed_train(specs / "digits16_cnn.dls", work / "digits16_cnn")
    print(f"gan: judge Digits16CNN test accuracy {clf.test['accuracy']:.4f} ({clf_seconds:.1f} s)")
    _, samples = draw_samples(work / "dcgan", 1000, seed=1234)
    probs = classify(work / "digits16_cnn", samples)
    conf, label = probs.max(1), probs.argmax(1)
    confident = conf > 0.9
    counts = np.bincount(label[confident], minlength=10)
    res = {
        "gan_seconds": round(seconds, 1), "gan_epochs": out.epochs_run, "load": round(load, 2),
        "judge_test_accuracy": clf.test["accuracy"], "confident_share": float(confident.mean()),
        "classes_present": int((counts > 0).sum()), "per_class_confident": counts.tolist(),
        "last_epoch": out.test,
    }
    ok = seconds < 600 and res["confident_share"] >= 0.7 and res["classes_present"] == 10
    print(f"gan: {res['confident_share']:.1%} of 1,000 samples have confidence > 0.9; classes present "
          f"{res['classes_present']}/10 {counts.tolist()}  goal {'met' if ok else 'NOT met'}")
    res["goal_met"] = ok
    return res


FROZEN_RANDOM = """import "digits_cnn.dls"

# DigitsFineTune without its pre-trained weights: the same frozen features, random.
model DigitsFineTune from DigitsCNN(classes=5) {
    freeze "features.*"
    replace head = dense(5)
}

"""

ALL_TRAINABLE = """import "digits_cnn.dls"

# DigitsCNN(classes=5) from a random start with every layer trainable.
model DigitsFineTune from DigitsCNN(classes=5) {
    replace head = dense(5)
}

"""

SEEDS = (0, 1, 2, 3)


def transfer(work: Path, specs: Path) -> dict:
    """The fine-tuned model against the same spec without its pre-trained weights, and against the
    network trained from scratch with every layer trainable; the recipe of digits_finetune.dls
    each time, over several seeds (each seed draws other 20 images per class and another split)."""
    base = specs.parent / "runs" / "digits_pretrain"
    if (base / "best.safetensors").is_file():
        print(f"transfer: reusing the pre-trained base in {base}")
        pre_acc = json.loads((base / "test_metrics.json").read_text())["accuracy"]
    else:
        pre, s_pre, _ = timed_train(specs / "digits_pretrain.dls", base)
        pre_acc = pre.test["accuracy"]
        print(f"transfer: pre-trained on 0–4, test accuracy {pre_acc:.4f} ({s_pre:.1f} s)")
    text = (specs / "digits_finetune.dls").read_text()
    recipe = text[text.index("train DigitsFineTune"):]
    (specs / "finetune_frozen_random.dls").write_text(FROZEN_RANDOM + recipe)
    (specs / "finetune_all_trainable.dls").write_text(ALL_TRAINABLE + recipe)
    variants = {"fine_tuned": "digits_finetune.dls", "same_spec_random_weights": "finetune_frozen_random.dls",
                "scratch_all_trainable": "finetune_all_trainable.dls"}
    res: dict = {"pretrain_accuracy": pre_acc, "seeds": list(SEEDS)}
    for key, spec in variants.items():
        accs = []
        for seed in SEEDS:
            out, _, load = timed_train(specs / spec, work / f"{key}-{seed}", seed=seed)
            accs.append(out.test["accuracy"])
        res[key] = {"accuracy": accs, "mean": float(np.mean(accs)), "min": min(accs), "max": max(accs)}
        print(f"transfer: {key:26s} test accuracy mean {np.mean(accs):.4f} (min {min(accs):.4f}, max {max(accs):.4f}) "
              f"over seeds {list(SEEDS)}; load {load:.1f}")
    return res


def distill(work: Path, specs: Path) -> dict:
    from dlspec import compile_file
    from dlspec.train.distill import student_recipe

    teacher, s_t, _ = timed_train(specs / "digits_cnn.dls", specs.parent / "runs" / "digits_cnn")
    print(f"distill: teacher DigitsCNN test accuracy {teacher.test['accuracy']:.4f} ({s_t:.1f} s)")
    student, s_s, _ = timed_train(specs / "digits_distill.dls", work / "distilled")
    (cfg,) = compile_file(specs / "digits_distill.dls").recipes
    alone_cfg = student_recipe(cfg)
    (specs / "digits_student_alone.dls").write_text(alone_source(specs / "digits_distill.dls", alone_cfg))
    alone, s_a, _ = timed_train(specs / "digits_student_alone.dls", work / "alone")
    res = {"teacher_accuracy": teacher.test["accuracy"], "distilled_accuracy": student.test["accuracy"],
           "distilled_loss": student.test["loss"], "alone_accuracy": alone.test["accuracy"],
           "alone_loss": alone.test["loss"], "distilled_epochs": student.epochs_run, "alone_epochs": alone.epochs_run,
           "distilled_seconds": round(s_s, 1), "alone_seconds": round(s_a, 1)}
    print(f"distill: student distilled {student.test['accuracy']:.4f} (test CE {student.test['loss']:.4f}, "
          f"{student.epochs_run} epochs) vs alone {alone.test['accuracy']:.4f} (test CE {alone.test['loss']:.4f}, "
          f"{alone.epochs_run} epochs)")
    return res


def alone_source(distill_spec: Path, cfg) -> str:
    """The distillation spec with its `train distill` recipe swapped for a plain recipe of the student."""
    text = distill_spec.read_text()
    head = text[: text.index("train distill")]
    return head + (
        f"train {cfg.model.name} {{\n"
        "    data      = builtin(\"digits\", split=[0.7, 0.15, 0.15])\n"
        "    loss      = cross_entropy()\n"
        f"    optimizer = adam(lr={cfg.optimizer.lr})\n"
        "    schedule  = cosine()\n"
        f"    epochs    = {cfg.epochs}\n"
        f"    batch     = {cfg.batch}\n"
        "    metrics   = [accuracy, macro_f1]\n"
        f"    early_stop(monitor=val_loss, patience={cfg.early_stop.patience})\n"
        "    checkpoint(every=1, keep=2)\n"
        f"    seed      = {cfg.seed}\n"
        "}\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="gan,transfer,distill")
    ap.add_argument("--keep", type=Path, help="keep the run folders here")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: the 2-core goal)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.keep or Path(tempfile.mkdtemp(prefix="dlspec-programs-"))
    specs = work / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "specs").glob("*.dls"):
        shutil.copy(f, specs / f.name)
    results: dict = {"cpu_threads": torch.get_num_threads(), "cores": os.cpu_count()}
    for name in args.only.split(","):
        results[name] = {"gan": gan, "transfer": transfer, "distill": distill}[name](work, specs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
