"""One table of op cases, read by every backend's parity tests and by the coverage tests.

Each case is a small model built to exercise the lowering decisions of a group of ops (every
attribute that changes a lowering has a case); together they use every op of the catalogue
(`test_op_cases_use_every_op`). The PyTorch test runs each case and checks every output's shape
against the checker's; the Keras and ONNX tests run each against PyTorch from the same canonical
weights. Adding an op adds it to a case here (docs/contributing.md).

`sizes` binds the case's symbolic dimensions (each binding is run); `inputs`, where random
normal inputs would not do (attention masks that must leave every query a key), makes them;
`expect` names the error code a backend must raise for a case it cannot express (checked, not
skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from dlspec import compile_source
from dlspec.ir.graph import Graph
from dlspec.source import SourceFile

from .torch_helpers import random_inputs, symbols


@dataclass(frozen=True)
class OpCase:
    name: str
    source: str
    sizes: tuple[dict[str, int], ...] = ()
    inputs: Callable[[Graph, dict[str, int]], list[np.ndarray]] | None = None
    #: backend → error code it must raise for this case (a combination it has no form for)
    expect: dict[str, str] = field(default_factory=dict)
    #: the case exported to ONNX and imported back: "same" (the same layers, op for op),
    #: "numbers" (equivalent layers, the same outputs), or the error code the importer gives
    onnx_import: str = "numbers"

    def graph(self) -> Graph:
        return _graph(self.source)

    def bindings(self) -> list[dict[str, int]]:
        """Each binding of the symbolic dimensions to run at (default: batch 2, others 7)."""
        if self.sizes:
            return [dict(s) for s in self.sizes]
        return [{s: (2 if s == "batch" else 7) for s in symbols(self.graph())}]

    def arrays(self, env: dict[str, int], seed: int = 0) -> list[np.ndarray]:
        g = self.graph()
        return self.inputs(g, env) if self.inputs else random_inputs(g, env, seed=seed)


@cache
def _graph(source: str) -> Graph:
    models = compile_source(SourceFile("op_case.dls", source)).models
    return list(models.values())[-1]


def attention_inputs(graph: Graph, env: dict[str, int]) -> list[np.ndarray]:
    """x, mem, other, keep, allow, weights3 for the `attention_masks` case: padding and causal
    masks with some positions blocked, and every query keeping at least one key."""
    n = env["batch"]
    rng = np.random.default_rng(3)
    keep = np.ones((n, 5), dtype=bool)
    keep[0, 4] = keep[-1, 2:4] = False
    allow = np.ones((5, 5), dtype=bool)
    allow[1:, 0] = False
    weights3 = (rng.random((n, 5, 6)) > 0.3).astype(np.float32)
    weights3[:, :, 0] = 1.0  # every query keeps one key
    x, mem, other = (rng.standard_normal((n, length, 8)).astype(np.float32) for length in (5, 6, 6))
    return [x, mem, other, keep, allow, weights3]


CASES: dict[str, OpCase] = {}


def case(name: str, source: str, **kw) -> None:
    assert name not in CASES, name
    CASES[name] = OpCase(name, source, **kw)


def ops_used() -> set[str]:
    return {n.op for c in CASES.values() for n in c.graph().nodes}


case("conv_padding", """model M { input x: float32[batch, 3, h, w]
        a = x -> conv2d(4, 3, padding=1) as explicit -> relu()
        b = x -> conv2d(4, (3, 2), stride=2, padding=same) as same_strided -> leaky_relu(0.2)
        c = x -> conv2d(4, 3, stride=2, dilation=2, padding=2) as strided_dilated
        d = x -> conv2d(6, 3, groups=3, padding=same, bias=false) as depthwise -> conv2d(4, 1, groups=2) as grouped
        output a, b, c, d }""", sizes=({"batch": 2, "h": 9, "w": 8}, {"batch": 2, "h": 6, "w": 7}), onnx_import="E742",
     expect={"mxnet": "E781"})

case("conv1d_3d", """model M { input x: float32[batch, 4, 10], v: float32[batch, 2, 4, 5, 6]
        a = x -> conv1d(6, 3, stride=2, padding=1) as c1 -> conv1d(6, 3, groups=6) as dw1 -> elu(0.5)
            -> batchnorm1d() as bn -> maxpool1d(2) -> avgpool1d(2, stride=1, padding=1)
        b = v -> conv3d(3, 2, padding=same) as c3 -> batchnorm3d(momentum=0.2) as bn3 -> selu()
        output a, b }""")

case("transposed", """model M { input x: float32[batch, 3, 5, 4], s: float32[batch, 2, 7]
        a = x -> conv_transpose2d(4, 3, stride=2, padding=1, output_padding=1) as t1 -> silu()
        b = x -> conv_transpose2d(2, (2, 3), stride=(2, 1), bias=false) as t2 -> sigmoid()
        c = s -> conv_transpose1d(3, 4, stride=3, padding=2) as t3 -> tanh()
        output a, b, c }""")

case("pooling", """model M { input x: float32[batch, 3, 11, 10]
        a = x -> maxpool2d(3, stride=2, padding=1) -> flatten()
        b = x -> avgpool2d(3, stride=2, padding=1, ceil_mode=true)
        c = x -> maxpool2d(2, ceil_mode=true) -> global_maxpool2d()
        d = x -> adaptive_avgpool2d((3, 4)) -> adaptive_maxpool2d(2) -> global_avgpool2d(keepdims=true)
        output a, b, c, d }""")

case("pooling1d", """model M { input x: float32[batch, 3, 11]
        a = x -> adaptive_avgpool1d(4) -> hardtanh(-0.5, 0.5)
        b = x -> adaptive_maxpool1d(5) -> global_avgpool1d()
        c = x -> global_maxpool1d()
        output a, b, c }""")

case("upsample", """model M { input x: float32[batch, 2, 3, 4], s: float32[batch, 2, 5]
        a = x -> upsample(2)
        b = x -> upsample((2, 3), mode=bilinear)
        c = x -> upsample(size=(5, 7), mode=bilinear, align_corners=true)
        d = x -> upsample(size=(7, 5))
        e = s -> upsample(3, mode=linear)
        output a, b, c, d, e }""", onnx_import="numbers")

case("pad_to_crop_to", """model M { input x: float32[batch, 2, 7, 9], y: float32[batch, 3, 4, 6],
                                s: float32[batch, 2, 5], t: float32[batch, 2, 8]
        a = y -> pad_to(x) -> relu()
        b = x -> crop_to(y)
        c = s -> pad_to(t)
        d = t -> crop_to(s) -> tanh()
        output a, b, c, d }""", onnx_import="numbers")

# U-Net's skip connection at any input size: the upsampled half is padded to the skip's size
# (odd sizes lose a row to the pooling) or the skip cropped to the upsampled one
case("pad_to_symbolic", """model M { input x: float32[batch, 2, h, w]
        u = x -> maxpool2d(2) -> upsample(2)
        a = concat(x, u -> pad_to(x), axis=1)
        b = concat(x -> crop_to(u), u, axis=1) -> sigmoid()
        output a, b }""", sizes=({"batch": 2, "h": 9, "w": 8}, {"batch": 1, "h": 6, "w": 7}),
     expect={"mxnet": "E781"}, onnx_import="E742")

# masks and piecewise functions: every comparison, with a tensor and with a number, broadcast
case("compare_where", """model M { input x: float32[batch, 3, 4], y: float32[batch, 1, 4], s: float32[batch, 6]
        a = where(greater(x, y), x, y)
        b = where(less(x, scalar=0.0), x, a_value=-1.5)
        c = where(greater_equal(s, scalar=0.25), s, b_value=0.0)
        d = where(less_equal(y, x), y, x) -> tanh()
        m = x -> reduce_max(2, keepdims=true)
        e = where(equal(x, m), x, b_value=-inf) -> softmax()  # one-hot of each row's largest
        output a, b, c, d, e }""", onnx_import="numbers")

case("topk", """model M { input x: float32[batch, 3, 8], s: float32[batch, 6]
        v, i = x -> topk(3)
        w, j = x -> topk(2, axis=1, largest=false)
        best, _ = s -> topk(1)
        output v, i, w, j, best }""", onnx_import="numbers")

# a uint8 image scaled to floats, and a float cast to int64 and back (rounding toward zero)
case("cast", """model M { input img: uint8[batch, 3, 5, 5], x: float32[batch, 4]
        a = img -> cast(float32) -> mul(scalar=0.00392156862745098) -> conv2d(2, 3) as conv
        b = x -> mul(scalar=10.0) -> cast(int64) -> cast(float32)
        output a, b }""", onnx_import="numbers")

# time-major recurrent layers ([T, N, F], PyTorch's batch_first=False): sequence and last outputs,
# an initial state read with the batch on axis 1
case("time_major", """model M { input x: float32[steps, batch, 5], h: float32[2, batch, 4]
        a = x -> lstm(4, time_major=true) as lstm -> tanh()
        b = x -> gru(3, bidirectional=true, time_major=true, output=last) as gru
        c, hn = rnn(x, h, hidden=4, layers=2, time_major=true, return_state=true) as rnn
        output a, b, c, hn }""", sizes=({"steps": 6, "batch": 2}, {"steps": 3, "batch": 3}), onnx_import="numbers")

# masks combined: not, and, or of comparisons, broadcast, read by where
case("logical", """model M { input x: float32[batch, 3, 4], y: float32[batch, 1, 4]
        keep = logical_and(greater(x, scalar=-0.5), less(y, scalar=0.5))
        either = logical_or(logical_not(keep), greater(y, x))
        output a = where(keep, x, b_value=0.0), b = where(either, x, y) }""", onnx_import="same")

case("tensor_ops", """model M { input x: float32[batch, 4, 6, 6], t: float32[batch, 5, 6]
        y = x -> conv2d(4, 1) as proj
        l, r = y -> split(2)
        u, v, w = t -> split((1, 2, 3), axis=2)
        m = concat(l, r, y, axis=1) -> softmax(axis=1)
        p = y -> pad((1, 2, 0, 1), mode=reflect) -> pad(1, mode=replicate) -> pad((2, 0), value=0.5)
        q = y -> permute((2, 0, 3, 1)) -> reshape((6, -1)) -> flatten(start=0, end=1)
        k = t -> unsqueeze(1) -> squeeze(1) -> unsqueeze(0) -> squeeze(0) -> log_softmax(axis=1)
        z = matmul(t, permute(t, (0, 2, 1))) -> gelu(approximate=tanh)
        s = y -> flatten(start=2) -> identity()
        e = div(add(y, scalar=1.0), sub(mul(y, y), scalar=-2.0)) -> gelu()
        b = div(l, r) -> dropout(0.3)
        output m, p, q, k, z, s, e, u, v, w, b }""", onnx_import="E742")

case("norms", """model M { input x: float32[batch, 6, 5, 5], f: float32[batch, 7], s: float32[batch, 6, 7]
        a = x -> groupnorm(3) as gn -> batchnorm2d(momentum=0.3, eps=1e-3) as bn
        b = f -> batchnorm1d(affine=false) as bn1 -> layernorm(eps=1e-6) as ln -> dense(3, bias=false) as fc
        c = x -> lrn(5, alpha=0.3, beta=0.6, k=1.5) -> conv2d(4, 1) as after_lrn
        d = s -> lrn(4, alpha=0.5) -> flatten()
        e = x -> lrn(4, beta=1.2)
        g = s -> lrn(5, alpha=0.2, k=2.0)
        output a, b, c, d, e, g }""")

# instance norm over 1-D, 2-D and 3-D positions, with and without its per-channel affine
case("instance_norm", """model M { input x: float32[batch, 4, 6, 5], s: float32[batch, 3, 7], v: float32[batch, 2, 3, 4, 5]
        a = x -> conv2d(4, 1) as proj -> instance_norm(affine=true, eps=1e-3) as inorm -> relu()
        b = s -> instance_norm()
        c = v -> instance_norm(affine=true) as inorm3
        output a, b, c }""", onnx_import="same")

case("recurrent", """model M { input x: float32[batch, seq, 3], h0: float32[4, batch, 5]
        a, hn = x -> rnn(5, layers=2, bidirectional=true, nonlinearity=relu, return_state=true, h0=h0) as r
        b = x -> gru(4, bidirectional=true, output=last) as g
        c, ch, cc = x -> lstm(6, layers=2, return_state=true, bias=false) as l
        d, dh = x -> gru(5, layers=2, output=last, return_state=true) as g2
        output a, hn, b, c, ch, cc, d, dh }""")

case("lstm_state", """model M { input x: int64[batch, seq], h0: float32[2, batch, 4], c0: float32[2, batch, 4]
        e = x -> embedding(9, 3, padding_idx=0) as emb
        y = e -> lstm(4, bidirectional=true, h0=h0, c0=c0) as l
        output y }""", onnx_import="same")

case("attention", """model M { input x: float32[batch, 5, 8], kv: float32[batch, 4, 8], keep: bool[batch, 4],
                               allow: float32[5, 5], each: bool[batch, 5, 4]
        a = x -> multihead_attention(2, key=kv, value=kv, mask=keep) as pad
        b = x -> multihead_attention(4, causal=true, mask=allow, bias=false) as causal
        c = x -> multihead_attention(2, key=kv, value=kv, mask=each) as batched
        d = x -> transformer_encoder(2, ff=16, dropout=0.0) as enc
        e = x -> transformer_encoder(4, ff=12, activation=gelu, norm_first=true, mask=allow) as pre
        output a, b, c, d, e }""", sizes=({"batch": 2},), onnx_import="E742")

case("activations", """
model Activations {
    input x: float32[batch, 4, 6, 6]
    s = x * 4.0
    output a = s -> softplus(), b = s -> softsign(), c = s -> hardsigmoid(), d = s -> hardswish(),
           e = s -> mish(), f = x -> flatten() -> dense(3, activation="hardswish")
}
""", sizes=({"batch": 3},))

case("elementwise", """
model Elementwise {
    input x: float32[batch, 4, 6, 6], z: float32[batch, 4, 6, 6]
    s = z -> sigmoid()
    output a = x -> relu(), b = x -> selu(), c = x -> silu(), d = x -> tanh(),
           e = x -> leaky_relu(0.2), f = x -> elu(0.7), g = x -> gelu(), h = x -> gelu(approximate="tanh"),
           i = x -> hardtanh(-0.5, 0.75), j = x -> softmax(axis=1), k = x -> log_softmax(),
           l = add(x, z), m = sub(x, z), n = mul(x, s), o = div(x, s), p = x -> add(scalar=1.5),
           q = x -> div(scalar=4.0), r = x -> mul(scalar=-2.0), t = x -> sub(scalar=0.25),
           u = matmul(x, z -> permute([0, 1, 3, 2])), v = x -> identity() -> dropout(0.4)
}
""", sizes=({"batch": 3},))

case("tensor", """
model Tensor {
    input x: float32[batch, 4, 6, 6], w: float32[batch, 6, 5], ids: int64[batch, 6], ids32: int32[batch, 3]
    left, right = x -> split(2)
    one, three = x -> split([1, 3], axis=1)
    output a = x -> flatten(), b = x -> flatten(start=2), c = x -> reshape([6, -1]), d = x -> reshape([24, 6]),
           e = x -> permute([0, 2, 3, 1]), f = x -> unsqueeze(2) -> squeeze(2), g = x -> unsqueeze(-1),
           h = concat(left, x, right, axis=1), i = one, j = three, k = left, l = right,
           m = x -> pad([1, 2, 0, 3]), n = x -> pad(1, mode="reflect"), o = x -> pad([2, 1, 0, 1], mode="replicate"),
           p = x -> pad(1, value=-3.0), q = matmul(w, w -> permute([0, 2, 1])),
           r = ids -> embedding(10, 3), s = ids32 -> embedding(7, 2, padding_idx=0), t = w -> dense(4),
           u = w -> dense(3, bias=false), v = x -> flatten() -> dense(5), y = x -> flatten() -> dense(2, bias=false)
}
""", sizes=({"batch": 3},))

case("conv", """
model Conv {
    input img: float32[batch, 3, 9, 11], seq: float32[batch, 3, 17], vol: float32[batch, 2, 5, 6, 7]
    output a = img -> conv2d(4, 3, stride=2, padding=same), b = img -> conv2d(6, (3, 2), padding=(1, 0), dilation=2, groups=3),
           c = img -> conv2d(4, 4, padding=same, bias=false), d = img -> conv2d(4, 3, stride=(2, 3), padding=valid),
           e = img -> conv_transpose2d(5, 3, stride=2, padding=1, output_padding=1),
           g = seq -> conv1d(5, 4, stride=3, padding=same), h = seq -> conv_transpose1d(2, 3, stride=3, output_padding=2),
           i = vol -> conv3d(3, 2, padding=1, stride=(1, 2, 2))
}
""", sizes=({"batch": 3},))

case("norm_pool", """
model NormPool {
    input img: float32[batch, 4, 10, 7], seq: float32[batch, 4, 11], vec: float32[batch, 4]
    output a = img -> batchnorm2d(eps=0.001), b = seq -> batchnorm1d(), c = vec -> batchnorm1d(affine=false),
           d = img -> groupnorm(2), e = seq -> groupnorm(4, affine=false), f = img -> layernorm(),
           g = seq -> layernorm(affine=false, eps=0.01),
           h = img -> maxpool2d(3, stride=2, padding=1), i = img -> maxpool2d(2, ceil_mode=true),
           j = img -> avgpool2d(3, stride=2, padding=1), k = seq -> avgpool1d(2, ceil_mode=true),
           l = seq -> maxpool1d(3, stride=2), m = img -> global_avgpool2d(), n = img -> global_maxpool2d(keepdims=true),
           o = seq -> global_avgpool1d(keepdims=true), p = seq -> global_maxpool1d(),
           q = img -> adaptive_avgpool2d((5, 3)), r = img -> adaptive_maxpool2d((2, 7)), s = img -> adaptive_avgpool2d(1),
           t = seq -> adaptive_avgpool1d(4), u = seq -> adaptive_maxpool1d(3), v = img -> adaptive_maxpool2d((4, 1)),
           w = img -> lrn(5, alpha=0.3, beta=0.6, k=1.5), x = seq -> lrn(4, alpha=0.5), y = img -> lrn(4, beta=1.2),
           z = seq -> lrn(5, alpha=0.2, k=2.0)
}
""", sizes=({"batch": 3},))

case("upsample_sizes", """
model Upsample {
    input img: float32[batch, 2, 5, 6], seq: float32[batch, 2, 7]
    output a = img -> upsample(2), b = img -> upsample((2, 3), mode="bilinear"),
           c = img -> upsample(2, mode="bilinear", align_corners=true), d = img -> upsample(size=(7, 13)),
           e = img -> upsample(size=(9, 8), mode="bilinear"), f = img -> upsample(size=(10, 11), mode="bilinear", align_corners=true),
           g = seq -> upsample(3, mode="linear"), h = seq -> upsample(size=12, mode="linear", align_corners=true),
           i = seq -> upsample(2)
}
""", sizes=({"batch": 3},))

case("recurrent_states", """
model Recurrent {
    input x: float32[batch, 7, 5], h0: float32[4, batch, 6], c0: float32[4, batch, 6]
    seq, h, c = x -> lstm(6, layers=2, bidirectional=true, return_state=true, h0=h0, c0=c0) as bilstm
    gseq, gh = x -> gru(6, layers=2, bidirectional=true, return_state=true, h0=h0) as bigru
    output seq, h, c, gseq, gh,
           glast = x -> gru(4, layers=3, bidirectional=true, output="last") as gru3,
           llast = x -> lstm(3, output="last", bias=false) as lstm1,
           rseq = x -> rnn(5, layers=2, bidirectional=true, nonlinearity="relu") as rnn_relu,
           rlast = x -> rnn(4, output="last") as rnn_tanh
}
""", sizes=({"batch": 3},))

case("attention_masks", """
model Attention {
    input x: float32[batch, 5, 8], mem: float32[batch, 6, 8], other: float32[batch, 6, 8]
    input keep: bool[batch, 5], allow: bool[5, 5], weights3: float32[batch, 5, 6]
    output padded = x -> multihead_attention(2, mask=keep) as pad,
           causal = x -> multihead_attention(2, causal=true, mask=allow) as causal,
           plain_causal = x -> multihead_attention(4, causal=true) as plain_causal,
           cross = x -> multihead_attention(4, key=mem, value=mem) as cross,
           kv = x -> multihead_attention(2, key=mem, value=other, mask=weights3, bias=false) as kv,
           enc = x -> transformer_encoder(2, ff=16, dropout=0.0, mask=keep) as enc,
           enc_gelu = x -> transformer_encoder(4, ff=12, activation="gelu", norm_first=true, mask=allow) as enc_gelu
}
""", sizes=({"batch": 3},), inputs=attention_inputs, onnx_import="E742")
case("conv_transpose_groups", """
model ConvTransposeGroups {
    input img: float32[batch, 3, 9, 11]
    output f = img -> conv_transpose2d(6, (2, 3), stride=(2, 1), dilation=(1, 2), groups=3, bias=false)
}
""", sizes=({"batch": 3},), expect={"keras": "E761"}, onnx_import="same")
case("clamps", """
model Clamps {
    input x: float32[batch, 6]
    output a = x -> hardtanh(-0.5, 0.75), b = x -> hardtanh(0.0, 4.0), c = x -> relu(), d = x -> relu6()
}
""", sizes=({"batch": 3},), onnx_import="same")
case("elementwise_math", """
model Math {
    input x: float32[batch, 3, 4], y: float32[batch, 3, 4], r: float32[4]
    pos = x -> absolute() -> add(scalar=0.5)
    output e = x -> mul(scalar=0.5) -> exp(), l = pos -> log(), s = pos -> sqrt(), q = pos -> reciprocal(),
           p = pos -> pow(scalar=1.5), pp = pow(pos, y), mx = maximum(x, y), mn = minimum(x, r),
           lo = x -> maximum(scalar=-0.25), hi = y -> minimum(scalar=0.5)
}
""", sizes=({"batch": 3},), onnx_import="same")
case("prelu", """
model PRelu {
    input img: float32[batch, 3, 4, 5], seq: float32[batch, 4, 6], vec: float32[batch, 5]
    output a = img -> prelu(per_channel=true) as pc, b = img -> prelu() as shared, c = seq -> prelu(per_channel=true) as s1,
           d = vec -> prelu(per_channel=true) as v1, e = vec -> prelu() as v2
}
""", sizes=({"batch": 3},), onnx_import="same")
case("pool_dilation_3d", """
model Pool3d {
    input img: float32[batch, 2, 9, 8], vol: float32[batch, 2, 5, 6, 7], seq: float32[batch, 3, 10]
    output a = img -> maxpool2d(3, stride=2, padding=1, dilation=2),
           b = seq -> maxpool1d(2, stride=3, dilation=3, ceil_mode=true),
           c = vol -> maxpool3d(2, stride=(1, 2, 2), padding=1),
           d = vol -> avgpool3d(3, stride=2, padding=1, ceil_mode=true),
           e = img -> maxpool2d((3, 2), dilation=(1, 2), ceil_mode=true, stride=2)
}
""", sizes=({"batch": 2},), expect={"mxnet": "E781"}, onnx_import="same")
case("reductions", """
model Reduce {
    input x: float32[batch, 3, 4, 5], t: float32[batch, 6, 4]
    output a = x -> reduce_sum(1), b = x -> reduce_mean((2, 3), keepdims=true), c = x -> reduce_max(-1),
           d = t -> reduce_sum((1, 2), keepdims=true), e = t -> reduce_mean(2), f = t -> reduce_max((1, 2))
}
""", sizes=({"batch": 3},))
case("select", """
model Select {
    input x: float32[batch, steps, 4], img: float32[batch, 3, 5, 6]
    output last = x -> select(1, -1), first = x -> select(1, 0), col = img -> select(-1, 2),
           ch = img -> select(1, -3)
}
""", sizes=({"batch": 3, "steps": 7}, {"batch": 2, "steps": 1}))
case("tile", """
model Tile {
    input x: float32[batch, 2, 3], img: int64[batch, 2, 2, 3]
    output a = x -> tile((1, 3, 2)), b = img -> tile((1, 1, 2, 1)), c = x -> tile((1, 1, 4)) -> select(2, -1)
}
""", sizes=({"batch": 3},))
case("argmax", """
model ArgMax {
    input x: float32[batch, 5], img: float32[batch, 3, 4, 2]
    output a = x -> argmax(), b = img -> argmax(1, keepdims=true), c = img -> argmax(-2)
}
""", sizes=({"batch": 3},), onnx_import="same")
case("parameter", """
model Learned {
    input x: float32[batch, 4, 6], img: float32[batch, 2, 3, 3]
    tokens = concat(x -> parameter([1, 6], init=zeros) as class_token, x, axis=1)
    output a = add(tokens, tokens -> parameter([5, 6]) as pos_embedding),
           b = mul(img, img -> parameter([2, 1, 1], std=1.0) as scale)
}
""", sizes=({"batch": 3},), onnx_import="numbers")
