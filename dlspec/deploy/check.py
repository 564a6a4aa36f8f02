"""The self-check of `dlspec export`: the written artifact, loaded by its own runtime in a fresh
Python process (`child.py`, which imports no dlspec), against the trained model run by the backend
that trained it (PyTorch, or Keras for `--backend tf` runs) with the run's weights as trained
(before any optimization pass), on rows of the run's validation split.

Two batches are compared: one row, and 17 rows (a size no example input had), so a lost dynamic
batch shows. An output passes when every element satisfies |artifact - trained| <= tol + tol *
|trained| (numpy's `allclose` with rtol = atol = tol).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DlspecError, error
from ..ir.graph import Graph

CHILD = Path(__file__).with_name("child.py")
#: the batch sizes the self-check runs
BATCHES = (1, 17)
#: seconds a fresh process may take to load and run an artifact
CHILD_TIMEOUT = 900


# ---- the rows ---------------------------------------------------------------------------------------


def run_data(run: Path, cfg: Any, config: dict[str, Any], graph: Graph) -> Any | None:
    """The run's data set (its three splits) as training saw it, or None where it cannot be
    loaded (the files moved, a program without data)."""
    from ..data import check_against_model, load_data

    data_cfg = getattr(cfg, "data", None)
    if data_cfg is None:
        return None
    try:
        bundle = load_data(data_cfg, getattr(cfg, "seed", 0), Path(config["spec"]).parent)
        check_against_model(bundle, graph)
    except DlspecError:
        return None
    return bundle


def rows_of(split: Any, graph: Graph, n: int, start: int = 0) -> list[Any]:
    """`n` rows of `split` from `start` (repeated where the split is shorter), cast to the model's
    input dtypes."""
    import numpy as np

    have = len(split)
    idx = (np.arange(start, start + n) % have).astype(np.int64)
    return [np.ascontiguousarray(a[idx].astype(gi.type.dtype)) for a, gi in zip(split.x, graph.inputs)]


def random_rows(graph: Graph, n: int, seed: int = 0, other: int = 8) -> list[Any]:
    """Seeded inputs where a run has no data: normal floats, and integers below the vocabulary of
    the embedding an integer input feeds (else 0 or 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for gi in graph.inputs:
        shape = [n if i == 0 else (d if isinstance(d, int) else other) for i, d in enumerate(gi.type.shape)]
        if gi.type.dtype.startswith(("int", "uint")):
            nums = [int(node.attrs.get("num", 2)) for node in graph.nodes if gi.name in node.inputs]
            out.append(rng.integers(0, min(nums) if nums else 2, shape).astype(gi.type.dtype))
        elif gi.type.dtype == "bool":
            out.append(rng.random(shape) < 0.5)
        else:
            out.append(rng.standard_normal(shape).astype(gi.type.dtype))
    return out


# ---- the trained model ------------------------------------------------------------------------------


def reference(graph: Graph, arrays: dict[str, Any], backend: str, xs: list[Any]) -> dict[str, Any]:
    """The trained model's outputs: its graph and weights as trained, in the backend that trained it."""
    from ..backends import get_backend

    name = "keras" if backend == "tf" else "torch"
    return get_backend(name).run(graph, arrays, {gi.name: x for gi, x in zip(graph.inputs, xs)})


# ---- the artifact in a fresh process -------------------------------------------------------------


def run_artifact(target: str, path: Path, graph: Graph, batches: list[list[Any]], *, precision: str | None = None,
                 threads: int = 0, bench: int = 0, budget: float = 0, meta_extra: dict[str, Any] | None = None,
                 timeout: float = CHILD_TIMEOUT) -> list[dict[str, Any]]:
    """Each batch's outputs (and with `bench`, `times`) from the artifact, run by `child.py` in a
    fresh interpreter that imports the runtime alone. A failure is E721 when the runtime's message
    names a layer of the model (an op or shape it lacks), else E723."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="dlspec-check-") as tmp:
        tmpd = Path(tmp)
        feed = {f"b{k:02d}__{gi.name}": x for k, xs in enumerate(batches) for gi, x in zip(graph.inputs, xs)}
        np.savez(tmpd / "in.npz", **feed)
        meta = tmpd / "meta.json"
        meta.write_text(json.dumps({"inputs": [gi.name for gi in graph.inputs],
                                    "outputs": [go.name for go in graph.outputs], **(meta_extra or {})}))
        cmd = [sys.executable, "-P", str(CHILD), target, str(path), str(tmpd / "in.npz"), str(tmpd / "out.npz")]
        if precision:
            cmd += ["--precision", precision]
        if threads:
            cmd += ["--threads", str(threads)]
        if bench:
            cmd += ["--bench", str(bench), "--budget", str(budget)]
        env = {**os.environ, "DLSPEC_CHILD_META": str(meta), "TF_CPP_MIN_LOG_LEVEL": "2"}
        # the loaders that import dlspec (the Keras format's custom layers, eager) find this dlspec,
        # the one running now, whether or not it is the one installed
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([here, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise error("E723", f"the {target} artifact {path.name} did not finish within {timeout:.0f} s in its runtime",
                        hint="run it by hand as docs/deploy.md shows to see where it hangs") from None
        if proc.returncode != 0:
            raise _child_failure(target, path, graph, proc)
        with np.load(tmpd / "out.npz", allow_pickle=False) as z:
            results: list[dict[str, Any]] = [{} for _ in batches]
            for key in z.files:
                b, name = key.split("__", 1)
                results[int(b[1:])][name] = z[key]
    return results


def _child_failure(target: str, path: Path, graph: Graph, proc: subprocess.CompletedProcess) -> DlspecError:
    from .targets import unsupported

    report = None
    for line in reversed(proc.stderr.strip().splitlines()):
        if line.startswith("{"):
            try:
                report = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if report is None:  # the runtime died (a crash in native code): its exit status is all there is
        return error("E723", f"the {target} runtime crashed loading or running {path.name} (exit status "
                             f"{proc.returncode})", hint="the artifact is damaged, or the runtime cannot run it")
    message = f"{report['type']}: {report['error']}"
    named = unsupported(graph, target, RuntimeError(message), "its runtime")
    if named.span is not None and named.span != graph.span:
        return named
    first = next((ln for ln in message.splitlines() if ln.strip()), message)[:300]
    return error("E723", f"the {target} runtime cannot load or run {path.name}: {first}",
                 hint="the artifact is damaged or was not written by this export; export it again")


# ---- comparing ---------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The largest differences per output over every batch; `ok` against the tolerance."""

    tolerance: float
    rows: str
    abs_diff: dict[str, float] = field(default_factory=dict)
    rel_diff: dict[str, float] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failing

    def lines(self) -> list[str]:
        width = max((len(k) for k in self.abs_diff), default=0)
        return [f"  {k.ljust(width)}  max abs diff {self.abs_diff[k]:.3g}, max rel diff {self.rel_diff[k]:.3g}"
                + (f"  ({self.failing[k]} elements beyond {self.tolerance:g})" if k in self.failing else "")
                for k in self.abs_diff]

    def to_json(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "rows": self.rows, "max_abs_diff": self.abs_diff,
                "max_rel_diff": self.rel_diff, "ok": self.ok}


def compare(want: list[dict[str, Any]], got: list[dict[str, Any]], tolerance: float, rows: str) -> Comparison:
    import numpy as np

    cmp = Comparison(tolerance, rows)
    for w, g in zip(want, got):
        for k, ref in w.items():
            ref = np.asarray(ref, dtype=np.float64)
            if k not in g:
                cmp.abs_diff[k], cmp.rel_diff[k] = float("inf"), float("inf")
                cmp.failing[k] = int(ref.size)
                continue
            out = np.asarray(g[k], dtype=np.float64)
            if out.shape != ref.shape:
                cmp.abs_diff[k], cmp.rel_diff[k] = float("inf"), float("inf")
                cmp.failing[k] = int(ref.size)
                continue
            d = np.abs(out - ref)
            d[np.isnan(d)] = np.inf
            cmp.abs_diff[k] = max(cmp.abs_diff.get(k, 0.0), float(d.max(initial=0.0)))
            rel = d / np.maximum(np.abs(ref), 1e-12)
            cmp.rel_diff[k] = max(cmp.rel_diff.get(k, 0.0), float(rel.max(initial=0.0)))
            bad = int(np.count_nonzero(d > tolerance + tolerance * np.abs(ref)))
            if bad:
                cmp.failing[k] = cmp.failing.get(k, 0) + bad
    return cmp


def self_check(target: str, path: Path, graph: Graph, trained: Graph, arrays: dict[str, Any], backend: str,
               xs_of: Callable[[int], list[Any]], rows: str, tolerance: float, precision: str | None = None
               ) -> Comparison:
    """Run the artifact at each of BATCHES and compare with the trained model."""
    batches = [xs_of(n) for n in BATCHES]
    want = [reference(trained, arrays, backend, xs) for xs in batches]
    got = run_artifact(target, path, graph, batches, precision=precision)
    return compare(want, got, tolerance, rows)
