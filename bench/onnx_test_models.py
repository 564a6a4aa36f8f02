"""`dlspec import` on the test models that ship inside the `onnx` package.

For each model of onnx/backend/test/data/{pytorch-converted, pytorch-operator} (and the
single-operator node tests, generated from onnx.backend.test.case.node, each operand but the first
frozen as an initializer), the model
is imported, built as a PyTorch module with the imported weights, run on the stored
test_data_set_0 inputs and compared with the stored outputs. The light/ models (the real/ networks
with constant-filled weights; their dummy inputs, the targets of a Reshape, are frozen as [0, -1])
are compared with onnxruntime on the original. Prints one line per model and a table:

    python bench/onnx_test_models.py [--suite pytorch-converted] [--verbose]

Outcomes: pass (relative error at most 1e-5, or absolute 1e-6 where the output is near zero),
mismatch, refused (a coded error: E741 op types the IR cannot express, E742 a use of a supported op
it cannot express), crash (anything else: a bug).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOL = 1e-5


def _data_root() -> Path:
    import onnx

    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"


def _read_pb(path: str) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    t.ParseFromString(Path(path).read_bytes())
    return numpy_helper.to_array(t)


def _compare(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    worst = 0.0
    for g, w in zip(got, want):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if g.shape != w.shape:
            return float("inf")
        scale = max(float(np.abs(w).max()) if w.size else 0.0, 1e-6 / TOL)
        worst = max(worst, float(np.abs(g - w).max()) / scale if w.size else 0.0)
    return worst


def run_one(model_path: Path, feeds: dict[str, np.ndarray], want: list[np.ndarray] | None, work: Path):
    """(outcome, detail) for one model."""
    import onnx
    import torch

    from dlspec.backends.torch import build_module
    from dlspec.errors import DlspecError
    from dlspec.importers.spec_writer import convert

    try:
        result = convert(model_path, work / "m.dls")
        module = build_module(result.graph).eval()
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in result.weights.items()},
                               strict=True)
        if want is None:
            import onnxruntime as ort

            want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, feeds)
        args = {result.input_names[k]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()
                if k in result.input_names}
        with torch.no_grad():
            got = module(**args)
        names = [o.name for o in onnx.load(str(model_path)).graph.output]
        if isinstance(got, torch.Tensor):
            got = {result.graph.outputs[0].name: got}
        outs = [got[result.output_names[n]].numpy() for n in names]
        err = _compare(outs, want)
        return ("pass" if err <= TOL else "mismatch"), f"rel {err:.2e}"
    except DlspecError as exc:
        return "refused", f"{exc.code}: {exc.message[:160]}"
    except Exception as exc:  # noqa: BLE001  (a crash is what this measures)
        return "crash", f"{type(exc).__name__}: {str(exc)[:160]}"


def stored_cases(suite: str):
    for d in sorted((_data_root() / suite).glob("*")):
        model = d / "model.onnx"
        data = d / "test_data_set_0"
        if not model.exists() or not data.exists():
            continue
        import onnx

        m = onnx.load(str(model))
        inits = {i.name for i in m.graph.initializer}
        names = [i.name for i in m.graph.input if i.name not in inits]
        inputs = [_read_pb(p) for p in sorted(glob.glob(str(data / "input_*.pb")))]
        outputs = [_read_pb(p) for p in sorted(glob.glob(str(data / "output_*.pb")))]
        yield d.name, model, dict(zip(names, inputs)), outputs


def node_cases():
    """The single-operator node tests (onnx.backend.test.case.node, the cases behind node/): the
    first input stays a model input, every other operand is frozen as an initializer."""
    import warnings

    from onnx import numpy_helper
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    for case in cases:
        model = case.model
        if not case.data_sets or not model.graph.input:
            continue
        inputs, outputs = case.data_sets[0]
        names = [i.name for i in model.graph.input]
        if len(inputs) != len(names) or not all(isinstance(v, np.ndarray) for v in [*inputs, *outputs]):
            continue
        frozen = type(model)()
        frozen.CopyFrom(model)
        keep = frozen.graph.input[0]
        del frozen.graph.input[1:]
        for name, value in zip(names[1:], inputs[1:]):
            frozen.graph.initializer.append(numpy_helper.from_array(value, name))
        path = Path(tempfile.mkdtemp()) / f"{case.name}.onnx"
        path.write_bytes(frozen.SerializeToString())
        yield case.name, path, {keep.name: inputs[0]}, list(outputs)


def light_cases():
    import onnx
    from onnx import numpy_helper

    root = _data_root() / "light"
    for path in sorted(root.glob("light_*.onnx")):
        m = onnx.load(str(path))
        inits = {i.name for i in m.graph.initializer}
        feeds = {}
        rng = np.random.default_rng(0)
        for gi in m.graph.input:
            if gi.name in inits:
                continue
            dims = [d.dim_value for d in gi.type.tensor_type.shape.dim]
            if "DUMMY" in gi.name:  # a Reshape target: keep the batch axis, flatten the rest
                m.graph.initializer.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), gi.name))
                continue
            feeds[gi.name] = rng.standard_normal(dims).astype(np.float32)
        frozen = Path(tempfile.mkdtemp()) / path.name
        onnx.save(m, str(frozen))
        yield path.stem.removeprefix("light_"), frozen, feeds, None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", action="append", help="pytorch-converted, pytorch-operator, light (default: all)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    suites = args.suite or ["light", "pytorch-converted", "pytorch-operator", "node"]
    table = []
    for suite in suites:
        if suite not in ("light", "node") and not (_data_root() / suite).exists():
            print(f"{suite}: not in the installed onnx package")
            continue
        counts: Counter = Counter()
        start = time.perf_counter()
        cases = {"light": light_cases, "node": node_cases}.get(suite, lambda s=suite: stored_cases(s))()
        for name, model, feeds, want in cases:
            with tempfile.TemporaryDirectory() as work:
                outcome, detail = run_one(model, feeds, want, Path(work))
            counts[outcome] += 1
            if args.verbose or outcome != "pass":
                print(f"{suite}/{name}: {outcome} ({detail})", flush=True)
        total = sum(counts.values())
        table.append((suite, total, counts, time.perf_counter() - start))
    print()
    print("| suite | models | pass | refused | mismatch | crash | seconds |")
    print("|---|---|---|---|---|---|---|")
    for suite, total, c, secs in table:
        print(f"| {suite} | {total} | {c['pass']} | {c['refused']} | {c['mismatch']} | {c['crash']} | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
