"""Which ops each export target supports, for docs/deploy.md and the op reference (docs/gen_ops.py).

A target supports an op when (1) the backend it goes through lowers the op (its `Lowerings`
table: pt2 and torchscript go through PyTorch, openvino through dlspec's ONNX model, litert,
keras and savedmodel through Keras) and (2) for the deployment targets, every op case of the test
suite that uses the op (tests/op_cases.py) converted and matched PyTorch within 1e-4 when
tests/test_deploy_ops.py last ran it: that test records what it saw in `docs/deploy_support.json`
and fails when the file no longer says what the converters do (DLSPEC_UPDATE_SUPPORT=1 rewrites it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: export target (and `dlspec compile --target caffe`) -> the dlspec backend its artifact is built from
ROUTE = {"onnx": "onnx", "openvino": "onnx", "pt2": "torch", "torchscript": "torch", "litert": "keras",
         "keras": "keras", "savedmodel": "keras", "mxnet": "mxnet", "caffe": "caffe"}
#: the targets whose converters the op-case test runs (the others are the backends' own parity tests)
TESTED = ("pt2", "openvino", "litert")
SUPPORT_FILE = Path(__file__).resolve().parents[2] / "docs" / "deploy_support.json"


def recorded() -> dict[str, Any]:
    """{"cases": {case: {target: "ok" | message}}, "ops": {case: [ops]}, "expect": {case: {backend: code}}}
    as last recorded."""
    if not SUPPORT_FILE.is_file():
        return {"cases": {}, "ops": {}}
    return json.loads(SUPPORT_FILE.read_text(encoding="utf-8"))


def matrix(targets: tuple[str, ...] = tuple(ROUTE)) -> dict[str, dict[str, str]]:
    """op -> target -> "yes", "no" (the backend lacks it) or "limited: case ..." (an op case using
    the op failed on the target: some attribute combinations are not carried)."""
    from ..backends import get_backend
    from ..ir.ops import REGISTRY

    rec = recorded()
    lowered = {}
    for t in targets:
        try:
            backend = get_backend(ROUTE[t])
            # a lowering registered only to refuse the op with its reason (Caffe's E790) carries nothing
            table = getattr(backend, "lowerings", None)
            lowered[t] = {op for op in backend.supported_ops() if table is None or not table[op].get("refused")}
        except Exception:  # a backend that cannot be loaded here
            lowered[t] = set()
    out: dict[str, dict[str, str]] = {}
    for op in sorted(REGISTRY):
        row = {}
        for t in targets:
            if op not in lowered[t]:
                row[t] = "no"
                continue
            row[t] = "yes"
            for case, ops in sorted(rec["ops"].items()):
                if op not in ops:
                    continue
                # a deployment converter's recorded result; for the others, the error the backend's
                # parity test expects for the case (an attribute combination it has no form for)
                result = rec["cases"].get(case, {}).get(t) if t in TESTED else None
                code = rec.get("expect", {}).get(case, {}).get(ROUTE[t])
                if result not in (None, "ok"):
                    row[t] = f"limited: case `{case}`: {result}"
                    break
                if code is not None:
                    row[t] = f"limited: case `{case}`: {code} (the {ROUTE[t]} backend has no form for it)"
                    break
        out[op] = row
    return out
