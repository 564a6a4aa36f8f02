"""Run folders: the one owner of the files a training run leaves behind — their names, the
`config.json` schema (versioned), the best/last weights rule, the one reader (`read_run`) — all
written so that nothing half-written ever replaces a good file (`dlspec.io`).

    RUN/
      config.json        version, spec path, program kind, backend, recipe, device, data
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
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import error
from ..io import atomic_dir, atomic_write_text
from ..io import atomic_write_bytes as atomic_write_bytes  # the run folder's writers, one implementation
from ..io import atomic_write_json as atomic_write_json
from ..io import atomic_write_npz as atomic_write_npz
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
CURVES = "curves.png"

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


def best_weights(run: Path, missing_ok: bool = False) -> Path:
    """The weights a finished run is used with: its best, else its last (a GAN: its generator's).
    None of them: E636, or with `missing_ok` the path of the best weights (for the caller to report)."""
    for name in (BEST, LAST, WEIGHTS["gan"]["last"][0]):
        if (run / name).is_file():
            return run / name
    if missing_ok:
        return run / BEST
    raise error("E636", f"{run} has no weights (best.safetensors or last.safetensors)",
                    hint="the run did not finish an epoch; train it again or resume it")


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
        from .plotter import draw

        return draw(self.records, title, self.folder / CURVES)


class ReadOnlyLog(RunLog):
    """The log of a process that does not write the run folder (a data-parallel rank other than
    0, a TensorFlow worker other than the chief): kept in memory (early stopping reads it)."""

    def flush(self) -> None:
        pass

    def plot(self, title: str) -> None:
        return None


def checkpoint_dirs(folder: Path) -> list[Path]:
    root = folder / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-") and (p / "state.json").exists())


#: a checkpoint's list of its files with their sizes and SHA-256 digests, written last
MANIFEST = "manifest.json"


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def commit_checkpoint(folder: Path, epoch: int, write: Any, keep: int) -> Path:
    """Write a checkpoint into a temporary folder with `write(tmpdir)`, add its manifest (every
    file's size and SHA-256), then rename it into place; keep the newest `keep`."""

    def write_all(tmp: Path) -> None:
        write(tmp)
        files = sorted(p for p in tmp.iterdir() if p.is_file() and p.name != MANIFEST)
        (tmp / MANIFEST).write_text(json.dumps(
            {p.name: {"size": p.stat().st_size, "sha256": _digest(p)} for p in files}, indent=1))

    final = atomic_dir(folder / CHECKPOINTS / f"epoch-{epoch:04d}", write_all)
    for old in checkpoint_dirs(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


# ---- config.json: one schema for every backend and program ------------------------------------

#: the version of the run folder's config.json this dlspec writes (and the newest it reads);
#: folders written before versions existed have none and read as version 1. Version 2 adds
#: `preprocessing`: what the data source learnt from the training split (`dlspec.data.prep`).
CONFIG_VERSION = 2


def write_config(run: Path, spec: Path, cfg: Any, backend: str, device: str, data: str, prep: Any = None,
                 **extra: Any) -> None:
    """config.json: what every run folder records, whichever backend and program trained it;
    `prep`: the data's `Preprocessing`, applied again by `evaluate --data` and `predict`."""
    if prep is not None:
        extra["preprocessing"] = prep.to_json()
    atomic_write_json(run / CONFIG, {
        "version": CONFIG_VERSION,
        "spec": str(Path(spec).resolve()),
        "kind": cfg.kind,
        "backend": backend,
        "recipe": recipe_json(cfg),
        "device": device,
        "data": data,
        **extra,
    })


def read_config(run: Path) -> tuple[Any, dict[str, Any]]:
    """(the recipe, the fields) of a run folder's config.json, validated; E635 names the field, and
    a version newer than this dlspec reads."""
    from ..ir.training import KINDS, TrainConfig

    path = run / CONFIG
    config = read_json(path, "E635")
    if not isinstance(config, dict):
        raise error("E635", f"{path}: not a JSON object")
    version = config.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error("E635", f"{path}: field `version`: {version!r} is not a version number")
    if version > CONFIG_VERSION:
        raise error("E635", f"{path}: run folder version {version}; this dlspec reads versions up to {CONFIG_VERSION}",
                    hint="the folder was written by a newer dlspec: upgrade dlspec to read it")
    if not isinstance(config.get("recipe"), dict):
        raise error("E635", f"{path}: field `recipe`: missing or not an object")
    if not isinstance(config.get("spec"), str):
        raise error("E635", f"{path}: field `spec`: missing or not a string")
    for key in ("kind", "backend"):
        if not isinstance(config.get(key, ""), str):
            raise error("E635", f"{path}: field `{key}`: not a string")
    kind = config.get("kind", "supervised")
    try:
        cfg = (KINDS[kind] if kind in KINDS else TrainConfig).model_validate(config["recipe"])
    except ValidationError as exc:
        raise error("E635", f"{path}: field `recipe.{field_of(exc)}`") from None
    return cfg, {"version": version, "kind": kind, "backend": "torch", **config}


def read_preprocessing(run: Path, config: dict[str, Any] | None = None) -> Any:
    """The run's `Preprocessing` (validated; E622 for a damaged record), or None for a run folder
    written before preprocessing was recorded."""
    from ..data.prep import Preprocessing

    if config is None:
        config = read_config(run)[1]
    if "preprocessing" not in config:
        return None
    return Preprocessing.from_json(config["preprocessing"], where=str(run / CONFIG))


def read_run(run: Path) -> tuple[Graph, Any, dict[str, Any]]:
    """The graph (a GAN's generator, a distillation's student), the recipe and the config of a
    finished run folder: the one reader `evaluate`, `predict`, `export` and `features` use."""
    if not (run / GRAPH).is_file() or not (run / CONFIG).is_file():
        raise error("E635", f"{run} is not a dlspec run folder (graph.json and config.json are missing)",
                    hint="pass the folder `dlspec train` printed, e.g. runs/digitscnn")
    graph = read_graph(run / GRAPH)
    cfg, config = read_config(run)
    if config["kind"] == "supervised":
        from ..program import recipe_problems

        problems = recipe_problems(cfg, graph)
        if problems:
            raise error("E635", f"{run / CONFIG}: the recipe does not fit {GRAPH}: {problems[0].message}",
                        hint="the run folder's files do not belong together; train the run again")
    return graph, cfg, config


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


# ---- faults: damaged checkpoints, interrupted writes, a folder two runs want --------------------


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file (its header and data sizes), None if it is."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated"
            n = int.from_bytes(head, "little")
            if n > size - 8 or n > 100 * 2**20:
                return f"{path.name} is truncated"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        return f"{path.name} cannot be read ({type(exc).__name__})"
    if 8 + n + end != size:
        return f"{path.name} is truncated ({size} bytes, its header describes {8 + n + end})"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why the checkpoint `folder` cannot be resumed from (None: it can): a missing or invalid
    state.json, a file that differs from the checkpoint's manifest (size or SHA-256), a truncated
    safetensors file."""
    if not (folder / "state.json").is_file():
        return "it has no state.json"
    try:
        read_state(folder / "state.json")
    except Exception as exc:  # DlspecError E632, naming the field
        return getattr(exc, "message", type(exc).__name__)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8"))
            for name, want in listed.items():
                p = folder / name
                if not p.is_file():
                    return f"{name} is missing"
                if p.stat().st_size != want["size"]:
                    return f"{name} is {p.stat().st_size} bytes, not the {want['size']} it was written with"
                if _digest(p) != want["sha256"]:
                    return f"{name} differs from what was written (SHA-256)"
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            return f"{MANIFEST} cannot be read ({type(exc).__name__})"
    for p in sorted(folder.glob("*.safetensors")):
        why = _safetensors_problem(p)
        if why:
            return why
    return None


def newest_checkpoint(run: Path, warn: Any = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of `run` that is whole, and its state; a damaged newer one is passed
    over with a warning through `warn`. None when the run has no checkpoint folder at all; E632
    when every one is damaged."""
    root = run / CHECKPOINTS
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-")) if root.is_dir() else []
    problems = []
    for d in reversed(dirs):
        why = checkpoint_problem(d)
        if why is None:
            return d, read_state(d / "state.json")
        problems.append(f"{d.name}: {why}")
        if warn is not None:
            warn(f"warning: checkpoint {d} is damaged ({why}); resuming from the one before")
    if dirs:
        raise error("E632", f"--resume: no checkpoint of {run} can be read ({'; '.join(problems)})",
                    hint="train the run again without --resume into another folder")
    return None


def remove_interrupted_writes(run: Path) -> list[Path]:
    """Remove the temporary files and checkpoint folders that interrupted writes left in `run`
    (`dlspec.io.TEMP_NAME`); only while this process holds the folder's lock."""
    from ..io import remove_temporaries

    return remove_temporaries(run) + remove_temporaries(run / CHECKPOINTS)


#: the lock file a live `dlspec train` holds in its run folder (it holds its process id)
LOCK = ".lock"


def holds_run(run: Path) -> bool:
    """Whether `run` holds anything besides a lock file (a run, or something else)."""
    return run.is_dir() and any(p.name != LOCK for p in run.iterdir())


class RunLock:
    """The exclusive lock of a run folder, held by the one process that trains into it.

    `fcntl.flock` on `RUN/.lock`: the kernel releases it when the holder dies (even by SIGKILL),
    so a stale lock file of a dead process is simply taken over. The file holds the holder's
    process id for the message a second run gets (E670), and is removed on release.
    """

    def __init__(self, run: Path):
        self.run = Path(run)
        self.path = self.run / LOCK
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        import os

        try:
            import fcntl
        except ImportError:  # no flock (Windows): a process id file, taken over when its process is gone
            return self._acquire_pid_file()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
                os.close(fd)
                raise self._busy(holder) from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder may have removed the file between our open and flock: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self

    def _acquire_pid_file(self) -> RunLock:
        import os

        if self.path.is_file():
            holder = self.path.read_text(encoding="ascii", errors="replace").strip()
            if holder.isdigit() and int(holder) != os.getpid() and _alive(int(holder)):
                raise self._busy(holder)
        self.path.write_text(f"{os.getpid()}\n", encoding="ascii")
        self.fd = -1
        return self

    def _busy(self, holder: str) -> Exception:
        who = f"process {holder}" if holder.isdigit() else "another process"
        return error("E670", f"run folder {self.run} is in use: a `dlspec train` ({who}) is training into it",
                     hint="wait for it to end, or train into another folder with --out")

    def release(self) -> None:
        import os

        if self.fd is None:
            return
        try:
            if self.fd >= 0 and os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
            elif self.fd < 0:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


#: schedules whose shape is fixed by the number of epochs (cosine without its own t_max,
#: one_cycle): `--resume --epochs N` with another N would bend the rate mid-run (E671)
def epoch_bound_schedule(cfg: Any) -> str | None:
    """The name of the part of `cfg`'s schedule whose length follows the epoch count, or None."""
    for part in getattr(cfg, "schedule", None) or ():
        kind = getattr(part, "type", type(part).__name__.lower())
        if kind == "cosine" and not getattr(part, "t_max", None):
            return "cosine()"
        if kind == "one_cycle":
            return "one_cycle(...)"
    return None
