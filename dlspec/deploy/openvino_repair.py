"""Rewrites of two ops that OpenVINO's CPU plugin computes wrongly (openvino 2026.4), applied to
the model `openvino.convert_model` returns, before it is saved as the `.xml`/`.bin` artifact. Each
rewrite is exact in arithmetic and uses only ops the plugin computes right, so the artifact stays a
plain OpenVINO IR that any OpenVINO loads, and it stays right should a later plugin fix the bug.

    LRN with a bias (PyTorch's, Caffe's `k`) other than 1
        The plugin computes x / (1 + alpha/size * sum(x^2))^beta whatever the bias the IR holds.
        Since (k + a/n S)^b = k^b (1 + (a/k)/n S)^b, the rewrite is LRN(alpha/k, beta, bias 1)
        times the constant k^-beta.
    AvgPool counting the padding (PyTorch's default `count_include_pad`) with ceil rounding and
    padding > 0, in two or more spatial dimensions
        A window that the ceil rounding lets hang past the end padding is divided by the whole
        kernel (the padding is counted, and so is what lies beyond it); PyTorch, ONNX and
        onnxruntime count the padding but not the overhang. The rewrite pads the input with zeros
        explicitly, pools without padding and without counting the overhang (`exclude_pad`, which
        the plugin computes right), and slices the output to the original pool's size (taken from
        its shape, so a symbolic spatial size works too).

Both were found by tests/test_deploy_ops.py (the op cases `norms`, `norm_pool`, `pooling`,
`pool_dilation_3d`, which now match PyTorch within 1e-4 through these rewrites). Every export is
still checked against the trained model.
"""

from __future__ import annotations

from typing import Any


def repair(model: Any) -> list[str]:
    """Rewrite the ops above in `model` (an `openvino.Model`) in place; one line per rewrite."""
    done: list[str] = []
    for node in list(model.get_ordered_ops()):
        kind = node.get_type_name()
        if kind == "LRN":
            note = _lrn(node)
        elif kind == "AvgPool":
            note = _avg_pool(node)
        else:
            continue
        if note:
            done.append(note)
    if done:
        model.validate_nodes_and_infer_types()
    return done


def _lrn(node: Any) -> str | None:
    import numpy as np
    import openvino.opset14 as ops

    a = node.get_attributes()
    bias = float(a["bias"])
    if bias == 1.0 or bias <= 0:
        return None
    alpha, beta, size = float(a["alpha"]), float(a["beta"]), int(a["size"])
    data, axes = node.input_value(0), node.input_value(1)
    consumers = list(node.output(0).get_target_inputs())
    unit = ops.lrn(data, axes, alpha=alpha / bias, beta=beta, bias=1.0, size=size)
    dtype = data.get_element_type().to_dtype()
    scaled = ops.multiply(unit, ops.constant(np.array(bias ** -beta, dtype=dtype)))
    _replace(node, scaled, consumers)
    return f"LRN `{node.get_friendly_name()}` (bias {bias:g})"


def _avg_pool(node: Any) -> str | None:
    import numpy as np
    import openvino.opset14 as ops

    a = node.get_attributes()
    begin, end = [int(v) for v in a["pads_begin"]], [int(v) for v in a["pads_end"]]
    if a["exclude-pad"] or a["rounding_type"] not in ("ceil", "ceil_torch") or not any(begin + end):
        return None
    if a.get("auto_pad", "explicit") not in ("explicit", "notset"):
        return None
    n = len(begin)
    if n < 2:  # one spatial dimension is computed right
        return None
    data = node.input_value(0)
    consumers = list(node.output(0).get_target_inputs())  # before a ShapeOf below reads it too
    dtype = data.get_element_type().to_dtype()
    padded = ops.pad(data, np.array([0, 0, *begin], dtype=np.int64), np.array([0, 0, *end], dtype=np.int64),
                     "constant", ops.constant(np.array(0, dtype=dtype)))
    pooled = ops.avg_pool(padded, [int(v) for v in a["strides"]], [0] * n, [0] * n, [int(v) for v in a["kernel"]],
                          exclude_pad=True, rounding_type="ceil_torch")
    want = node.get_output_partial_shape(0)
    have = pooled.get_output_partial_shape(0)
    axes = np.arange(2, 2 + n, dtype=np.int64)
    if want.is_static:
        stop: Any = np.array([want[i].get_length() for i in range(2, 2 + n)], dtype=np.int64)
        if have.is_static and all(have[i].get_length() == want[i].get_length() for i in range(2, 2 + n)):
            _replace(node, pooled, consumers)
            return _pool_note(node)
    else:  # the original pool's spatial size, read from its shape at run time
        stop = ops.gather(ops.shape_of(node.output(0)), ops.constant(axes), ops.constant(np.array(0, np.int64)))
    out = ops.slice(pooled, np.zeros(n, np.int64), stop, np.ones(n, np.int64), axes)
    _replace(node, out, consumers)
    return _pool_note(node)


def _pool_note(node: Any) -> str:
    kernel = "x".join(str(int(v)) for v in node.get_attributes()["kernel"])
    return f"AvgPool `{node.get_friendly_name()}` ({kernel}, ceil mode, padding counted)"


def _replace(node: Any, new: Any, consumers: list[Any]) -> None:
    """The consumers `node`'s output had read `new` instead; `new` takes over the output's tensor
    names (the model's output names among them) and the node's name."""
    old = node.output(0)
    names = old.get_names()
    new.set_friendly_name(node.get_friendly_name())
    for target in consumers:
        target.replace_source_output(new.output(0))
    old.set_names(set())
    new.output(0).set_names(names)
