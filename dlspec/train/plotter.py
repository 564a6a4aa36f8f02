"""`curves.png`: the loss and metric curves of a run, drawn with matplotlib.

Importing matplotlib and rendering the first figure costs a training process about 0.7 s of one
core (measured with `bench/bench_process.py`; the epochs of a small model take less). So
`dlspec train` forks a drawing helper when it starts (`start()`, before any deep-learning
framework is imported and starts its threads): the helper imports matplotlib on the other core
while the trainer loads its data and framework, then waits. `draw()` hands it the records over a
pipe (JSON lines, nothing executable) and waits for its answer, so `curves.png` is complete when
training returns, as before. Where there is no helper (no `fork`, a framework already loaded in
this process, `DLSPEC_PLOT_IN_PROCESS=1`) or it fails, `draw()` draws in this process: the
figure is the same either way.

The helper ignores Ctrl-C (the trainer decides what an interrupt means), exits when the pipe
closes (the trainer ended, however it ended) and never touches anything but the file it is told
to write.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any

from ..io import atomic_write

#: seconds `draw()` waits for the helper before drawing in this process
TIMEOUT = 120.0

#: frameworks whose threads make a fork unsafe once they are imported
_THREADED = ("torch", "tensorflow", "jax", "mxnet", "onnxruntime")


def draw_curves(records: list[dict[str, Any]], title: str, out: Path) -> Path:
    """Draw one panel per logged quantity (train and validation) into `out`, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in records[-1] if k not in ("epoch", "lr", "time") and not k.startswith("val_")]
    fig = Figure(figsize=(4.2 * len(keys), 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, k in zip(axes[0], keys):
        ax.plot(epochs, [r.get(k) for r in records], marker="o", ms=3, label=f"train {k}")
        if any(f"val_{k}" in r for r in records):
            ax.plot(epochs, [r.get(f"val_{k}") for r in records], marker="o", ms=3, label=f"val {k}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(k)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90), suffix=".png")
    return out


class _Helper:
    def __init__(self, pid: int, to_child: int, from_child: int):
        self.pid = pid
        self.to_child = os.fdopen(to_child, "w", encoding="utf-8")
        self.from_child = from_child
        self.buffer = b""

    def ask(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Send one job; the helper's answer, or None if it did not answer in time."""
        self.to_child.write(json.dumps(job) + "\n")
        self.to_child.flush()
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.from_child], [], [], TIMEOUT)
            if not ready:
                return None
            chunk = os.read(self.from_child, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        try:
            self.to_child.close()  # the helper reads end of file and exits
        except OSError:
            pass
        try:
            os.close(self.from_child)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


_helper: _Helper | None = None


def start() -> bool:
    """Fork the drawing helper, where that is safe; True if one is running."""
    global _helper
    if _helper is not None:
        return True
    if not hasattr(os, "fork") or os.environ.get("DLSPEC_PLOT_IN_PROCESS") == "1":
        return False
    if any(name in sys.modules for name in _THREADED):
        return False
    import threading

    if threading.active_count() > 1:
        return False
    job_r, job_w = os.pipe()
    ans_r, ans_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the helper
        code = 0
        try:
            os.close(job_w)
            os.close(ans_r)
            _serve(job_r, ans_w)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(job_r)
    os.close(ans_w)
    _helper = _Helper(pid, job_w, ans_r)
    import atexit

    atexit.register(stop)
    return True


def _serve(jobs_fd: int, answers_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:  # the slow part, done while the trainer loads its data and framework
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except Exception:  # noqa: BLE001 -- drawing reports it below, job by job
        pass
    with os.fdopen(jobs_fd, "r", encoding="utf-8") as jobs, os.fdopen(answers_fd, "w", encoding="utf-8") as answers:
        for line in jobs:
            try:
                job = json.loads(line)
                draw_curves(job["records"], job["title"], Path(job["out"]))
                answer: dict[str, Any] = {"ok": True}
            except Exception as exc:  # noqa: BLE001 -- the trainer draws it itself and reports what fails
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            answers.write(json.dumps(answer) + "\n")
            answers.flush()


def draw(records: list[dict[str, Any]], title: str, out: Path) -> Path:
    """`curves.png` from `records`: by the helper when one runs, else (or if it fails) here."""
    global _helper
    helper = _helper
    if helper is not None:
        try:
            answer = helper.ask({"records": records, "title": title, "out": str(out)})
        except (OSError, TypeError, ValueError):
            answer = None
        if answer is not None and answer.get("ok"):
            return out
        stop(kill=answer is None)  # it failed or hung: drawing here gives the real error, if there is one
    return draw_curves(records, title, out)


def stop(kill: bool = False) -> None:
    """End the helper (idempotent); `kill`: it stopped answering, do not wait for it."""
    global _helper
    helper, _helper = _helper, None
    if helper is None:
        return
    if kill:
        try:
            os.kill(helper.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        helper.close()
    except Exception:  # noqa: BLE001 -- at exit: nothing left to report it to
        try:
            os.kill(helper.pid, signal.SIGKILL)
        except OSError:
            pass
