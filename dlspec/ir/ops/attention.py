"""Attention: multi-head attention (self and cross, with a mask) and a transformer encoder layer.

Parameter names follow torch.nn.MultiheadAttention / TransformerEncoderLayer (canonical layout).
Mask convention: `true` (or 1) means *may attend*. Accepted mask shapes: [Lq, Lk],
[N, Lq, Lk], or a key padding mask [N, Lk].
"""

from __future__ import annotations

import math
from typing import Literal

from ..types import FLOAT_DTYPES
from .base import (
    AttrError,
    Attrs,
    Count,
    OpDef,
    ShapeError,
    affine_init,
    linear_init,
    numel,
    register,
    uniform,
)


class MhaAttrs(Attrs):
    heads: Count
    dropout: float = 0.0
    bias: bool = True
    causal: bool = False


def _check_mask(name: str, mask, n, lq, lk) -> None:
    allowed = [(lq, lk), (n, lq, lk), (n, lk)]
    if tuple(mask.shape) not in allowed:
        raise ShapeError(
            f"{name}: mask {mask.shape_str()} fits none of [Lq, Lk] = [{lq}, {lk}], [N, Lq, Lk] or [N, Lk]",
            code="E304",
        )
    if mask.dtype not in ("bool", *FLOAT_DTYPES):
        raise ShapeError(f"{name}: mask must be bool or float; got {mask.dtype}", code="E310")


@register
class MultiheadAttention(OpDef):
    name = "multihead_attention"
    category = "attention"
    summary = "Scaled dot-product attention with `heads` heads; key and value default to the query."
    Attrs = MhaAttrs
    positional = ("heads",)
    inputs = ("query", "key", "value", "mask")
    min_inputs = 1
    input_defaults = {"key": "query", "value": "key"}
    ranks = (3,)
    mask_input = "mask"

    def initial(self, a, name, shapes, rng):
        return attention_init(rng, name, shapes[name])

    def validate_attrs(self, a: MhaAttrs) -> None:
        if a.heads <= 0:
            raise AttrError("multihead_attention: heads must be positive")

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        q = ins[0]
        e = q.shape[2]
        if not isinstance(e, int):
            raise ShapeError(f"multihead_attention needs a known embedding size; got {e}", code="E307")
        if e % a.heads:
            raise ShapeError(
                f"multihead_attention: embedding size {e} is not divisible by {a.heads} heads",
                hint=f"choose heads among {[h for h in range(1, min(e, 16) + 1) if e % h == 0]}",
                code="E306",
            )
        k = ins[1] if len(ins) > 1 else q
        v = ins[2] if len(ins) > 2 else k
        for nm, t in (("key", k), ("value", v)):
            if t.rank != 3 or t.shape[2] != e or t.shape[0] != q.shape[0]:
                raise ShapeError(
                    f"multihead_attention: {nm} {t.shape_str()} must be [N, Lk, {e}] to match the query {q.shape_str()}",
                    hint="project it to the query's size with dense() first",
                    code="E304",
                )
        if k.shape[1] != v.shape[1]:
            raise ShapeError("multihead_attention: key and value lengths differ", code="E304")
        if len(ins) > 3:
            _check_mask(self.name, ins[3], q.shape[0], q.shape[1], k.shape[1])

    def infer(self, a, ins):
        return [ins[0]]

    def params(self, a, ins):
        e = ins[0].shape[2]
        p = {"in_proj_weight": (3 * e, e), "out_proj.weight": (e, e)}
        if a.bias:
            p["in_proj_bias"] = (3 * e,)
            p["out_proj.bias"] = (e,)
        return dict(sorted(p.items()))

    def flops(self, a, ins, outs):
        q = ins[0]
        k = ins[1] if len(ins) > 1 else q
        n, lq, e = q.shape
        lk = k.shape[1]
        proj = 2 * n * (lq * e * e + 2 * lk * e * e + lq * e * e)
        scores = 2 * n * lq * lk * e * 2
        return proj + scores


class EncoderAttrs(Attrs):
    heads: Count
    ff: Count = 2048
    dropout: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    norm_first: bool = False
    eps: float = 1e-5


@register
class TransformerEncoder(OpDef):
    name = "transformer_encoder"
    category = "attention"
    summary = "One transformer encoder layer (self-attention + feed-forward, residuals, layer norms), as torch.nn.TransformerEncoderLayer."
    Attrs = EncoderAttrs
    positional = ("heads",)
    inputs = ("x", "mask")
    min_inputs = 1
    ranks = (3,)
    mask_input = "mask"

    def initial(self, a, name, shapes, rng):
        shape = shapes[name]
        if name.startswith("self_attn."):
            return attention_init(rng, name.removeprefix("self_attn."), shape)
        if name.startswith(("norm1.", "norm2.")):
            return affine_init(name, shape)
        return linear_init(rng, shape, shapes[f"{name.split('.')[0]}.weight"])

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        x = ins[0]
        e = x.shape[2]
        if not isinstance(e, int) or e % a.heads:
            raise ShapeError(
                f"transformer_encoder: model size {e} is not divisible by {a.heads} heads", code="E306"
            )
        if len(ins) > 1:
            _check_mask(self.name, ins[1], x.shape[0], x.shape[1], x.shape[1])

    def params(self, a, ins):
        e = ins[0].shape[2]
        return {
            "self_attn.in_proj_weight": (3 * e, e),
            "self_attn.in_proj_bias": (3 * e,),
            "self_attn.out_proj.weight": (e, e),
            "self_attn.out_proj.bias": (e,),
            "linear1.weight": (a.ff, e),
            "linear1.bias": (a.ff,),
            "linear2.weight": (e, a.ff),
            "linear2.bias": (e,),
            "norm1.weight": (e,),
            "norm1.bias": (e,),
            "norm2.weight": (e,),
            "norm2.bias": (e,),
        }

    def flops(self, a, ins, outs):
        n, t, e = ins[0].shape
        attn = 2 * n * t * 4 * e * e + 4 * n * t * t * e
        ff = 2 * n * t * 2 * e * a.ff
        return attn + ff + 10 * numel(ins[0].shape)


def attention_init(rng, name: str, shape: tuple[int, ...]):
    """torch.nn.MultiheadAttention's reset: in_proj_weight Xavier-uniform, out_proj.weight as a
    linear layer's, both biases 0."""
    import numpy as np

    if name == "in_proj_weight":
        fan_out, fan_in = shape
        return uniform(rng, math.sqrt(6.0 / (fan_in + fan_out)), shape)
    if name == "out_proj.weight":
        return uniform(rng, 1.0 / math.sqrt(shape[1]), shape)
    return np.zeros(shape)
