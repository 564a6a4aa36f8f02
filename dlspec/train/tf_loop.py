"""The TensorFlow trainer behind `dlspec train --backend tf`: a recipe and a lowered graph in, a run
folder out — the same folder the PyTorch trainer writes (canonical safetensors weights, metrics,
curves, checkpoints), so `dlspec evaluate`, `predict` and `export` work on it unchanged.

The model is the Keras model of `dlspec.backends.keras.build_model` (NCHW inputs, like the torch
module), started from PyTorch's default initialization (`dlspec.init.init_weights`). Training is a
custom step (`tf.GradientTape` in a `tf.function`) rather than `model.fit`, because the recipe's
semantics are PyTorch's: its optimizers (`tf_optim`: Keras' differ in epsilon placement, momentum
with a changing rate, L2-coupled weight decay), its schedules (`tf_schedules`: per epoch, one-cycle
per step, with momentum cycling), its losses (`tf_losses`), L1/L2 penalties on weight matrices,
clipping of the global gradient (norm or value), NaN checks before the update, and metrics from
`dlspec/train/metrics.py` on the outputs of the training steps.

Determinism and resume: the shuffling of each epoch is a numpy permutation seeded with
(seed, epoch); a checkpoint holds every Keras variable (weights, batch-norm statistics, dropout
seed states), the optimizer slots and step counts, the loss scale, and the schedule, early-stop and
plateau state, so `--resume` continues exactly. Nothing is pickled: tensors go to safetensors,
everything else to JSON.
"""

from __future__ import annotations

import json
import math
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import error
from ..ir.graph import Graph
from ..ir.training import ClipNorm, TrainConfig
from .loop import Outcome, Stepper, losses_by_output, summarize
from .run import (
    GRAPH,
    MODEL_PY,
    ReadOnlyLog,
    RunLog,
    atomic_write_text,
    commit_checkpoint,
    weights_files,
    write_config,
)
from .tf_schedules import LrSchedule
from .torch_recipe import OPTIMIZERS

# ---- entry point -------------------------------------------------------------------------------


def train_tf(spec: Path, graph: Graph, cfg: TrainConfig, bundle: Any, run: Path, resume: bool = False,
             progress: bool = True, echo=print, nproc: int = 1, nnodes: int = 1,
             node_rank: int | None = None, sync_bn: bool = False, data_files: dict | None = None,
             tensorboard: Path | None = None) -> Outcome:
    """Train `graph` with TensorFlow into the run folder `run` (what `dlspec train --backend tf` does);
    `tensorboard`: a folder for TensorBoard events (`train/tensorboard.py`)."""
    from . import tf_runtime as rt

    if nproc < 1 or nnodes < 1:
        raise error("E907", f"--nproc and --nnodes must be at least 1; got {nproc} and {nnodes}")
    # CPU replicas are logical devices, which must exist before TensorFlow's runtime starts
    tf = rt.import_tf(logical_cpus=nproc if cfg.device not in ("gpu", "cuda", "mps") else 1)
    device = rt.pick_device(cfg.device)
    if nproc > 1 and device == "/CPU:0":
        tf = rt.import_tf(logical_cpus=nproc)  # checks that the devices are there
    strategy, replicas, chief = rt.make_strategy(device, nproc, nnodes, node_rank)
    folder = run
    if not chief:  # other workers of a multi-machine run write into a scratch folder
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="dlspec-worker-"))
    folder.mkdir(parents=True, exist_ok=True)
    keras_mod = _keras_backend()
    if not resume and chief:
        write_config(folder, spec, cfg, "tf", device if strategy is None else f"{replicas} replicas "
                     f"({type(strategy).__name__})", bundle.description, prep=bundle.prep, tensorflow=tf.__version__,
                     data_files=data_files or {})
        atomic_write_text(folder / GRAPH, graph.model_dump_json(indent=1))
        atomic_write_text(folder / MODEL_PY, keras_mod.generate(graph))
    where = device if strategy is None else f"{replicas} replicas"
    echo(f"training {graph.name} on {bundle.description}; TensorFlow {tf.__version__}, {where}; run folder {run}")
    trainer = Trainer(graph, cfg, bundle, folder, device, strategy=strategy, replicas=replicas, progress=progress,
                      echo=echo, write=chief)
    if sync_bn and strategy is not None:
        # Keras' batch-norm reads `synchronized` when called: statistics of the global batch
        import keras

        n = 0
        for layer in trainer.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
                n += 1
        echo(f"--sync-bn: {n} batch-norm layer(s) normalize over the global batch")
    if chief:
        from .tensorboard import attach

        attach(trainer, tensorboard, graph)
    if resume:  # every worker restores from the run folder (on a shared file system across machines)
        done = trainer.restore(run)
        echo(f"resuming after epoch {done}")
    try:
        outcome = trainer.fit()
    except KeyboardInterrupt:
        last = trainer.log.records[-1]["epoch"] if trainer.log.records else 0
        raise error("E634", f"interrupted during epoch {last + 1}; checkpoints up to epoch {last} are intact",
                         hint=f"continue with: dlspec train {spec} --backend tf --out {run} --resume") from None
    finally:
        if not chief:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    if not chief:
        echo(f"this worker's part is done; the chief worker writes the run folder {run} on its machine")
    outcome.run = run
    return outcome


