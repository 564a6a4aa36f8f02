"""Every op case (tests/op_cases.py) through the deployment converters: torch.export (pt2),
OpenVINO (from dlspec's ONNX model) and LiteRT (TensorFlow's converter from the Keras model),
each artifact run by its runtime's loader (dlspec/deploy/child.py) against PyTorch within 1e-4.
What each converter does with each case is recorded in docs/deploy_support.json, from which
docs/deploy.md's op support table is generated: the test fails when the file no longer says what
the converters do (run with DLSPEC_UPDATE_SUPPORT=1 to record it again, then review the diff)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dlspec import export as ex  # noqa: E402
from dlspec.deploy import child, support  # noqa: E402
from dlspec.errors import DlspecError  # noqa: E402

from .op_cases import CASES  # noqa: E402
from .test_onnx_backend import canonical_weights, torch_outputs  # noqa: E402

pytestmark = pytest.mark.slow


def _run_case(name: str, target: str) -> str:
    case = CASES[name]
    graph = case.graph()
    module, weights = canonical_weights(graph)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        try:
            path, _ = ex._build(target, graph, weights, tmpd, tmpd / f"model{ex.SUFFIX[target]}", ex.Options(),
                                lambda _: None)
        except DlspecError as exc:
            return f"{exc.code}: {exc.message.split(' failed: ')[-1][:120]}"
        except Exception as exc:  # a converter's own exception that dlspec did not turn into a coded error
            return f"uncoded {type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}"
        meta = {"inputs": [i.name for i in graph.inputs], "outputs": [o.name for o in graph.outputs]}
        try:
            run = child.LOADERS[target](str(path), None, 0, meta)
            for env in case.bindings():
                arrays = case.arrays(env, seed=5)
                want = torch_outputs(module, graph, arrays)
                got = run({i.name: a for i, a in zip(graph.inputs, arrays)})
                for k, w in want.items():
                    g = np.asarray(got[k])
                    if g.shape != w.shape:
                        return f"output {k}: shape {list(g.shape)}, PyTorch {list(w.shape)}"
                    if not np.allclose(g, w, rtol=1e-4, atol=1e-4):
                        return f"output {k}: differs from PyTorch by {float(np.abs(g - w).max()):.2g}"
        except Exception as exc:  # what the runtime says, recorded
            return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}"
    return "ok"


def test_converters_do_what_docs_deploy_support_json_says():
    seen = {name: {t: _run_case(name, t) for t in support.TESTED} for name in CASES}
    ops = {name: sorted({n.op for n in CASES[name].graph().nodes}) for name in CASES}
    now = {"cases": seen, "ops": ops, "expect": {name: dict(CASES[name].expect) for name in CASES if CASES[name].expect}}
    if os.environ.get("DLSPEC_UPDATE_SUPPORT"):
        support.SUPPORT_FILE.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert support.recorded() == now, "the converters changed: run with DLSPEC_UPDATE_SUPPORT=1 and review the diff"
    passing = sum(r == "ok" for c in seen.values() for r in c.values())
    assert passing >= len(CASES)  # a broken harness would record every case as failing
