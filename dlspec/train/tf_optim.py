"""PyTorch's optimizer update rules, written in TensorFlow, for the TensorFlow trainer.

Keras' optimizers are not PyTorch's with other names; mapping hyper-parameters alone would train
differently:

* `keras.optimizers.SGD` keeps `v = m·v − lr·g` (the rate inside the buffer): equal to torch's
  `buf = m·buf + g; p −= lr·buf` only while the rate is constant, and it has no `dampening`;
* `keras.optimizers.Adam` adds its epsilon to the bias-corrected `sqrt(v)` scaled by
  `sqrt(1 − β2^t)` (torch: `sqrt(v / (1 − β2^t)) + eps`), and has no L2-coupled weight decay
  (Keras' `weight_decay` is decoupled, which is AdamW's rule, not Adam's);
* `keras.optimizers.RMSprop` puts epsilon inside the square root (torch: outside) and its
  centered and momentum variants differ in the same way;
* `keras.optimizers.Adagrad` starts its accumulator at 0.1 (torch: 0) and has no `lr_decay`.

Keras' Adadelta is torch's rule, but it lacks L2-coupled weight decay, so it is written here too.

So the trainer applies torch's rules (`torch.optim.SGD/Adam/AdamW/RMSprop/Adagrad/Adadelta`,
single-tensor code path) itself: `weight_decay` is added to the gradient (L2, coupled) for SGD, Adam, RMSprop and
Adagrad and applied to the weights (decoupled) for AdamW, exactly as torch does. The learning
rate of each parameter group and the momentum / beta1 (which one-cycle changes every step) are
variables, so changing them never retraces a compiled step. `tests/test_train_tf.py` checks a few
steps of every optimizer against torch.optim on the same gradients.
"""

from __future__ import annotations

from typing import Any

from ..ir.training import SGD, Adadelta, Adagrad, Adam, AdamW, RMSprop


