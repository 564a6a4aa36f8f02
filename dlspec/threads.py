"""How many threads the numeric work of a run uses: `--threads auto|N` of `train`, `evaluate`,
`predict` and `verify`, and the ONNX Runtime sessions dlspec opens.

A framework left alone starts one compute thread per core of the machine and keeps idle ones
spinning. On a machine shared with other CPU-bound processes (a CI runner, a laptop, a second
training job) those threads contend with their neighbours and with each other, and a training
step gets slower than it is with one thread. `auto`:

1. starts from the CPUs this process may use: its affinity mask (`os.sched_getaffinity`) and a
   cgroup CPU quota (`cpu.max` of cgroup v2, `cpu.cfs_quota_us` of v1), less the data-loader
   workers, which need cores of their own;
2. keeps idle threads from spinning (`OMP_WAIT_POLICY=PASSIVE`, `KMP_BLOCKTIME=0`; ONNX Runtime's
   `session.intra_op.allow_spinning=0`) and uses one inter-op thread: set in the environment
   before the framework starts, so its thread pools are built that way;
3. where a measurement is cheap (PyTorch training on the CPU), times training steps of a copy of
   the model on one batch at 1 and at all the CPUs, interleaved, and keeps the faster. The copy
   and a forked random generator leave the run itself as it would be without the measurement;
   `--resume` reuses the choice recorded in the run's config.json.

The choice is printed in the run's log and recorded in config.json (`threads`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

#: how long the measurement of `auto` may take in all (seconds), and the most steps per setting
MEASURE_BUDGET_S = 3.0
MEASURE_STEPS = 6


@dataclass
class Choice:
    """What `--threads` resolved to, as config.json records it."""

    requested: str  # "auto" or the number given
    threads: int  # compute (intra-op) threads
    available: int  # the CPUs this process may use
    limit: str  # what bounded `available`: "cpus", "affinity" or "cgroup quota"
    workers: int = 0  # data-loader worker processes counted against `available`
    how: str = "given"  # "given", "all available" or "measured"
    measured: dict[str, float] = field(default_factory=dict)  # threads → training steps per second

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        text = f"threads: {self.threads} of {self.available} available CPUs ({self.limit}"
        if self.workers:
            text += f", {self.workers} for data-loader workers"
        text += f"; {self.how}"
        if self.measured:
            text += ": " + ", ".join(f"{k} → {v:.1f} steps/s" for k, v in self.measured.items())
        return text + ")"


# ---- the CPUs this process may use ----------------------------------------------------------


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup quota allows (None: no quota, or none readable)."""
    try:
        text = (root / "cpu.max").read_text().split()  # cgroup v2: "max 100000" or "150000 100000"
        if len(text) == 2 and text[0] != "max":
            quota, period = int(text[0]), int(text[1])
            return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """(the CPUs this process may use, what bounds them): the affinity mask, rounded down to a
    cgroup CPU quota (at least 1)."""
    total = os.cpu_count() or 1
    n, limit = total, "cpus"
    if hasattr(os, "sched_getaffinity"):
        try:
            mask = len(os.sched_getaffinity(0))
            if 0 < mask < n:
                n, limit = mask, "affinity"
        except OSError:
            pass
    quota = _cgroup_quota(cgroup_root)
    if quota is not None and math.floor(quota) < n:
        n, limit = max(1, math.floor(quota)), "cgroup quota"
    return max(1, n), limit


# ---- the option -----------------------------------------------------------------------------


class ThreadsType(click.ParamType):
    """`auto` or a positive number of threads."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> str | int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            text = str(value).strip().lower()
            if text == "auto":
                return "auto"
            try:
                n = int(text)
            except ValueError:
                self.fail(f"{value!r} is neither `auto` nor a number of threads", param, ctx)
        if n < 1:
            self.fail(f"{n} threads: give at least 1 (or `auto`)", param, ctx)
        return n


THREADS = ThreadsType()

THREADS_HELP = ("Compute threads: a number, or auto (the default): the CPUs this process may use (affinity, a "
                "cgroup quota), and in training the faster of 1 and all of them, measured on the first batch.")


def threads_option(**kw: Any):
    """The `--threads auto|N` option of the commands that compute."""
    return click.option("--threads", "threads", type=THREADS, default="auto", show_default=True,
                        help=kw.pop("help", THREADS_HELP), **kw)


# ---- setting it up --------------------------------------------------------------------------

#: the choice of this process (set by `prepare`), read by the trainers and ONNX Runtime sessions
_current: Choice | None = None


def current() -> Choice | None:
    return _current


def resolve(requested: str | int, workers: int = 0) -> Choice:
    """A Choice for `requested` before any measurement: N as given; auto → the available CPUs less
    the data-loader workers (at least 1)."""
    avail, limit = available_cpus()
    if requested == "auto":
        return Choice("auto", max(1, avail - workers), avail, limit, workers, "all available")
    return Choice(str(requested), int(requested), avail, limit, workers, "given")


def _env(n: int) -> None:
    """Environment the frameworks read when they start their thread pools (a variable the user set
    is kept)."""
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[key] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP


def prepare(requested: str | int = "auto", workers: int = 0) -> Choice:
    """Set this process up for `requested` threads before a framework starts: the environment its
    thread pools read, and PyTorch's pools when it is already imported. Returns the choice."""
    global _current
    choice = resolve(requested, workers)
    _env(choice.threads)
    _current = choice
    if "torch" in sys.modules:
        set_torch_threads(choice.threads)
    return choice


