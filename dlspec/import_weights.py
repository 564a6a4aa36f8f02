"""`dlspec import-weights`: weights saved by another program, matched to a spec's model by name.

A spec whose layers carry the names of a torchvision or Keras model (`as layer2.0.conv1`, see
docs/language.md) names its parameters as that model does (`layer2.0.conv1.weight`), so a state
dict written by that program fits it by name alone. This module reads such a file, matches its
tensors to the model's parameters and buffers, and writes them as a canonical safetensors file
that `weights = "..."`, `--weights` and `Spec.build(weights=...)` load.

Sources, none of them read with pickle's full power:

* `.safetensors`: safetensors' own reader;
* `.pt`, `.pth`, `.bin` (a PyTorch `state_dict`, possibly under a `state_dict` or `model` key):
  `torch.load(..., weights_only=True)`, PyTorch's restricted unpickler, which builds tensors and
  plain containers only and refuses any other object (so a hostile file cannot run code).

PyTorch's layout is dlspec's canonical layout, so tensors are taken as they are; float16 and
bfloat16 are widened to float32. Integer tensors that PyTorch keeps beside the weights
(`num_batches_tracked` of batch norm) are left out. Matching is by name after the renames
(`--rename OLD=NEW`: a file key starting with OLD starts with NEW instead; `--rename module.=`
strips DataParallel's prefix). A parameter the file lacks, or holds in another shape, is an
error listing every one (E513), unless it is under a `--skip` pattern or `--allow-missing` is
given: those start from dlspec's initialization (PyTorch's defaults) and the report says so.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import error

#: suffixes read as a PyTorch state dict
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
#: tensors PyTorch stores beside the weights that are not parameters of a dlspec model
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass
class Report:
    source: str
    matched: list[str] = field(default_factory=list)  # model paths filled from the file
    initialized: list[str] = field(default_factory=list)  # model paths left to the initializer
    unused: list[str] = field(default_factory=list)  # file keys no model path took
    ignored: list[str] = field(default_factory=list)  # file keys that are not weights (num_batches_tracked)
    widened: list[str] = field(default_factory=list)  # model paths whose tensor was float16/bfloat16
    renamed: dict[str, str] = field(default_factory=dict)  # file key -> model path, where they differ

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "matched": len(self.matched), "initialized": self.initialized,
                "unused": self.unused, "ignored": self.ignored, "widened": self.widened, "renamed": self.renamed}

    def lines(self, total: int) -> list[str]:
        out = [f"matched {len(self.matched)} of {total} model tensors by name from {self.source}"]
        if self.renamed:
            out.append(f"  {len(self.renamed)} after renaming (e.g. {next(iter(self.renamed))} -> "
                       f"{next(iter(self.renamed.values()))})")
        if self.initialized:
            out.append(f"  initialized (not taken from the file): {_listing(self.initialized)}")
        if self.widened:
            out.append(f"  widened to float32: {_listing(self.widened)}")
        if self.ignored:
            out.append(f"  left out, not weights: {len(self.ignored)} ({_listing(self.ignored, 3)})")
        if self.unused:
            out.append(f"  in the file but not in the model: {_listing(self.unused)}")
        return out


def _listing(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" (and {len(names) - n} more)" if len(names) > n else "")


def parse_renames(items: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise error("E514", f"--rename {item!r}: write OLD=NEW (a prefix of the file's names and what replaces it)",
                        hint="`--rename module.=` strips `module.`; `--rename backbone.=features.` renames a prefix")
        old, new = item.split("=", 1)
        if not old:
            raise error("E514", f"--rename {item!r}: the prefix to replace is empty",
                        hint="to add a prefix to every name, give the names' common start: `--rename layer=net.layer`")
        out.append((old, new))
    return out


def read_source(path: Path) -> dict[str, Any]:
    """The tensors of a weights file by key: numpy arrays, or torch tensors for a `.pt` file."""
    if not path.is_file():
        raise error("E512", f"weights {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from .weights import load_numpy

        try:
            return load_numpy(path)
        except ValueError as exc:
            raise error("E512", str(exc), hint="is it a safetensors file? a truncated download fails so") from None
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise error("E512", f"weights {path}: dlspec reads .safetensors and PyTorch state dicts (.pt, .pth, .bin)",
                hint="write the weights with safetensors' save_file or torch.save(model.state_dict(), ...)")


def _read_torch(path: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise error("E512", f"weights {path}: reading a PyTorch file needs PyTorch",
                    hint="pip install torch (or convert the file to .safetensors where PyTorch is installed)") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- the restricted unpickler's refusals and broken files alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error("E512", f"weights {path}: not a state dict PyTorch can read without running code ({first})",
                    hint="only tensors and plain containers load; save `model.state_dict()`, not the model object") \
            from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise error("E512", f"weights {path}: holds a {type(obj).__name__}, not a state dict of tensors",
                    hint="save `model.state_dict()`")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise error("E512", f"weights {path}: the state dict holds no tensors")
    return tensors


def _as_array(value: Any) -> tuple[np.ndarray, bool]:
    """(float32-or-wider array, whether it was widened from a half type)."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.float16:
            return value.astype(np.float32), True
        return value, False
    import torch

    t = value.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float().numpy(), True
    return t.numpy(), False


