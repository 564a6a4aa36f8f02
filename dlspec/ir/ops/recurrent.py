"""Recurrent layers: rnn, lstm, gru. Input [N, T, F] (batch first), or [T, N, F] with
`time_major=true` (PyTorch's batch_first=False; the outputs' steps then come first too); PyTorch's
parameter layout.

Outputs: `output=sequence` gives every step [N, T, H·dirs]; `output=last` gives [N, H·dirs],
the final hidden state of the top layer (both directions concatenated). With
`return_state=true` the node also returns h_n (and c_n for lstm), each [layers·dirs, N, H].
Optional initial states h0 (and c0) have that same shape.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from ...limits import MAX_RNN_LAYERS
from .base import AttrError, Attrs, Count, OpDef, ShapeError, TensorType, numel, register, uniform


class RecurrentAttrs(Attrs):
    hidden: Count
    #: each layer has its own parameters (`weight_ih_l0`, ...): bounded so their table stays small
    layers: Annotated[int, Field(ge=1, le=MAX_RNN_LAYERS)] = 1
    bidirectional: bool = False
    dropout: float = 0.0
    bias: bool = True
    output: Literal["sequence", "last"] = "sequence"
    return_state: bool = False
    #: x is [T, N, F] and the sequence output [T, N, H·dirs] (PyTorch's batch_first=False)
    time_major: bool = False


class RnnAttrs(RecurrentAttrs):
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class _Recurrent(OpDef):
    category = "recurrent"
    Attrs = RecurrentAttrs
    positional = ("hidden",)
    inputs = ("x", "h0")
    min_inputs = 1
    ranks = (3,)
    gates = 1
    states = 1

    def initial(self, a, name, shapes, rng):
        return uniform(rng, 1.0 / math.sqrt(a.hidden), shapes[name])  # U(-1/√hidden, 1/√hidden)

    def validate_attrs(self, a) -> None:
        if a.hidden <= 0 or a.layers <= 0:
            raise AttrError(f"{self.name}: hidden size and layers must be positive")
        if not 0.0 <= a.dropout < 1.0:
            raise AttrError(f"{self.name}: dropout must be in [0, 1); got {a.dropout}")

    def num_outputs(self, a) -> int:
        return 1 + (self.states if a.return_state else 0)

    def check_inputs(self, a, ins):
        super().check_inputs(a, ins)
        x = ins[0]
        if not isinstance(x.shape[2], int):
            raise ShapeError(f"{self.name} needs a known feature size (axis 2); got {x.shape[2]}", code="E307")
        dirs = 2 if a.bidirectional else 1
        want = (a.layers * dirs, x.shape[1 if a.time_major else 0], a.hidden)
        for i, st in enumerate(ins[1:], start=1):
            if tuple(st.shape) != want:
                raise ShapeError(
                    f"{self.name}: initial state {self.inputs[i]} is {st.shape_str()}; expected "
                    f"[{', '.join(map(str, want))}] (layers·directions, batch, hidden)",
                    code="E304",
                )

    def infer(self, a, ins):
        x = ins[0]
        dirs = 2 if a.bidirectional else 1
        n, t = (x.shape[1], x.shape[0]) if a.time_major else (x.shape[0], x.shape[1])
        seq = (t, n, a.hidden * dirs) if a.time_major else (n, t, a.hidden * dirs)
        y = TensorType(dtype=x.dtype, shape=seq if a.output == "sequence" else (n, a.hidden * dirs))
        outs = [y]
        if a.return_state:
            st = TensorType(dtype=x.dtype, shape=(a.layers * dirs, n, a.hidden))
            outs += [st] * self.states
        return outs

    def params(self, a, ins):
        feat = ins[0].shape[2]
        dirs = 2 if a.bidirectional else 1
        g = self.gates * a.hidden
        p: dict = {}
        for layer in range(a.layers):
            in_size = feat if layer == 0 else a.hidden * dirs
            for d in range(dirs):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                p[f"weight_ih_{sfx}"] = (g, in_size)
                p[f"weight_hh_{sfx}"] = (g, a.hidden)
                if a.bias:
                    p[f"bias_ih_{sfx}"] = (g,)
                    p[f"bias_hh_{sfx}"] = (g,)
        return p

    def flops(self, a, ins, outs):
        n, t = ins[0].shape[0], ins[0].shape[1]
        weights = sum((numel(s) for k, s in self.params(a, ins).items() if k.startswith("weight")), 0)
        return 2 * n * t * weights


@register
class Rnn(_Recurrent):
    name = "rnn"
    summary = "Elman RNN (tanh or relu)."
    Attrs = RnnAttrs
    gates = 1
    gate_names = ("h",)


@register
class Lstm(_Recurrent):
    name = "lstm"
    summary = "LSTM; gate order i, f, g, o as in torch.nn.LSTM. Optional initial states h0, c0."
    inputs = ("x", "h0", "c0")
    gates = 4
    gate_names = ("i", "f", "g", "o")
    gate_orders = {"onnx": ("i", "o", "f", "g")}  # ONNX LSTM: iofc
    states = 2

    def check_inputs(self, a, ins):
        if len(ins) == 2:
            raise ShapeError("lstm takes both initial states h0 and c0, or neither", code="E309")
        super().check_inputs(a, ins)


@register
class Gru(_Recurrent):
    name = "gru"
    summary = "GRU; gate order r, z, n as in torch.nn.GRU (reset gate applied after the matmul)."
    gates = 3
    gate_names = ("r", "z", "n")
    gate_orders = {"onnx": ("z", "r", "n"), "keras": ("z", "r", "n")}  # ONNX GRU: zrh; Keras: z, r, h
