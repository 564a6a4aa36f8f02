"""Hostile files that are not specs: ONNX models, weights, data files and paths.

Each must end in a coded error naming the file (and the tensor, node or line), never a traceback
or a hang, and no error may quote the contents of a file that is not a spec (docs/security.md).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec import DlspecError, compile_source
from dlspec.cli import main
from dlspec.source import SourceFile

from .test_limits import deadline

CANARY = "CANARY-4f1d-line-of-a-private-file"


def _onnx_model(nodes, inputs, outputs, inits, opset=17):
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _import(tmp_path, model):
    from dlspec.importers.onnx import import_model

    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with deadline(20), pytest.raises(DlspecError) as info:
        import_model(path)
    return info.value


# ---- ONNX --------------------------------------------------------------------------------------


def test_a_loop_with_a_huge_trip_count_is_refused_before_it_runs(tmp_path):
    from .fuzz_inputs import onnx_seed_models

    loop = onnx_seed_models()[-1]
    t0 = time.perf_counter()
    err = _import(tmp_path, loop)
    assert time.perf_counter() - t0 < 5
    assert err.code == "E746" and "Loop" in err.message and "control flow" in err.message


def test_if_and_scan_are_refused_as_control_flow(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "b", [], [helper.make_tensor_value_info("o", f, ["N", 2])])
    m = _onnx_model([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
                    [helper.make_tensor_value_info("x", f, ["N", 2])], [helper.make_tensor_value_info("y", f, ["N", 2])],
                    [numpy_helper.from_array(np.array(True), "c")])
    err = _import(tmp_path, m)
    assert err.code == "E746" and "If" in err.message


def test_a_negative_input_dim_is_a_coded_error(tmp_path):
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    m = _onnx_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", f, ["N", -3])],
                    [helper.make_tensor_value_info("y", f, ["N", 3])], [])
    err = _import(tmp_path, m)
    assert err.code == "E745" and "negative" in err.message


def test_a_negative_or_huge_initializer_dim_is_refused_before_it_is_read(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    for dims in ([-1, 4], [10**6, 10**6]):
        w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
        del w.dims[:]
        w.dims.extend(dims)
        m = _onnx_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], [helper.make_tensor_value_info("x", f, ["N", 4])],
                        [helper.make_tensor_value_info("y", f, ["N", 3])], [w])
        err = _import(tmp_path, m)
        assert err.code == "E746" and "`w`" in err.message


def test_constant_folding_has_a_budget(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    m = _onnx_model([helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])],
                    [helper.make_tensor_value_info("x", f, ["N", 4])], [helper.make_tensor_value_info("y", f, ["N", 4])],
                    [numpy_helper.from_array(np.array([100000, 100000, 100], np.int64), "shape")])
    t0 = time.perf_counter()
    err = _import(tmp_path, m)
    assert time.perf_counter() - t0 < 5
    assert err.code == "E746" and "1,000,000,000,000" in err.message


def test_a_node_missing_a_required_attribute_is_named(tmp_path):
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    m = _onnx_model([helper.make_node("Gemm", ["x", "x"], ["y"], name="g1"), helper.make_node("Flatten", ["y"], ["z"], axis=7)],
                    [helper.make_tensor_value_info("x", f, ["N", 4])], [helper.make_tensor_value_info("z", f, ["N", 4])], [])
    err = _import(tmp_path, m)
    assert err.code.startswith("E74")


def test_a_file_that_is_not_onnx_is_not_quoted(tmp_path):
    p = tmp_path / "passwd"
    p.write_text(f"root:x:0:0:{CANARY}:/root:/bin/bash\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["import", str(p), "-o", str(tmp_path / "o.dls")])
    assert res.exit_code == 1 and "error[E740]" in res.output
    assert CANARY not in res.output and "Traceback" not in res.output


def test_import_of_impossible_paths_is_e740():
    from dlspec.importers.onnx import import_model

    for path in ("a\x00b.onnx", "x" * 5000 + ".onnx"):  # argv cannot hold a NUL: the API can
        with pytest.raises(DlspecError) as info:
            import_model(path)
        assert info.value.code == "E740"
    res = CliRunner().invoke(main, ["import", "x" * 5000 + ".onnx"])
    assert res.exit_code == 1 and "error[E740]" in res.output, res.output


def test_import_of_a_symlink_loop_or_a_fifo_is_e740(tmp_path):
    import os

    (tmp_path / "a.onnx").symlink_to(tmp_path / "b.onnx")
    (tmp_path / "b.onnx").symlink_to(tmp_path / "a.onnx")
    os.mkfifo(tmp_path / "f.onnx")
    for name in ("a.onnx", "f.onnx"):
        with deadline(10):
            res = CliRunner().invoke(main, ["import", str(tmp_path / name)])
        assert res.exit_code == 1 and "error[E740]" in res.output, res.output


# ---- spec and data files that are not text --------------------------------------------------------


def test_a_binary_spec_is_e902_and_not_quoted(tmp_path):
    p = tmp_path / "bin.dls"
    p.write_bytes(b"\xff\xfe" + CANARY.encode() + b"\x00\x01")
    res = CliRunner().invoke(main, ["check", str(p)])
    assert res.exit_code == 1 and "error[E902]" in res.output and CANARY not in res.output


def test_an_import_that_is_not_utf8_is_named_with_a_byte_offset_not_quoted(tmp_path):
    (tmp_path / "lib.dls").write_bytes(CANARY.encode() + b"\xff\xfe")
    spec = tmp_path / "main.dls"
    spec.write_text('import "lib.dls"\nmodel M {\n    input x: float32[batch, 2]\n    output x\n}\n', encoding="utf-8")
    res = CliRunner().invoke(main, ["check", str(spec)])
    assert res.exit_code == 1 and "error[E105]" in res.output and "byte" in res.output
    assert CANARY not in res.output


def test_a_csv_without_the_label_column_does_not_quote_its_header(tmp_path):
    from dlspec.data import load_data
    from dlspec.ir.training import Csv

    (tmp_path / "f.csv").write_text(f"{CANARY},b\n1,2\n", encoding="utf-8")
    with pytest.raises(DlspecError) as info:
        load_data(Csv(path="f.csv", label="label"), 0, tmp_path)
    d = info.value.first
    assert d.code == "E611" and "f.csv" in d.message
    assert CANARY not in d.message and CANARY not in (d.hint or "")


# ---- weights -------------------------------------------------------------------------------------


def _graph():
    prog = compile_source(SourceFile("w.dls", "model M {\n    input x: float32[batch, 3]\n    output x -> dense(2)\n}\n"))
    return prog.models["M"]


def _weights(tmp_path, **overrides):
    from dlspec.weights import save_numpy

    tensors = {"dense.weight": np.ones((2, 3), np.float32), "dense.bias": np.zeros(2, np.float32), **overrides}
    path = tmp_path / "w.safetensors"
    save_numpy(tensors, path)
    return path


def test_int64_weights_are_refused_naming_the_tensor(tmp_path):
    from dlspec.weights import load_graph_weights

    path = _weights(tmp_path, **{"dense.weight": np.ones((2, 3), np.int64)})
    with pytest.raises(DlspecError) as info:
        load_graph_weights(_graph(), path)
    assert info.value.code == "E510" and "`dense.weight` is int64" in info.value.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_weights_are_reported_naming_the_tensors(tmp_path, bad):
    from dlspec.weights import load_graph_weights

    path = _weights(tmp_path, **{"dense.bias": np.array([0.0, bad], np.float32)})
    with pytest.raises(DlspecError) as info:
        load_graph_weights(_graph(), path)
    assert info.value.code == "E511" and "`dense.bias`" in info.value.message and "`dense.weight`" not in info.value.message


def test_good_weights_still_load(tmp_path):
    from dlspec.weights import load_graph_weights

    arrays = load_graph_weights(_graph(), _weights(tmp_path))
    assert set(arrays) == {"dense.weight", "dense.bias"}


def test_names_that_are_not_utf8_are_a_coded_error(tmp_path):
    """Found by the ONNX fuzzer (seed 2026): an op type with a byte that is not UTF-8 came back
    from protobuf as bytes and broke sorting the unsupported op types (TypeError)."""
    from dlspec.importers.onnx import import_model

    from .fuzz_inputs import onnx_seed_models

    data = onnx_seed_models()[2].SerializeToString()
    assert b'"\x06Gather' in data
    path = tmp_path / "bad.onnx"
    path.write_bytes(data.replace(b'"\x06Gather', b'"\x06\x80ather'))
    with pytest.raises(DlspecError) as info:
        import_model(path)
    assert info.value.code == "E740" and "UTF-8" in info.value.message
    # the same in a symbolic dimension's name (seed 2026 again, after the first fix)
    assert b"\x12\x01N" in data
    path.write_bytes(data.replace(b"\x12\x01N", b"\x12\x01\x80", 1))
    with pytest.raises(DlspecError) as info:
        import_model(path)
    assert info.value.code == "E740" and "UTF-8" in info.value.message