def _keras_backend():
    try:
        from ..backends import keras as keras_mod
    except ImportError as exc:
        raise error("E682", f"the Keras backend cannot be imported ({exc})",
                         hint="pip install 'dlspec[tf]'") from None
    return keras_mod


# ---- the model's variables and the IR's parameters -----------------------------------------------


def variable_owners(model, graph: Graph, keras_mod) -> list[set[str]]:
    """For each of `model.variables`, the IR parameter paths it holds (empty for Keras' own state,
    such as dropout seeds). Found by filling each variable with its own number and reading the
    canonical weights back, so it holds whatever layout conversion the Keras backend applies."""
    variables = list(model.variables)
    saved = [v.numpy() for v in variables]
    floats = [i for i, v in enumerate(variables) if np.issubdtype(saved[i].dtype, np.floating)]
    try:
        for i in floats:
            variables[i].assign(np.full(saved[i].shape, i + 1, dtype=saved[i].dtype))
        canon = keras_mod.canonical_weights(model, graph)
    finally:
        for v, s in zip(variables, saved):
            v.assign(s)
    owners: list[set[str]] = [set() for _ in variables]
    for path, arr in canon.items():
        for val in np.unique(np.asarray(arr, dtype=np.float64)):
            i = int(round(val)) - 1
            if val == i + 1 and 0 <= i < len(variables):
                owners[i].add(path)
    return owners


def _matches(paths: set[str], patterns) -> bool:
    return any(fnmatchcase(p, pt) or fnmatchcase(p.rsplit(".", 1)[0], pt) for p in paths for pt in patterns)


# ---- the trainer --------------------------------------------------------------------------------


