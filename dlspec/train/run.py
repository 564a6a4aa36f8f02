"""Run folders: the files a training run leaves behind, written so that nothing half-written
ever replaces a good file (temporary file + atomic rename).

    RUN/
      config.json        the recipe, the model's arguments, the spec path, the backend
      graph.json         the lowered IR (evaluate/predict rebuild the model from it)
      model.py           the generated module source, for reading
      metrics.jsonl      one JSON object per epoch
      metrics.csv        the same, as a table
      curves.png         loss and metric curves
      best.safetensors   weights of the best epoch (canonical layout)
      last.safetensors   weights of the last finished epoch
      test_metrics.json  the final test metrics
      checkpoints/epoch-0007/  weights, optimizer and RNG state for --resume
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import error
from ..ir.check import GraphInvalid, revalidated
from ..ir.graph import Graph

#: the files of a run folder
CONFIG = "config.json"
GRAPH = "graph.json"
MODEL_PY = "model.py"
METRICS_JSONL = "metrics.jsonl"
BEST = "best.safetensors"
LAST = "last.safetensors"
BEST_JSON = "best.json"
TEST_METRICS = "test_metrics.json"
CHECKPOINTS = "checkpoints"

#: the weights a program writes: "best" (the best epoch by the checkpoint's monitor) and "last"
#: (the last checkpointed epoch; a GAN's two networks after every epoch)
WEIGHTS: dict[str, dict[str, tuple[str, ...]]] = {
    "supervised": {"best": (BEST,), "last": (LAST,)},
    "gan": {"last": ("generator.safetensors", "discriminator.safetensors")},
}


def weights_files(run: Path, program: str, which: str) -> list[Path]:
    """The files of `which` weights ("best", "last") a `program` run keeps in the folder `run`."""
    return [run / name for name in WEIGHTS[program][which]]


def role_weights(run: Path, role: str) -> Path:
    """The weights of one network of a run with several (a GAN's generator or discriminator)."""
    path = run / f"{role}.safetensors"
    if not path.is_file():
        raise error("E645", f"{run} has no {role} weights ({path.name})",
                        hint="the run did not finish an epoch; train it again or resume it")
    return path


def best_weights(run: Path) -> Path:
    """The weights a finished run is used with: its best, else its last (a GAN: its generator's)."""
    for name in (BEST, LAST, WEIGHTS["gan"]["last"][0]):
        if (run / name).is_file():
            return run / name
    raise error("E636", f"{run} has no weights (best.safetensors or last.safetensors)",
                    hint="the run did not finish an epoch; train it again or resume it")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` improves on `best` (None: nothing yet) by more than `min_delta`."""
    return best is None or (value < best - min_delta if mode == "min" else value > best + min_delta)


class EarlyStopping:
    """The recipe's `early_stop(...)` rule, the same for every trainer. The best value is replayed
    from the epochs already logged (on resume); the count of epochs without improvement is the
    trainer's to checkpoint and is passed back in."""

    def __init__(self, es: Any, records: list[dict[str, Any]], bad_epochs: int = 0):
        from .metrics import default_mode

        self.es = es
        self.mode = es.mode if es.mode != "auto" else default_mode(es.monitor)
        self.best: float | None = None
        self.bad_epochs = bad_epochs
        for rec in records:
            v = rec.get(es.monitor)
            if v is not None and is_better(v, self.best, self.mode, es.min_delta):
                self.best = v

    def update(self, logs: dict[str, Any]) -> int:
        """Record an epoch's logs; returns the number of epochs without improvement."""
        v = logs[self.es.monitor]
        if is_better(v, self.best, self.mode, self.es.min_delta):
            self.best, self.bad_epochs = v, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.es.patience

    @property
    def message(self) -> str:
        return f"early stop: {self.es.monitor} has not improved for {self.es.patience} epochs"


def epoch_line(logs: dict[str, Any], epochs: int) -> str:
    """The one line a trainer prints per epoch."""
    items = [f"{k}={v:.4f}" for k, v in logs.items() if k not in ("epoch", "time", "lr") and isinstance(v, float)]
    return f"epoch {logs['epoch']}/{epochs}  " + "  ".join(items) + f"  lr={logs['lr']:.3g}  ({logs['time']:.1f}s)"


def recipe_json(cfg: Any) -> dict[str, Any]:
    """A recipe as config.json stores it: the fields the spec set, plus every nested config's
    `type`, so a config left at its defaults (`loss = cross_entropy()`) reloads as itself."""
    from pydantic import BaseModel

    def walk(model: Any, dumped: Any) -> Any:
        if isinstance(model, BaseModel) and isinstance(dumped, dict):
            if "type" in type(model).model_fields and "type" not in dumped:
                dumped = {"type": model.type, **dumped}
            for name in type(model).model_fields:
                if name in dumped:
                    dumped[name] = walk(getattr(model, name), dumped[name])
        elif isinstance(model, dict) and isinstance(dumped, dict):
            dumped = {k: walk(model[k], v) if k in model else v for k, v in dumped.items()}
        elif isinstance(model, (list, tuple)) and isinstance(dumped, list):
            dumped = [walk(m, d) for m, d in zip(model, dumped)]
        return dumped

    return walk(cfg, cfg.model_dump(mode="json", exclude={"span"}, exclude_unset=True))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_write_npz(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunLog:
    """Per-epoch records, kept in memory and rewritten whole (runs have few epochs)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.records: list[dict[str, Any]] = []

    def load(self, upto_epoch: int, folder: Path | None = None) -> None:
        """The records of the epochs up to `upto_epoch`, from `folder` (default: this log's)."""
        path = (folder or self.folder) / METRICS_JSONL
        self.records = []
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("epoch", 0) <= upto_epoch:
                        self.records.append(rec)

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.flush()

    def flush(self) -> None:
        atomic_write_text(self.folder / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in self.records))
        keys: list[str] = []
        for r in self.records:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.records)
        atomic_write_text(self.folder / "metrics.csv", buf.getvalue())

    def plot(self, title: str) -> Path | None:
        if not self.records:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in self.records[-1] if k not in ("epoch", "lr", "time") and not k.startswith("val_")]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
        epochs = [r["epoch"] for r in self.records]
        for ax, k in zip(axes[0], keys):
            ax.plot(epochs, [r.get(k) for r in self.records], marker="o", ms=3, label=f"train {k}")
            if any(f"val_{k}" in r for r in self.records):
                ax.plot(epochs, [r.get(f"val_{k}") for r in self.records], marker="o", ms=3, label=f"val {k}")
            ax.set_xlabel("epoch")
            ax.set_title(k)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title)
        fig.tight_layout()
        out = self.folder / "curves.png"
        fd, tmp = tempfile.mkstemp(prefix=".curves.", suffix=".png", dir=self.folder)
        os.close(fd)
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, out)
        return out


class ReadOnlyLog(RunLog):
    """The log of a process that does not write the run folder (a data-parallel rank other than
    0, a TensorFlow worker other than the chief): kept in memory (early stopping reads it)."""

    def flush(self) -> None:
        pass

    def plot(self, title: str) -> None:
        return None


def checkpoint_dirs(folder: Path) -> list[Path]:
    root = folder / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-") and (p / "state.json").exists())


def commit_checkpoint(folder: Path, epoch: int, write: Any, keep: int) -> Path:
    """Write a checkpoint into a temporary folder with `write(tmpdir)`, then rename it into place;
    keep the newest `keep`."""
    root = folder / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch:04d}.", dir=root))
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


# ---- reading a run folder: untrusted files, validated like a spec ------------------------------



def field_of(exc: ValidationError) -> str:
    """`nodes.3.attrs: Input should be a valid integer` — the first failing field of a validation."""
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    return f"{loc}: {e['msg']}" if loc else e["msg"]


def read_json(path: Path, code: str) -> Any:
    """The JSON in `path`, or `code` naming the file (never its contents)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        if isinstance(exc, json.JSONDecodeError):
            why = f"not JSON ({exc.msg} at line {exc.lineno})"
        raise error(code, f"{path}: cannot be read: {why}") from None


def read_graph(path: Path) -> Graph:
    """A graph file of a run folder (graph.json, generator.json, ...), checked as the compiler
    checks a spec's model: the schema, every name, every attribute through its op, every shape."""
    data = read_json(path, "E635")
    try:
        graph = Graph.model_validate(data)
        return revalidated(graph)
    except ValidationError as exc:
        raise error("E635", f"{path}: not a dlspec graph: {field_of(exc)}",
                        hint="the run folder is damaged or was edited; train the spec again") from None
    except GraphInvalid as exc:
        raise error("E635", f"{path}: field `{exc.where}`: {exc.message}",
                        hint="the run folder is damaged or was edited; train the spec again") from None


class CheckpointState(BaseModel):
    """The fields of a checkpoint's state.json that every trainer writes; the rest is the
    trainer's own (optimizer and schedule state) and is checked where it is read."""

    model_config = ConfigDict(extra="allow")

    epoch: int = Field(ge=0, le=10**9, strict=True)
    best_value: float | None = None
    bad_epochs: int = Field(default=0, ge=0, le=10**9, strict=True)


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json, its common fields validated; E632 names the file and field."""
    data = read_json(path, "E632")
    try:
        CheckpointState.model_validate(data)
    except ValidationError as exc:
        raise error("E632", f"{path}: {field_of(exc)}",
                        hint="the checkpoint is damaged; remove that checkpoint folder to resume from the one before") from None
    return data