def set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # allowed once, before any inter-op work
    except RuntimeError:
        pass


def ort_session_options(threads: int | None = None, options: Any = None) -> Any:
    """`onnxruntime.SessionOptions` for `threads` compute threads (default: this process's choice,
    else the available CPUs), one inter-op thread, and idle threads that do not spin. Pass
    `options` to set these on SessionOptions made elsewhere."""
    import onnxruntime as ort

    if threads is None:
        threads = _current.threads if _current is not None else available_cpus()[0]
    opts = options if options is not None else ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


# ---- measuring (PyTorch training on the CPU) ------------------------------------------------


def _step_rate(step, n: int, rounds: list[float], setter) -> None:
    setter(n)
    t = time.perf_counter()
    step()
    rounds.append(time.perf_counter() - t)


def measure_torch(step, candidates: list[int], budget_s: float = MEASURE_BUDGET_S,
                  steps: int = MEASURE_STEPS, setter=None) -> dict[int, float]:
    """Steps per second of `step()` at each thread count, timed interleaved (a, b, a, b, ...) so a
    neighbour that starts or stops affects every setting alike; the median of each. One untimed
    step per setting first (allocations, kernels picked). Stops early past `budget_s`."""
    setter = setter or set_torch_threads
    times: dict[int, list[float]] = {n: [] for n in candidates}
    start = time.perf_counter()
    for n in candidates:  # warm-up
        setter(n)
        step()
    for _ in range(steps):
        for n in candidates:
            _step_rate(step, n, times[n], setter)
        if time.perf_counter() - start > budget_s:
            break
    import statistics

    return {n: 1.0 / max(statistics.median(ts), 1e-9) for n, ts in times.items() if ts}


def tune_torch_trainer(trainer: Any, echo=print, resume: bool = False) -> Choice | None:
    """Settle the threads of a PyTorch trainer about to `fit()`: `auto` on the CPU measures 1 and all
    available threads on a copy of the model and the first training batch (the run itself is left
    as it would be: its model, optimizer and random generators are not touched); `--resume` reuses
    the choice config.json recorded. Prints the choice and records it in config.json."""
    choice = _current
    if choice is None:
        return None
    run = getattr(trainer, "run", None)
    recorded = _recorded(run) if resume and run is not None else None
    if choice.requested == "auto" and recorded is not None and recorded.get("requested") == "auto":
        choice.threads = max(1, min(int(recorded.get("threads", choice.threads)), choice.available))
        choice.how = "as recorded when the run started"
        choice.measured = {}
    elif choice.requested == "auto" and getattr(trainer, "device", None) is not None \
            and trainer.device.type == "cpu" and choice.threads > 1 and getattr(trainer, "dist", None) is None:
        try:
            rates = measure_torch(_trial_step(trainer), sorted({1, choice.threads}))
        except Exception as exc:  # a measurement that fails leaves the all-CPUs default
            echo(f"warning W930: threads: measuring failed ({type(exc).__name__}); using {choice.threads}")
        else:
            best = max(rates, key=lambda n: rates[n])
            choice.threads, choice.how = best, "measured"
            choice.measured = {str(n): round(r, 2) for n, r in rates.items()}
    set_torch_threads(choice.threads)
    _env(choice.threads)
    echo(choice.describe())
    if run is not None and getattr(trainer, "writes", True):
        record(run, choice)
    return choice


def _trial_step(trainer: Any):
    """One training step (forward, loss, backward, SGD-free) of a copy of the trainer's model on its
    first batch, under a forked random generator: what the measurement times."""
    import copy

    import torch

    model = copy.deepcopy(trainer.model)
    model.train()
    data = trainer.train_data
    idx = torch.arange(min(len(data), trainer.cfg.batch))
    b = data.take(idx)

    def step() -> None:
        with torch.random.fork_rng(devices=[]):
            outs = trainer._outputs(b.x, module=model)
            loss, _ = trainer._loss(outs, trainer._targets(b.y))
            model.zero_grad(set_to_none=True)
            loss.backward()

    return step


def _recorded(run: Path) -> dict[str, Any] | None:
    import json

    try:
        value = json.loads((Path(run) / "config.json").read_text(encoding="utf-8")).get("threads")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, dict) else None


def record(run: Path, choice: Choice) -> None:
    """Add the choice to the run's config.json (`threads`), written atomically."""
    import json

    from .io import atomic_write_json

    path = Path(run) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(config, dict):
        return
    config["threads"] = choice.to_json()
    atomic_write_json(path, config)
