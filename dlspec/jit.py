"""Compiled training (`dlspec train --compile`, `compile = true` in a recipe) for the PyTorch
trainers: `torch.compile` of the model's forward, warmed up before the first epoch and never in
the way of a run.

* The trainer's `forward` becomes a `CompiledForward`: the compiled module while the compiler
  works, the plain module after a failure (W931, printed once, naming the exception; the run goes
  on eagerly, never a traceback).
* `warm_up` compiles before epoch 1, on the first training batch (forward and backward, in
  training mode, then one evaluation forward): its time is printed and recorded in config.json
  (`compile`), so the epochs' times are those of compiled steps. The warm-up changes nothing of
  the run: it runs under a forked random generator, its gradients are dropped and the batch-norm
  statistics it touched are put back.
* Weights and checkpoints are those of the plain module (`trainer.model`), never of the compiled
  wrapper, so they carry no `_orig_mod.` prefix and a compiled and an eager run resume each
  other's checkpoints.
"""

from __future__ import annotations

import time
from typing import Any


class CompiledForward:
    """`module`'s forward through `torch.compile`, falling back to `module` itself if compiling or
    running the compiled code fails."""

    def __init__(self, module: Any, echo=print, compile_fn: Any = None):
        import torch

        self.module = module
        self.echo = echo
        self.failed: str | None = None
        try:
            # dynamic batch size: one graph serves the full batches, the last partial one and the
            # evaluation batches, so nothing recompiles after the warm-up
            self.compiled = (compile_fn or (lambda m: torch.compile(m, dynamic=True)))(module)
        except Exception as exc:  # the compiler cannot even wrap the module
            self.compiled = None
            self.fall_back(exc)

    def fall_back(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            self.echo(f"warning W931: torch.compile failed ({self.failed}); training goes on without compiling")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                self.fall_back(exc)
        return self.module(*args, **kwargs)


def compiled(module: Any, echo=print) -> CompiledForward:
    return CompiledForward(module, echo)


def warm_up(trainer: Any, echo=print) -> float | None:
    """Compile a PyTorch trainer's forward (and its backward) on the first training batch before
    epoch 1; prints and records the time. None when the trainer does not compile."""
    fwd = getattr(trainer, "forward", None)
    if not isinstance(fwd, CompiledForward) or fwd.failed is not None:
        return None
    import torch

    model = trainer.model
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    data = trainer.train_data
    first = data.take(torch.arange(min(len(data), trainer.cfg.batch)))
    devices = [] if trainer.device.type != "cuda" else None
    t = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            with trainer._autocast():
                outs = trainer._outputs(first.x)
                loss, _ = trainer._loss(outs, trainer._targets(first.y))
            loss.backward()
            if fwd.failed is None:
                model.eval()
                with torch.no_grad(), trainer._autocast():
                    trainer._outputs(first.x)
    except Exception as exc:  # the compiled backward, or a failure the forward did not catch
        fwd.fall_back(exc)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.train(was_training)
    spent = time.perf_counter() - t
    if fwd.failed is None:
        echo(f"compile: warm-up {spent:.1f} s (torch.compile of the first batch's steps; not in the epoch times)")
    trainer.compile_warmup_s = spent
    run = getattr(trainer, "run", None)
    if run is not None and getattr(trainer, "writes", True):
        _record(run, {"warmup_s": round(spent, 3), "fell_back": fwd.failed})
    return spent


def _record(run: Any, value: dict) -> None:
    import json
    from pathlib import Path

    from .io import atomic_write_json

    path = Path(run) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(config, dict):
        config["compile"] = value
        atomic_write_json(path, config)


class XlaOrPlain:
    """A TensorFlow step compiled with XLA (`jit_compile=True`), or the same step as a plain
    `tf.function` once XLA fails (W931, printed once). XLA compiles a step before it runs any of
    it, so a failure leaves the variables as they were."""

    def __init__(self, xla: Any, plain: Any, echo=print):
        self.xla, self.plain, self.echo = xla, plain, echo
        self.failed: str | None = None
        self.warmup_s = 0.0
        self._first = True

    def __call__(self, *args: Any) -> Any:
        if self.failed is None:
            t = time.perf_counter()
            try:
                out = self.xla(*args)
            except Exception as exc:  # tf.errors.* (InvalidArgument, Unimplemented, ...) from the XLA compiler
                self.failed = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                self.echo(f"warning W931: XLA (jit_compile) failed ({self.failed}); training goes on without it")
            else:
                if self._first:
                    self._first = False
                    self.warmup_s = time.perf_counter() - t
                    self.echo(f"compile: XLA warm-up {self.warmup_s:.1f} s (the first step, compiled)")
                return out
        return self.plain(*args)


def tf_step(tf: Any, fn: Any, jit: bool, echo=print) -> Any:
    """`fn` as the tf trainer's step: a plain `tf.function`, or with `jit` an XLA-compiled one that
    falls back to it."""
    plain = tf.function(fn, reduce_retracing=True)
    if not jit:
        return plain
    return XlaOrPlain(tf.function(fn, reduce_retracing=True, jit_compile=True), plain, echo)
