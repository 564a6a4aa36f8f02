"""Generators and oracles of the fuzz tests (tests/test_fuzz.py): spec text from the project's own
grammar, mutations of `specs/*.dls` and of the error corpus `tests/invalid/*.dls`, and mutated
ONNX models. Each input must end in a `DlspecError` with well-formed diagnostics, or a valid
result, within a time limit; anything else — another exception, a hang — is a crasher.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

from dlspec import DlspecError, compile_source
from dlspec.parser import grammar_text
from dlspec.source import SourceFile

from .helpers import time_limit as _time_limit

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dls"))
CORPUS = sorted((ROOT / "tests" / "invalid").glob("*.dls"))
SEEDS = [(p, p.read_text(encoding="utf-8")) for p in SPECS + CORPUS]

#: seconds one input may take (the limits of dlspec/limits.py make every input end well within it)
TIME_LIMIT = 5

TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d[\d_.eE]*|\"[^\"\n]*\"|->|\*\*|//|[=!<>]=|.", re.S)

#: pieces of the language that a mutation may splice in: keywords, punctuation, layer names,
#: and the numbers that once broke the front end (huge, zero, negative)
VOCAB = [
    "model", "block", "train", "input", "output", "import", "from", "freeze", "replace", "then", "if", "else",
    "as", "and", "or", "not", "true", "false", "none", "{", "}", "(", ")", "[", "]", ",", ":", "=", "->", ".",
    "*", "+", "-", "/", "//", "**", "==", "<", "0", "1", "-1", "3", "0.5", "1e9", '"x"', "'", "x", "batch",
    "seq", "float32", "int64", "dense", "conv2d", "flatten", "relu", "lstm", "concat", "split", "reshape",
    "embedding", "multihead_attention", "Basic", "ConvBN", "ResNet18", "adam", "cosine", "warmup", "data",
    "builtin", "epochs", "\n", "10**10", "2**64", "-3", "1e999", "x.batch", "[1] * 10**10", "* 100000",
    "relu(relu(relu(x)))", "0 *", "layers=10**9", "stride=0", "heads=-4",
]

_GRAMMAR = Lark(grammar_text(), parser="lalr", start=["start", "block_def", "model_def", "train_def"])


def _word(words: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(words).map(lambda w: f" {w} ")  # tokens apart, so `model M` is not `modelM`


#: terminals drawn from small vocabularies: a random NAME is almost never a layer, a random INT
#: almost never a size that fits
EXPLICIT = {
    "NAME": _word(["x", "y", "z", "M", "B", "C", "dense", "relu", "conv2d", "flatten", "batch", "seq", "float32",
                   "int64", "lstm", "split", "reshape", "embedding", "layernorm", "concat", "maxpool2d", "adam",
                   "sgd", "loss", "optimizer", "epochs", "data", "builtin", "cross_entropy", "int", "float", "same",
                   "units", "axis", "layers", "stride", "heads", "transformer_encoder", "dropout", "add"]),
    "INT": _word(["0", "1", "2", "3", "4", "8", "16", "64", "100000", "2147483647", "10000000000",
                  "99999999999999999999999"]),
    "FLOAT": _word(["0.5", "1e-3", "1e999", "2.0", "0.0"]),
    "STRING": _word(['"x"', '"lib/base.dls"', '"encoder.*"', '"digits"', '"\\q"']),
    "COMMENT": st.just("# c\n"),
}


def grammar_program() -> st.SearchStrategy[str]:
    """Programs from the grammar: blocks, models and a recipe that may use each other."""
    part = {k: from_lark(_GRAMMAR, start=k, explicit=EXPLICIT) for k in ("block_def", "model_def", "train_def")}
    return st.tuples(st.lists(part["block_def"], max_size=2), st.lists(part["model_def"], min_size=1, max_size=2),
                     st.lists(part["train_def"], max_size=1)).map(lambda t: "\n".join([*t[0], *t[1], *t[2]]))


@st.composite
def mutated_seed(draw: st.DrawFn) -> tuple[Path, str]:
    """A spec or corpus file with 1–4 token mutations (delete, duplicate, swap, replace, insert,
    a character changed) and, sometimes, truncated."""
    path, text = draw(st.sampled_from(SEEDS))
    tokens = TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert", "char", "number"]))
        if kind == "delete":
            del tokens[i]
        elif kind == "duplicate":
            tokens.insert(i, tokens[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "replace":
            tokens[i] = draw(st.sampled_from(VOCAB))
        elif kind == "insert":
            tokens.insert(i, " " + draw(st.sampled_from(VOCAB)) + " ")
        elif kind == "number":  # a number of the file made huge, zero or negative
            numbers = [k for k, t in enumerate(tokens) if t[:1].isdigit()]
            if numbers:
                tokens[draw(st.sampled_from(numbers))] = draw(st.sampled_from(["0", "-1", "10**10", "2**31", "2**64", "100000"]))
        else:
            tok = tokens[i]
            k = draw(st.integers(0, len(tok)))
            tokens[i] = tok[:k] + draw(st.characters(codec="utf-8")) + tok[k + 1:]
    out = "".join(tokens)
    if draw(st.booleans()) and draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return path, out


def time_limit(seconds: int = TIME_LIMIT):
    """The fuzzers' per-input limit (TimeoutError past it)."""
    return _time_limit(seconds)