class TorchRules:
    """Optimizer state (slots, step counts, rates) for a list of variables, and the update.

    `groups[i]` is the parameter-group index of `variables[i]`; `lrs` the starting rate of each
    group; `decays[i]`, when given and not None, the weight decay of `variables[i]` in place of the
    optimizer's (a recipe's `decay_groups`). Create it under the distribution strategy's scope (its slots are mirrored like the
    weights); call `apply` in cross-replica context with the already reduced gradients."""

    def __init__(self, cfg: Any, variables: list, groups: list[int], lrs: list[float],
                 decays: list[float | None] | None = None):
        import tensorflow as tf

        self.cfg = cfg
        self.kind = cfg.type
        self.lr = [tf.Variable(float(x), dtype=tf.float32, trainable=False, name=f"lr_{i}") for i, x in enumerate(lrs)]
        first = cfg.betas[0] if isinstance(cfg, Adam | AdamW) else getattr(cfg, "momentum", 0.0)
        self.momentum = tf.Variable(float(first), dtype=tf.float32, trainable=False, name="momentum")
        self.variables: list = []
        self.groups: list[int] = []
        self.slots: list[dict[str, Any]] = []
        self.steps: list[Any] = []
        self.decays: list[float] = []
        self.add(variables, groups, decays)

    def add(self, variables: list, groups: list[int], decays: list[float | None] | None = None) -> None:
        """Track more variables (layers unfrozen during training); their state starts empty."""
        import tensorflow as tf

        for i, (v, g) in enumerate(zip(variables, groups)):
            self.variables.append(v)
            self.groups.append(g)
            own = decays[i] if decays is not None else None
            self.decays.append(float(getattr(self.cfg, "weight_decay", 0.0)) if own is None else float(own))
            slots = {}
            for name in self._slot_names():
                slots[name] = tf.Variable(tf.zeros(v.shape, dtype=tf.float32), trainable=False, name=name)
            self.slots.append(slots)
            self.steps.append(tf.Variable(0.0, dtype=tf.float32, trainable=False, name="step"))

    def add_group(self, lr: float) -> int:
        import tensorflow as tf

        self.lr.append(tf.Variable(float(lr), dtype=tf.float32, trainable=False, name=f"lr_{len(self.lr)}"))
        return len(self.lr) - 1

    def _slot_names(self) -> tuple[str, ...]:
        c = self.cfg
        if isinstance(c, SGD):
            return ("momentum_buffer",) if c.momentum else ()
        if isinstance(c, Adam | AdamW):
            return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if c.amsgrad else ())
        if isinstance(c, Adadelta):
            return ("square_avg", "acc_delta")
        if isinstance(c, RMSprop):
            return ("square_avg",) + (("grad_avg",) if c.centered else ()) + (("momentum_buffer",) if c.momentum else ())
        return ("sum",)

    def set_rates(self, lrs: list[float], momentum: float | None = None) -> None:
        for var, x in zip(self.lr, lrs):
            var.assign(float(x))
        if momentum is not None:
            self.momentum.assign(float(momentum))

    # -- the update (traced inside the compiled step)
    def apply(self, grads: list) -> None:
        for i, (v, g) in enumerate(zip(self.variables, grads)):
            if g is None:
                continue
            self._update(v, g, self.slots[i], self.steps[i], self.lr[self.groups[i]], self.decays[i])

    def _update(self, p, g, s: dict, step, lr, wd: float) -> None:
        import tensorflow as tf

        c = self.cfg
        g = tf.cast(g, tf.float32)
        step.assign_add(1.0)
        if isinstance(c, SGD):
            if wd:
                g = g + wd * p
            if c.momentum:
                buf = s["momentum_buffer"]
                m = self.momentum
                new = tf.where(step > 1.0, m * buf + (1.0 - c.dampening) * g, g)
                buf.assign(new)
                g = g + m * new if c.nesterov else new
            p.assign_sub(lr * g)
            return
        if isinstance(c, Adam | AdamW):
            b1, b2 = self.momentum, c.betas[1]
            if isinstance(c, AdamW):
                p.assign(p * (1.0 - lr * wd))
            elif wd:
                g = g + wd * p
            m, v = s["exp_avg"], s["exp_avg_sq"]
            m.assign(m + (g - m) * (1.0 - b1))  # torch: exp_avg.lerp_(grad, 1 - beta1)
            v.assign(v * b2 + (1.0 - b2) * g * g)
            bc1 = 1.0 - tf.pow(b1, step)
            bc2_sqrt = tf.sqrt(1.0 - tf.pow(tf.constant(b2, tf.float32), step))
            if c.amsgrad:
                vmax = s["max_exp_avg_sq"]
                vmax.assign(tf.maximum(vmax, v))
                denom = tf.sqrt(vmax) / bc2_sqrt + c.eps
            else:
                denom = tf.sqrt(v) / bc2_sqrt + c.eps
            p.assign_sub((lr / bc1) * (m / denom))
            return
        if isinstance(c, RMSprop):
            if wd:
                g = g + wd * p
            sq = s["square_avg"]
            sq.assign(sq * c.alpha + (1.0 - c.alpha) * g * g)
            if c.centered:
                ga = s["grad_avg"]
                ga.assign(ga + (g - ga) * (1.0 - c.alpha))
                avg = tf.sqrt(sq - ga * ga) + c.eps
            else:
                avg = tf.sqrt(sq) + c.eps
            if c.momentum:
                buf = s["momentum_buffer"]
                buf.assign(buf * self.momentum + g / avg)
                p.assign_sub(lr * buf)
            else:
                p.assign_sub(lr * g / avg)
            return
        if isinstance(c, Adagrad):
            if wd:
                g = g + wd * p
            clr = lr / (1.0 + (step - 1.0) * c.lr_decay)
            acc = s["sum"]
            acc.assign_add(g * g)
            p.assign_sub(clr * g / (tf.sqrt(acc) + c.eps))
            return
        if isinstance(c, Adadelta):  # torch.optim.Adadelta; Caffe's AdaDelta with rho = momentum, eps = delta
            if wd:
                g = g + wd * p
            sq, acc = s["square_avg"], s["acc_delta"]
            sq.assign(sq * c.rho + (1.0 - c.rho) * g * g)
            delta = tf.sqrt(acc + c.eps) / tf.sqrt(sq + c.eps) * g
            acc.assign(acc * c.rho + (1.0 - c.rho) * delta * delta)
            p.assign_sub(lr * delta)
            return
        raise TypeError(f"optimizer {c.type}")

    # -- checkpoints: tensors by index, no names that depend on how Keras numbered its layers
    def state_tensors(self) -> dict[str, Any]:
        out = {}
        for i, (slots, step) in enumerate(zip(self.slots, self.steps)):
            for name, var in slots.items():
                out[f"opt.{i}.{name}"] = var.numpy()
            out[f"opt.{i}.step"] = step.numpy().reshape(1)
        return out

    def load_state_tensors(self, tensors: dict[str, Any]) -> None:
        for i, (slots, step) in enumerate(zip(self.slots, self.steps)):
            for name, var in slots.items():
                var.assign(tensors[f"opt.{i}.{name}"])
            step.assign(float(tensors[f"opt.{i}.step"].reshape(())))

    def rates(self) -> dict[str, Any]:
        return {"lr": [float(v.numpy()) for v in self.lr], "momentum": float(self.momentum.numpy())}
