"""Measure the training programs beyond one model, each trained with `dlspec train`
(dlspec.train.session.train) exactly as the command line would:

    gan       specs/dcgan.dls on builtin("digits", size=16), timed (goal: under 10 minutes on 2 CPU
              cores). A classifier trained with dlspec on the same 16×16 digits
              (specs/digits16_cnn.dls) judges 1,000 samples drawn with a fixed seed: the goal is
              that at least 70% get one class with softmax confidence > 0.9, and all ten classes
              occur among those confident samples.
    transfer  specs/digits_pretrain.dls (digits 0–4), then specs/digits_finetune.dls (digits 5–9,
              20 labelled training images per class, frozen features, new head) against the same
              network trained from scratch on the same 100 images (all layers trainable, same
              recipe otherwise). Goal: fine-tuning clearly better on the test split.
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


SCRATCH = """import "digits_cnn.dls"

# DigitsFineTune's recipe, without the pre-trained base: every layer trains from a random start.
train DigitsCNN(classes=5) {
    data      = builtin("digits", classes=[5, 6, 7, 8, 9], per_class=20, split=[0.7, 0.15, 0.15])
    loss      = cross_entropy()
    optimizer = adam(lr=1e-3)
    epochs    = 15
    batch     = 16
    metrics   = [accuracy, macro_f1]
    early_stop(monitor=val_loss, patience=5)
    checkpoint(every=1, keep=1)
    seed      = 0
}
"""


def transfer(work: Path, specs: Path) -> dict:
    pre, s_pre, _ = timed_train(specs / "digits_pretrain.dls", specs.parent / "runs" / "digits_pretrain")
    print(f"transfer: pre-trained on 0–4, test accuracy {pre.test['accuracy']:.4f} ({s_pre:.1f} s)")
    ft, s_ft, _ = timed_train(specs / "digits_finetune.dls", work / "finetune")
    (specs / "digits_scratch.dls").write_text(SCRATCH)
    sc, s_sc, _ = timed_train(specs / "digits_scratch.dls", work / "scratch")
    res = {"pretrain_accuracy": pre.test["accuracy"], "finetune_accuracy": ft.test["accuracy"],
           "finetune_macro_f1": ft.test["macro_f1"], "scratch_accuracy": sc.test["accuracy"],
           "scratch_macro_f1": sc.test["macro_f1"], "finetune_seconds": round(s_ft, 1), "scratch_seconds": round(s_sc, 1)}
    print(f"transfer: 5–9 with 20 images per class: fine-tuned {ft.test['accuracy']:.4f} "
          f"(macro F1 {ft.test['macro_f1']:.4f}) vs from scratch {sc.test['accuracy']:.4f} "
          f"(macro F1 {sc.test['macro_f1']:.4f})")
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