def assert_well_formed(exc: DlspecError, texts: dict[str, str]) -> None:
    """Every diagnostic has a code, a message, and a span (when it has one) inside its file."""
    assert exc.diagnostics, "a DlspecError must carry at least one diagnostic"
    for d in exc.diagnostics:
        assert re.fullmatch(r"[EW]\d{3}", d.code), d.code
        assert d.message and d.message.strip(), d
        if d.span is None:
            continue
        text = texts.get(d.span.file)
        if text is None:  # a file the spec imports
            p = Path(d.span.file)
            assert p.is_file() or (ROOT / p).is_file(), f"span in an unknown file: {d.span}"
            continue
        n_lines = text.count("\n") + 1
        assert 1 <= d.span.line <= n_lines, (d.span, n_lines, d.message)
        assert d.span.column >= 1 and d.span.end_line >= d.span.line, d.span


def compiles_or_reports(text: str, name: str = "fuzz.dls", base_dir: Path | None = None) -> str:
    """Compile `text`; return "ok" or the first error code. Fails on any other exception or a hang."""
    src = SourceFile(name, text)
    with time_limit():
        try:
            compile_source(src, base_dir=base_dir)
        except DlspecError as exc:
            assert_well_formed(exc, {name: text})
            return exc.code
    return "ok"


# ---- ONNX models --------------------------------------------------------------------------------


