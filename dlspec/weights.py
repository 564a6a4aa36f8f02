"""Weights files: safetensors, keyed by IR parameter path, in the canonical (PyTorch) layout.

Reading a header needs no framework; loading tensors uses safetensors' numpy reader (no pickle).
Writing goes through a temporary file and an atomic rename, so a crash never leaves a
half-written file over a good one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_header(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Parameter path → shape, from a safetensors file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a malformed file
        raise ValueError(f"not a safetensors file ({exc})") from None


def load_numpy(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise ValueError(f"cannot read weights {path}: {exc}") from None


def save_numpy(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    from .io import atomic_write

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(arrays, str(tmp), metadata=metadata))


def load_graph_weights(graph, path: str | Path, strict: bool = True,
                       skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a canonical weights file for `graph`, checking every name and shape.

    Returns {parameter path: array} for the graph's parameters and buffers that the file holds
    (all of them when `strict`), leaving out paths under `skip`. Raises E506 for an unreadable
    file and E508 listing every mismatch."""
    from .errors import Diagnostic, DlspecError

    try:
        tensors = load_numpy(path)
    except ValueError as exc:
        raise DlspecError(Diagnostic(code="E506", message=str(exc))) from None
    params = {p.path: p for p in graph.params()}
    skipped = {k for k in params if any(k == s or k.startswith(s + ".") for s in skip)}
    problems = []
    for k, p in params.items():
        if k in skipped:
            continue
        if k not in tensors:
            if strict:
                problems.append(f"missing `{k}`")
            continue
        shape = tuple(int(d) for d in p.shape)
        if tuple(tensors[k].shape) != shape:
            problems.append(f"`{k}` is {list(tensors[k].shape)}, the model needs {list(shape)}")
    if strict:
        problems += [f"unexpected `{k}`" for k in tensors if k not in params]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise DlspecError(Diagnostic(code="E508", message=f"weights {path} do not fit `{graph.name}`: "
                                     + "; ".join(problems[:8]) + more))
    kept = {k: v for k, v in tensors.items() if k in params and k not in skipped}
    check_weight_values(kept, path)
    return kept


def check_weight_values(tensors: dict[str, np.ndarray], path: str | Path) -> None:
    """Weights are floating point (E510 names each tensor of another dtype: int64 weights are
    refused, not cast) and finite (E511 names each tensor holding NaN or infinity)."""
    from .errors import Diagnostic, DlspecError

    def listing(names: list[str]) -> str:
        return ", ".join(f"`{n}`" for n in names[:8]) + (f" (and {len(names) - 8} more)" if len(names) > 8 else "")

    wrong = [f"{k}` is {v.dtype}" for k, v in tensors.items() if not np.issubdtype(v.dtype, np.floating)]
    if wrong:
        raise DlspecError(Diagnostic(code="E510", message=f"weights {path}: " + "; ".join(f"`{w}" for w in wrong[:8])
                                     + (f" (and {len(wrong) - 8} more)" if len(wrong) > 8 else "")
                                     + "; weights are floating point",
                                     hint="write the weights as float32 (dlspec writes them so)"))
    bad = [k for k, v in tensors.items() if v.size and not np.isfinite(v).all()]
    if bad:
        raise DlspecError(Diagnostic(code="E511", message=f"weights {path}: {listing(bad)} hold NaN or infinite values",
                                     hint="the run that wrote them diverged; use an earlier checkpoint or train again"))
