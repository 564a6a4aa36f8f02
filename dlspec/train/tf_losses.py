"""The losses of `dlspec train`, in TensorFlow, defined as PyTorch's `torch.nn.functional` ones.

Every loss is returned as a pair `(numerator, denominator)` with loss = numerator / denominator,
where the denominator never depends on the weights: the number of elements for means, the sum of
the class weights of the counted targets for weighted cross-entropy, the batch size for
`kl_div(batchmean)` and Dice. Split over several replicas, each replica divides its numerator by
the denominator summed over all replicas, so the summed gradients are exactly the gradient of the
loss of the whole batch — whatever the loss, class weights and ignored targets included.

Conventions follow the PyTorch trainer (`dlspec/train/torch_losses.py`): cross-entropy and
NLL take the class axis 1 (or the last one for `[N, T, C]` outputs with `[N, T]` targets);
label smoothing and class weights combine as in `F.cross_entropy`; `bce` clamps the logs at
-100 as torch does; Dice is soft Dice on sigmoid (one channel, target of the output's shape) or
softmax (class axis 1) outputs.
"""

from __future__ import annotations

from typing import Any

from ..errors import error
from ..ir.training import BCE, MAE, MSE, NLL, BCEWithLogits, CrossEntropy, Dice, Huber, KLDiv


def _class_last(out, y):
    """Outputs with the class axis last, matching targets of rank out.rank - 1."""
    import tensorflow as tf

    r, ry = out.shape.rank, y.shape.rank
    if r > 2 and not (r == ry + 1 and _same_prefix(out.shape, y.shape)):
        perm = [0, *range(2, r), 1]  # [N, C, ...] → [N, ..., C]
        out = tf.transpose(out, perm)
    return out


def _same_prefix(a, b) -> bool:
    for x, z in zip(a, b):
        if x is not None and z is not None and x != z:
            return False
    return True


def _weighted_nll(logp, y, class_weights, ignore_index: int, smoothing: float):
    import tensorflow as tf

    y = tf.cast(y, tf.int32)
    ignored = tf.equal(y, ignore_index)
    y_safe = tf.where(ignored, tf.zeros_like(y), y)
    picked = -tf.gather(logp, y_safe, axis=-1, batch_dims=y.shape.rank)
    keep = tf.cast(tf.logical_not(ignored), logp.dtype)
    if class_weights is not None:
        w_table = tf.constant(class_weights, dtype=logp.dtype)
        w = tf.gather(w_table, y_safe) * keep
    else:
        w = keep
    num = tf.reduce_sum(w * picked)
    if smoothing:
        classes = logp.shape[-1]
        smooth = -tf.reduce_sum(logp * w_table, axis=-1) if class_weights is not None else -tf.reduce_sum(logp, axis=-1)
        num = (1.0 - smoothing) * num + (smoothing / classes) * tf.reduce_sum(smooth * keep)
    return num, tf.reduce_sum(w)


def make_loss(cfg: Any):
    """A function (output, target) → (numerator, denominator) for one output head."""
    import tensorflow as tf

    def elements(x):
        return tf.cast(tf.size(x), tf.float32)

    def like(out, y):
        return tf.reshape(tf.cast(y, out.dtype), tf.shape(out))

    if isinstance(cfg, CrossEntropy):
        def ce(out, y):
            logits = _class_last(out, y)
            return _weighted_nll(tf.nn.log_softmax(logits, axis=-1), y, cfg.class_weights, cfg.ignore_index,
                                 cfg.label_smoothing)
        return ce
    if isinstance(cfg, NLL):
        def nll(out, y):
            return _weighted_nll(_class_last(out, y), y, cfg.class_weights, -100, 0.0)
        return nll
    if isinstance(cfg, BCEWithLogits):
        def bce_logits(out, y):
            t = like(out, y)
            log_term = tf.math.log1p(tf.exp(-tf.abs(out))) + tf.maximum(-out, 0.0)
            if cfg.pos_weight is not None:
                el = (1.0 - t) * out + (1.0 + (cfg.pos_weight - 1.0) * t) * log_term
            else:
                el = (1.0 - t) * out + log_term
            return tf.reduce_sum(el), elements(el)
        return bce_logits
    if isinstance(cfg, BCE):
        pos = 1.0 if cfg.pos_weight is None else cfg.pos_weight

        def bce(out, y):
            t = like(out, y)
            el = -(pos * t * tf.maximum(tf.math.log(out), -100.0)
                   + (1.0 - t) * tf.maximum(tf.math.log(1.0 - out), -100.0))
            return tf.reduce_sum(el), elements(el)
        return bce
    if isinstance(cfg, MSE):
        return lambda out, y: (tf.reduce_sum(tf.square(out - like(out, y))), elements(out))
    if isinstance(cfg, MAE):
        return lambda out, y: (tf.reduce_sum(tf.abs(out - like(out, y))), elements(out))
    if isinstance(cfg, Huber):
        def huber(out, y):
            d = tf.abs(out - like(out, y))
            el = tf.where(d < cfg.delta, 0.5 * d * d, cfg.delta * (d - 0.5 * cfg.delta))
            return tf.reduce_sum(el), elements(el)
        return huber
    if isinstance(cfg, KLDiv):
        def kl(out, y):
            t = tf.cast(y, out.dtype)
            el = tf.exp(t) * (t - out) if cfg.log_target else tf.math.xlogy(t, t) - t * out
            return tf.reduce_sum(el), tf.cast(tf.shape(out)[0], tf.float32)
        return kl
    if isinstance(cfg, Dice):
        def dice(out, y):
            if out.shape.rank == y.shape.rank and _same_prefix(out.shape[1:], y.shape[1:]):
                p, t = tf.sigmoid(out), tf.cast(y, out.dtype)
            else:
                p = tf.nn.softmax(out, axis=1)
                t = tf.one_hot(tf.cast(y, tf.int32), out.shape[1], dtype=out.dtype)
                t = tf.transpose(t, [0, t.shape.rank - 1, *range(1, t.shape.rank - 1)])
            axes = list(range(1, p.shape.rank))
            inter = tf.reduce_sum(p * t, axis=axes)
            score = (2.0 * inter + cfg.smooth) / (tf.reduce_sum(p, axis=axes) + tf.reduce_sum(t, axis=axes) + cfg.smooth)
            return tf.reduce_sum(1.0 - score), tf.cast(tf.shape(out)[0], tf.float32)
        return dice
    raise error("E402", f"loss {cfg.type} is not available on the tf backend")