class Trainer(Stepper):
    """The TensorFlow stepper of a supervised recipe; `fit()` runs the one epoch loop (`loop.py`)."""

    no_checkpoint_hint = ("run without --resume to start afresh (across machines, every worker needs the "
                          "run folder on a shared file system)")

    def __init__(self, graph: Graph, cfg: TrainConfig, bundle: Any, run: Path, device: str, strategy=None,
                 replicas: int = 1, progress: bool = True, echo=print, write: bool = True):
        import keras
        import tensorflow as tf

        from . import tf_losses

        self.tf = tf
        self.graph, self.cfg, self.bundle, self.run = graph, cfg, bundle, run
        self.device, self.strategy, self.replicas = device, strategy, replicas
        self.progress, self.echo, self.write = progress, echo, write
        self.seed = cfg.seed
        self.outputs = [o.name for o in graph.outputs]
        self.keras_mod = _keras_backend()
        by_output = losses_by_output(cfg, self.outputs)
        self.losses = {k: tf_losses.make_loss(by_output[k]) for k in self.outputs}
        self.loss_weights = {k: float(cfg.loss_weights.get(k, 1.0)) for k in self.losses}
        keras.utils.set_random_seed(cfg.seed)
        policy = {"fp32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[cfg.precision]
        previous = keras.mixed_precision.global_policy().name
        try:
            if policy:
                keras.mixed_precision.set_global_policy(policy)
            with self._scope():
                self.model = self.keras_mod.build_model(graph)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        self.owners = variable_owners(self.model, graph, self.keras_mod)
        self._initial_weights()
        params = {p.path: p for p in graph.params()}
        self.params = params
        variables = list(self.model.variables)
        self.all_vars = variables
        # Freezing is the optimizer's business, as in PyTorch: a frozen layer still runs in training
        # mode (batch-norm on batch statistics), it only gets no updates. Keras would switch a
        # non-trainable batch-norm to inference mode, so every layer stays trainable for Keras.
        for layer in self.model.layers:
            layer.trainable = True
        is_param = [bool(o) and not any(params[p].buffer for p in o) for o in self.owners]
        self.trainable_idx = [i for i in range(len(variables))
                              if is_param[i] and all(params[p].trainable for p in self.owners[i])]
        self.frozen_idx = [i for i in range(len(variables)) if is_param[i] and i not in self.trainable_idx]
        self.penalized = {i for i, o in enumerate(self.owners) if o and all(len(params[p].shape) >= 2 for p in o)}
        self.train_data = bundle.train
        self.val_data, self.test_data = bundle.val, bundle.test
        n = len(self.train_data)
        # an optimizer step takes `accumulate` batches; the schedule counts optimizer steps (as Caffe's iter_size)
        self.batches_per_epoch = max(1, math.ceil(n / cfg.batch))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accumulate)
        groups, base_lrs = self._groups(self.trainable_idx)
        self.schedule = LrSchedule(cfg.schedule, base_lrs, cfg.epochs, self.steps_per_epoch)
        from .tf_optim import TorchRules

        with self._scope():
            self.opt = TorchRules(cfg.optimizer, [variables[i] for i in self.trainable_idx], groups, base_lrs,
                                  self._decays(self.trainable_idx))
            self.loss_scale = tf.Variable(2.0 ** 16 if cfg.precision == "fp16" else 1.0, trainable=False, dtype=tf.float32)
            self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.cycles_momentum = self.schedule.one_cycle and OPTIMIZERS[cfg.optimizer.type].cycles_momentum
        self.log = RunLog(run) if write else ReadOnlyLog(run)
        self.title = f"{graph.name} — {cfg.name} (tf)"
        self._train_step = None
        self._eval_step = None

    # -- setup
    def _scope(self):
        if self.strategy is not None:
            return self.strategy.scope()
        return self.tf.device(self.device)

    def _initial_weights(self) -> None:
        """PyTorch's default initialization (so recipes tuned on torch train alike), then the base
        model's weights for a derived model."""
        try:
            from ..init import init_weights
        except ImportError:  # Keras' own initializers
            arrays = None
        else:
            arrays = init_weights(self.graph, seed=self.seed)
        if self.graph.base_weights:
            from ..weights import load_graph_weights

            path = Path(self.graph.base_weights)
            if not path.is_file():
                raise error("E509", f"`{self.graph.name}` starts from weights {path}, which do not exist",
                                 hint="train the base model first (its run folder holds best.safetensors)")
            base = load_graph_weights(self.graph, path, strict=False, skip=tuple(self.graph.replaced))
            arrays = dict(arrays or self.keras_mod.canonical_weights(self.model, self.graph))
            arrays.update(base)
            fresh = sorted({k.rsplit(".", 1)[0] for k in arrays if k not in base})
            if fresh:
                self.echo(f"starting from {path}; fresh weights for: {', '.join(fresh)}")
        if arrays is not None:
            self.keras_mod.set_weights(self.model, self.graph, arrays)

    def _groups(self, idx: list[int]) -> tuple[list[int], list[float]]:
        """Parameter groups as torch's trainer forms them: one per distinct rate of `lr_groups`,
        in the order of the parameters."""
        base = self.cfg.optimizer.lr
        order = {p.path: n for n, p in enumerate(self.graph.params())}
        rates: dict[float, int] = {}
        groups = []
        for i in sorted(idx, key=lambda i: min(order[p] for p in self.owners[i])):
            lr = base
            for pat, glr in self.cfg.lr_groups.items():
                if _matches(self.owners[i], [pat]):
                    lr = glr
                    break
            rates.setdefault(lr, len(rates))
        for i in idx:
            lr = base
            for pat, glr in self.cfg.lr_groups.items():
                if _matches(self.owners[i], [pat]):
                    lr = glr
                    break
            groups.append(rates[lr])
        return groups, list(rates)

    def _decays(self, idx: list[int]) -> list[float | None]:
        """The weight decay of each variable from `decay_groups` (first match), None for the optimizer's."""
        out: list[float | None] = []
        for i in idx:
            out.append(next((wd for pat, wd in self.cfg.decay_groups.items() if _matches(self.owners[i], [pat])), None))
        return out

    # -- the compiled steps
    def _forward(self, xs, training: bool) -> dict:
        tf = self.tf
        out = self.model(xs[0] if len(xs) == 1 else list(xs), training=training)
        if not isinstance(out, dict):
            out = {self.outputs[0]: out}
        return {k: tf.cast(out[k], tf.float32) for k in self.outputs}

    def _loss_parts(self, outs: dict, ys: dict, reduce_den) -> tuple[Any, dict]:
        tf = self.tf
        total = tf.constant(0.0)
        parts = {}
        for k, f in self.losses.items():
            num, den = f(outs[k], ys[k])
            part = num / reduce_den(tf.cast(den, tf.float32))
            parts[k] = part
            total = total + self.loss_weights[k] * part
        return total, parts

    def _penalty(self, variables: list) -> Any:
        tf = self.tf
        cfg = self.cfg
        pen = tf.constant(0.0)
        for i, v in zip(self.trainable_idx, variables):
            if i in self.penalized:
                w = tf.cast(v, tf.float32)
                if cfg.l1:
                    pen = pen + cfg.l1 * tf.reduce_sum(tf.abs(w))
                if cfg.l2:
                    pen = pen + cfg.l2 * tf.reduce_sum(tf.square(w))
        return pen

    def _clip(self, grads: list) -> list:
        tf = self.tf
        clip = self.cfg.clip_grad
        if clip is None:
            return grads
        if isinstance(clip, ClipNorm):  # torch.nn.utils.clip_grad_norm_
            total = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads if g is not None]))
            coef = tf.minimum(clip.max / (total + 1e-6), 1.0)
            return [None if g is None else g * coef for g in grads]
        return [None if g is None else tf.clip_by_value(g, -clip.max, clip.max) for g in grads]

    def _build_steps(self) -> None:
        tf = self.tf
        variables = [self.all_vars[i] for i in self.trainable_idx]
        fp16 = self.cfg.precision == "fp16"
        penalize = bool(self.cfg.l1 or self.cfg.l2) and any(i in self.penalized for i in self.trainable_idx)
        replicas = float(self.replicas)
        strategy = self.strategy
        from ..jit import tf_step

        # --compile: XLA for the steps of one replica (falls back to a plain tf.function, W931)
        jit = bool(self.cfg.compile) and strategy is None

        def replica_grads(xs, ys):
            ctx = tf.distribute.get_replica_context()

            def reduce_den(d):
                return ctx.all_reduce(tf.distribute.ReduceOp.SUM, d) if strategy is not None else d

            with tf.GradientTape() as tape:
                outs = self._forward(xs, training=True)
                loss, parts = self._loss_parts(outs, ys, reduce_den)
                if penalize:
                    loss = loss + self._penalty(variables) / replicas
                scaled = loss * self.loss_scale if fp16 else loss
            grads = tape.gradient(scaled, variables)
            grads = [None if g is None else tf.cast(g, tf.float32) for g in grads]
            return loss, parts, grads, outs

        def update(loss, grads):
            finite = tf.math.is_finite(loss)
            if fp16:
                grads = [None if g is None else g / self.loss_scale for g in grads]
                grads_ok = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
            else:
                grads_ok = tf.constant(True)
            grads = self._clip(grads)

            def apply():
                self.opt.apply(grads)
                return tf.constant(True)

            def skip():
                return tf.constant(False)

            applied = tf.cond(tf.logical_and(finite, grads_ok), apply, skip)
            if fp16:  # dynamic loss scaling with torch.amp.GradScaler's defaults
                def grow():
                    self.good_steps.assign_add(1)
                    return tf.cond(self.good_steps >= 2000,
                                   lambda: tf.group(self.loss_scale.assign(self.loss_scale * 2.0), self.good_steps.assign(0)),
                                   lambda: tf.no_op())

                def back_off():
                    return tf.group(self.loss_scale.assign(self.loss_scale * 0.5), self.good_steps.assign(0))

                tf.cond(tf.logical_and(finite, tf.logical_not(grads_ok)), back_off,
                        lambda: tf.cond(finite, grow, lambda: tf.no_op()))
            return applied

        if strategy is None:
            def gradients(xs, ys):
                return replica_grads(xs, ys)
        else:
            def gradients(xs, ys):
                loss, parts, grads, outs = strategy.run(replica_grads, args=(xs, ys))
                SUM = tf.distribute.ReduceOp.SUM
                loss = strategy.reduce(SUM, loss, axis=None)
                parts = {k: strategy.reduce(SUM, v, axis=None) for k, v in parts.items()}
                grads = [None if g is None else strategy.reduce(SUM, g, axis=None) for g in grads]
                outs = {k: strategy.gather(v, axis=0) for k, v in outs.items()}
                return loss, parts, grads, outs

        if self.cfg.accumulate == 1:
            def step(xs, ys):
                loss, parts, grads, outs = gradients(xs, ys)
                update(loss, grads)
                return loss, parts, outs
        else:  # gradient accumulation: `accumulate` batches, each weighted by its share of the step's examples
            with self._scope():
                self.acc = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name="grad_sum") for v in variables]

            def add(xs, ys, weight):
                loss, parts, grads, outs = gradients(xs, ys)
                for a, g in zip(self.acc, grads):
                    if g is not None:
                        a.assign_add(g * weight)
                return loss, parts, outs

            def step(xs, ys, weight):
                loss, parts, outs = add(xs, ys, weight)
                update(loss, [tf.identity(a) for a in self.acc])
                for a in self.acc:
                    a.assign(tf.zeros_like(a))
                return loss, parts, outs

            self._add_step = tf_step(tf, add, jit, self.echo)

        def evaluate(xs, ys):
            outs = self._forward(xs, training=False)
            loss, parts = self._loss_parts(outs, ys, lambda d: d)
            if penalize:
                loss = loss + self._penalty(variables)
            return loss, parts, outs

        self._train_step = tf_step(tf, step, jit, self.echo)
        self._eval_step = tf_step(tf, evaluate, jit, self.echo)

    # -- data
    def _targets(self, y: Any) -> dict:
        return y if isinstance(y, dict) else {self.outputs[0]: y}

    def _order(self, n: int, epoch: int) -> np.ndarray:
        if getattr(self.cfg.data, "shuffle", True):
            return np.random.default_rng(self.seed * 100_003 + epoch).permutation(n)
        return np.arange(n)

    def _feed(self, split: Any, idx: np.ndarray):
        """Model inputs and targets of the examples `idx`: tensors, or per-replica values (the
        global batch cut into consecutive shards, one per replica)."""
        xs = [a[idx] for a in split.x]
        ys = {k: v[idx] for k, v in self._targets(split.y).items()}
        if self.strategy is None:
            return tuple(xs), ys
        bounds = np.linspace(0, len(idx), self.replicas + 1).round().astype(int)

        def shard(ctx):
            r = ctx.replica_id_in_sync_group
            a, b = bounds[r], bounds[r + 1]
            return tuple(x[a:b] for x in xs), {k: v[a:b] for k, v in ys.items()}

        return self.strategy.experimental_distribute_values_from_function(shard)

    # -- one pass
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        if self._train_step is None:
            self._build_steps()
        n = len(self.train_data)
        order = self._order(n, epoch)
        total, count = 0.0, 0
        parts_sum = {k: 0.0 for k in self.losses}
        seen: dict[str, list] = {k: [] for k in self.outputs}
        targets: dict[str, list] = {k: [] for k in self.outputs}
        want_metrics = bool(cfg.metrics)
        bar = self._bar(epoch)
        skipped_small = False
        for s, start in enumerate(range(0, n, cfg.batch)):
            idx = order[start:start + cfg.batch]
            acc = cfg.accumulate
            self._set_rates(epoch, s // acc)
            if len(idx) < self.replicas:  # a last batch too small to give every replica an example
                skipped_small = True
                continue
            fn, extra = self._train_step, ()
            if acc > 1:  # this batch's share of its optimizer step's examples; the step's last batch updates
                w = s // acc
                lo, hi = w * acc * cfg.batch, min((w + 1) * acc * cfg.batch, n)
                extra = (self.tf.constant(len(idx) / (hi - lo), self.tf.float32),)
                if (s + 1) % acc and start + cfg.batch < n:
                    fn = self._add_step
            if self.strategy is None:
                xs, ys = self._feed(self.train_data, idx)
                with self.tf.device(self.device):
                    loss, parts, outs = fn(xs, ys, *extra)
            else:
                loss, parts, outs = fn(*self._feed(self.train_data, idx), *extra)
            value = float(loss)
            if not math.isfinite(value):
                raise error("E630", f"the loss became {value} at batch {s + 1}/{self.batches_per_epoch} of epoch "
                                 f"{epoch}; training stopped before that batch's update",
                                 hint="lower the learning rate, add gradient clipping (clip_grad = norm(1.0)), "
                                      "or check the data for NaNs; the last good checkpoint is kept")
            b = len(idx)
            total += value * b
            count += b
            for k, v in parts.items():
                parts_sum[k] += float(v) * b
            if want_metrics:
                for k in self.outputs:
                    seen[k].append(outs[k])
                    targets[k].append(self._targets(self.train_data.y)[k][idx])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}")
        if bar is not None:
            bar.close()
        if cfg.accumulate > 1 and skipped_small:  # a skipped last batch ended its step: nothing carries over
            for a in self.acc:
                a.assign(self.tf.zeros_like(a))
        if skipped_small and epoch == self.start_epoch:
            self.echo(f"note: the last batch of each epoch has fewer examples than the {self.replicas} replicas and is skipped")
        self._set_rates(epoch, self.steps_per_epoch)  # what torch's optimizer holds after the epoch
        outs_np = {k: [np.asarray(o) for o in v] for k, v in seen.items()}
        return self._summarize(total, count, parts_sum, outs_np, targets)

    def _set_rates(self, epoch: int, step: int) -> None:
        if self.schedule.per_step:
            t = (epoch - 1) * self.steps_per_epoch + step
            self.opt.set_rates(self.schedule.lrs(epoch, step),
                               self.schedule.momentum(t) if self.cycles_momentum else None)
        elif step == 0:
            self.opt.set_rates(self.schedule.lrs(epoch))

    def _summarize(self, total: float, count: int, parts_sum: dict[str, float], outs: dict[str, list],
                   targets: dict[str, list]) -> dict[str, float]:
        return summarize(self.cfg, self.outputs, self.bundle.num_classes, total, count, parts_sum, outs, targets)

    # -- what the loop asks between passes
    @property
    def writes(self) -> bool:
        return self.write

    def current_lr(self, epoch: int) -> float:
        # the rate the epoch trained with (one-cycle: the rate after its last step), as torch logs it
        return self.schedule.lrs(epoch, self.steps_per_epoch if self.schedule.per_step else 0)[0]

    def end_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        self.schedule.after_epoch(epoch, logs)

    def _bar(self, epoch: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.batches_per_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False, unit="batch")

    def evaluate(self, split: Any) -> dict[str, float]:
        if self._eval_step is None:
            self._build_steps()
        outs: dict[str, list] = {k: [] for k in self.outputs}
        total, count = 0.0, 0
        parts_sum = {k: 0.0 for k in self.losses}
        n = len(split)
        step = max(self.cfg.batch, 256)
        ys_all = self._targets(split.y)
        # with a strategy: in cross-replica context, on the device of the first replica's variables
        device = self.device if self.strategy is None else self.strategy.extended.worker_devices[0]
        with self.tf.device(device):
            for start in range(0, n, step):
                idx = np.arange(start, min(start + step, n))
                xs = tuple(a[idx] for a in split.x)
                ys = {k: v[idx] for k, v in ys_all.items()}
                loss, parts, o = self._eval_step(xs, ys)
                total += float(loss) * len(idx)
                count += len(idx)
                for k, v in parts.items():
                    parts_sum[k] += float(v) * len(idx)
                for k in self.outputs:
                    outs[k].append(np.asarray(o[k]))
        return self._summarize(total, count, parts_sum, outs, {k: [ys_all[k]] for k in self.outputs})

    # -- weights and checkpoints
    def canonical(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v) for k, v in self.keras_mod.canonical_weights(self.model, self.graph).items()}

    def save_weights(self, which: str) -> None:
        from ..weights import save_numpy

        if self.write:
            (path,) = weights_files(self.run, "supervised", which)
            save_numpy(self.canonical(), path, metadata={"model": self.graph.name, "layout": "canonical-torch",
                                                          "trained_with": "tf"})

    def load_weights(self, which: str) -> None:
        from ..weights import load_graph_weights

        (path,) = weights_files(self.run, "supervised", which)
        self.keras_mod.set_weights(self.model, self.graph, load_graph_weights(self.graph, path))

    def save_checkpoint(self, epoch: int, loop_state: dict[str, Any]) -> None:
        from safetensors.numpy import save_file

        if not self.write:
            return

        def write(tmp: Path) -> None:
            save_file(self.canonical(), str(tmp / "model.safetensors"), metadata={"layout": "canonical-torch"})
            tensors = {f"keras.{i}": np.ascontiguousarray(v.numpy()) for i, v in enumerate(self.all_vars)}
            tensors.update({k: np.ascontiguousarray(v) for k, v in self.opt.state_tensors().items()})
            tensors["loss_scale"] = np.array([self.loss_scale.numpy()], np.float32)
            tensors["good_steps"] = np.array([self.good_steps.numpy()], np.int64)
            save_file(tensors, str(tmp / "state.safetensors"))
            state = {
                "backend": "tf",
                "epoch": epoch,
                "trainable": self.trainable_idx,
                "groups": self.opt.groups,
                "rates": self.opt.rates(),
                "schedule": self.schedule.state(),
                **loop_state,
            }
            (tmp / "state.json").write_text(json.dumps(state, default=_json_default))

        commit_checkpoint(self.run, epoch, write, self.cfg.checkpoint.keep)

    def load_checkpoint(self, last: Path, state: dict[str, Any]) -> None:
        """The state of the checkpoint folder `last` (the loop has replayed its unfreezing)."""
        from safetensors.numpy import load_file

        if state.get("backend") != "tf":
            raise error("E683", f"checkpoint {last} was written by the {state.get('backend', 'torch')} trainer",
                        hint="resume with the backend that trained it")
        tensors = load_file(str(last / "state.safetensors"))
        if self.trainable_idx != state["trainable"]:
            raise ValueError("its trainable variables differ from this model's")
        for i, v in enumerate(self.all_vars):
            v.assign(tensors[f"keras.{i}"])
        self.opt.load_state_tensors(tensors)
        self.loss_scale.assign(float(tensors["loss_scale"][0]))
        self.good_steps.assign(int(tensors["good_steps"][0]))
        self.schedule.load(state["schedule"])

    def unfreeze(self, epoch: int, patterns: tuple[str, ...]) -> int:
        newly = [i for i in self.frozen_idx if _matches(self.owners[i], patterns)]
        if not newly:
            return 0
        self.frozen_idx = [i for i in self.frozen_idx if i not in newly]
        self.trainable_idx = self.trainable_idx + newly
        with self._scope():
            g = self.opt.add_group(self.schedule.base_lrs[0])
            self.opt.add([self.all_vars[i] for i in newly], [g] * len(newly), self._decays(newly))
        self.schedule.add_group(self.schedule.base_lrs[0])
        self._train_step = self._eval_step = None  # the compiled step trains a fixed set of variables
        return len(newly)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (set, tuple)):
        return list(v)
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")