def onnx_seed_models() -> list:
    """A few small models built with onnx.helper: dense layers, a conv net, shape arithmetic, an
    LSTM, and a Loop with constant inputs (refused before it runs)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape, dtype=np.float32):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)

    def model(nodes, inputs, outputs, inits, opset=17):
        g = helper.make_graph(nodes, "g", inputs, outputs, inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

    f = TensorProto.FLOAT
    mlp = model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])],
                [helper.make_tensor_value_info("x", f, ["N", 4])], [helper.make_tensor_value_info("y", f, ["N", 3])],
                [init("w", 3, 4), init("b", 3)])
    conv = model([helper.make_node("Conv", ["x", "k"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
                  helper.make_node("Relu", ["n"], ["r"]),
                  helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Flatten", ["p"], ["fl"]),
                  helper.make_node("Gemm", ["fl", "w", "b"], ["y"], transB=1)],
                 [helper.make_tensor_value_info("x", f, ["N", 2, 4, 4])], [helper.make_tensor_value_info("y", f, ["N", 5])],
                 [init("k", 3, 2, 3, 3), init("s", 3), init("bb", 3), init("m", 3), numpy_helper.from_array(np.ones(3, np.float32), "v"),
                  init("w", 5, 12), init("b", 5)])
    shape = model([helper.make_node("Shape", ["x"], ["sh"]),
                   helper.make_node("Gather", ["sh", "zero"], ["n0"], axis=0),
                   helper.make_node("Unsqueeze", ["n0", "ax"], ["n1"]),
                   helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
                   helper.make_node("Reshape", ["x", "target"], ["y"])],
                  [helper.make_tensor_value_info("x", f, ["N", 2, 3])], [helper.make_tensor_value_info("y", f, ["N", 6])],
                  [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "ax"),
                   numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    lstm = model([helper.make_node("LSTM", ["x", "W", "R", "B"], ["yy", "h", "c"], hidden_size=3),
                  helper.make_node("Squeeze", ["yy", "one"], ["y"])],
                 [helper.make_tensor_value_info("x", f, ["T", "N", 2])], [helper.make_tensor_value_info("y", f, ["T", "N", 3])],
                 [init("W", 1, 12, 2), init("R", 1, 12, 3), init("B", 1, 24), numpy_helper.from_array(np.array([1], np.int64), "one")])
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "v_in"], ["v_out"])],
                             "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                      helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                                      helper.make_tensor_value_info("v_in", f, [1])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", f, [1])])
    loop = model([helper.make_node("Loop", ["trips", "cond", "v0"], ["vn"], body=body),
                  helper.make_node("Add", ["x", "vn"], ["y"])],
                 [helper.make_tensor_value_info("x", f, ["N", 1])], [helper.make_tensor_value_info("y", f, ["N", 1])],
                 [numpy_helper.from_array(np.array(10**12, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond"),
                  numpy_helper.from_array(np.ones(1, np.float32), "v0")])
    return [mlp, conv, shape, lstm, loop]


ONNX_OPS = ["Relu", "Gemm", "Conv", "Loop", "If", "Scan", "Add", "Reshape", "ConstantOfShape", "Expand", "Tile", "Range",
            "Shape", "Gather", "Concat", "MatMul", "Softmax", "Transpose", "Squeeze", "Unsqueeze", "LSTM", "Pad",
            "NoSuchOp", "Cast", "Slice", "Split", "Flatten", "MaxPool", "Resize"]
HUGE = [0, -1, -5, 1, 2, 7, 2**31, 2**40, 10**12, -(2**62)]


@st.composite
def mutated_onnx(draw: st.DrawFn) -> bytes:
    """A seed model with random field changes (op types, attribute values, dims of inputs and
    initializers, data types, input names), and sometimes its bytes truncated or flipped."""
    import onnx

    models = _onnx_seeds()
    m = onnx.ModelProto()
    m.CopyFrom(draw(st.sampled_from(models)))
    g = m.graph
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["op_type", "attr_int", "input_dim", "init_dims", "init_type", "rename", "const_input"]))
        if kind == "op_type" and g.node:
            g.node[draw(st.integers(0, len(g.node) - 1))].op_type = draw(st.sampled_from(ONNX_OPS))
        elif kind == "attr_int" and g.node:
            node = g.node[draw(st.integers(0, len(g.node) - 1))]
            ints = [a for a in node.attribute if a.type in (a.INT, a.INTS)]
            if ints:
                a = draw(st.sampled_from(ints))
                if a.type == a.INT:
                    a.i = draw(st.sampled_from(HUGE))
                elif a.ints:
                    a.ints[draw(st.integers(0, len(a.ints) - 1))] = draw(st.sampled_from(HUGE))
        elif kind == "input_dim" and g.input:
            dims = g.input[draw(st.integers(0, len(g.input) - 1))].type.tensor_type.shape.dim
            if dims:
                d = dims[draw(st.integers(0, len(dims) - 1))]
                d.dim_value = draw(st.sampled_from(HUGE))
        elif kind == "init_dims" and g.initializer:
            t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
            if t.dims:
                t.dims[draw(st.integers(0, len(t.dims) - 1))] = draw(st.sampled_from(HUGE))
            else:
                t.dims.append(draw(st.sampled_from(HUGE)))
        elif kind == "init_type" and g.initializer:
            g.initializer[draw(st.integers(0, len(g.initializer) - 1))].data_type = draw(st.integers(0, 17))
        elif kind == "rename" and g.node:
            node = g.node[draw(st.integers(0, len(g.node) - 1))]
            if node.input:
                node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(["", "nowhere", "x", "w"]))
        elif kind == "const_input" and g.input:  # the model input becomes a constant: everything folds
            import numpy as np
            from onnx import numpy_helper

            name = g.input[0].name
            g.initializer.append(numpy_helper.from_array(np.ones([2] * draw(st.integers(1, 4)), np.float32), name))
    data = m.SerializeToString()
    cut = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if cut == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif cut == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    return data


_ONNX_CACHE: list = []


def _onnx_seeds() -> list:
    if not _ONNX_CACHE:
        _ONNX_CACHE.extend(onnx_seed_models())
    return _ONNX_CACHE


def imports_or_reports(data: bytes, folder: Path) -> str:
    """Import the model bytes; return "ok" or the error code. Fails on any other exception or a hang."""
    from dlspec.importers.onnx import import_model

    path = folder / "fuzz.onnx"
    path.write_bytes(data)
    with time_limit():
        try:
            import_model(path)
        except DlspecError as exc:
            assert_well_formed(exc, {})
            return exc.code
    return "ok"