def match(graph, source: dict[str, Any], source_name: str, renames: list[tuple[str, str]] = (),
          skip: tuple[str, ...] = (), allow_missing: bool = False, seed: int = 0) -> tuple[dict[str, np.ndarray], Report]:
    """The model's tensors, from the file where its names match (else, where allowed, initialized)."""
    from .init import init_weights
    from .weights import check_weight_values

    report = Report(source_name)
    params = {p.path: p for p in graph.params()}
    by_model: dict[str, str] = {}  # model path -> file key
    for key in source:
        if key.endswith(IGNORED_SUFFIXES):
            report.ignored.append(key)
            continue
        name = key
        for old, new in renames:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        if name in params and name not in by_model:
            by_model[name] = key
            if name != key:
                report.renamed[key] = name
        else:
            report.unused.append(key)

    def skipped(path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pat) or path.startswith(pat.rstrip("*").rstrip(".") + ".")
                   for pat in skip)

    out: dict[str, np.ndarray] = {}
    missing, wrong, not_float = [], [], []
    for path, p in params.items():
        if skipped(path):
            report.initialized.append(path)
            if path in by_model:
                report.unused.append(by_model.pop(path))
            continue
        key = by_model.get(path)
        if key is None:
            missing.append(path)
            continue
        arr, widened = _as_array(source[key])
        shape = tuple(int(d) for d in p.shape)
        if tuple(arr.shape) != shape:
            wrong.append(f"`{path}` is {list(arr.shape)} in the file, the model needs {list(shape)}")
            continue
        if not np.issubdtype(arr.dtype, np.floating):
            not_float.append(f"`{key}` is {arr.dtype}")
            continue
        out[path] = np.ascontiguousarray(arr, dtype=np.float32)
        report.matched.append(path)
        if widened:
            report.widened.append(path)
    if not_float:
        raise error("E513", f"weights {source_name}: {'; '.join(not_float[:8])}; weights are floating point")
    problems = wrong + ([] if allow_missing else [f"missing `{m}`" for m in missing])
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        hint = _hint(list(params), report.unused, missing)
        raise error("E513", f"weights {source_name} do not fit `{graph.name}` by name: {'; '.join(problems[:8])}{more}",
                    hint=hint)
    report.initialized += missing
    if report.initialized:
        fresh = init_weights(graph, seed)
        for path in report.initialized:
            out[path] = fresh[path]
    check_weight_values(out, source_name)
    return out, report


def _hint(model_paths: list[str], unused: list[str], missing: list[str]) -> str:
    """Suggest the rename that would match most of the unused file keys to missing model paths."""
    missing_set = set(missing)
    best: tuple[int, str, str] | None = None
    for key in unused[:2000]:
        for path in missing[:2000]:
            if key.endswith(path) and key != path:
                old = key[: len(key) - len(path)]
                hits = sum(1 for k in unused if k.startswith(old) and k[len(old):] in missing_set)
                if best is None or hits > best[0]:
                    best = (hits, old, "")
                break
            if path.endswith(key) and key != path:
                new = path[: len(path) - len(key)]
                hits = sum(1 for k in unused if new + k in missing_set)
                if best is None or hits > best[0]:
                    best = (hits, "", new)
                break
        if best and best[0] > len(unused) // 2:
            break
    if best and best[0] > 1 and best[1]:
        return f"{best[0]} names match after `--rename {best[1]}=`"
    if best and best[0] > 1:
        return f"{best[0]} names match with the prefix `{best[2]}`: name the layers so in the spec"
    return ("name the spec's layers as the program that saved the file did (`as layer2.0.conv1`); "
            "`--skip PATTERN` initializes a part instead (a new head), `--allow-missing` every missing tensor")


def import_weights(graph, weights: Path, output: Path, renames: list[tuple[str, str]] = (),
                   skip: tuple[str, ...] = (), allow_missing: bool = False) -> Report:
    """Match `weights` to `graph` and write the canonical safetensors file `output` (atomically)."""
    from .weights import save_numpy

    if output.suffix.lower() != ".safetensors":
        raise error("E512", f"-o {output}: dlspec writes weights as .safetensors")
    if output.resolve() == weights.resolve():
        raise error("E512", f"-o {output} is the file being read; write to another file")
    source = read_source(weights)
    tensors, report = match(graph, source, str(weights), renames, skip, allow_missing)
    save_numpy(tensors, output, metadata={"format": "dlspec", "model": graph.name, "imported_from": weights.name})
    return report
