"""What a search leaves: the trials table (terminal, CSV, JSON), the best configuration as a
concrete spec that checks, and the pictures (optimization history, importances, parallel
coordinates)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ..errors import DlspecError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..search_space import FixedPicker
from .study import counts, header_of, load_study, read_settings, trial_kind

PLOTS = ("history.png", "importances.png", "parallel.png")


def rows(study: Any, info: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in study.get_trials(deepcopy=False):
        dur = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        out.append({
            "trial": t.number, "state": trial_kind(t),
            info["objective"]: t.value if t.values else None,
            "epochs": t.user_attrs.get("epochs", (max(t.intermediate_values) if t.intermediate_values else None)),
            "seconds": round(dur, 2) if dur is not None else None,
            "params": dict(t.params),
            "reason": t.user_attrs.get("invalid") or t.user_attrs.get("error"),
            "run": t.user_attrs.get("run") if trial_kind(t) in ("complete", "pruned") else None,
            "test": t.user_attrs.get("test", {}),
        })
    return out


def summary(study: Any, info: dict[str, Any]) -> dict[str, Any]:
    c = counts(study)
    best = _best(study)
    return {
        "spec": info["spec"], "study": info["study"], "objective": info["objective"], "direction": info["direction"],
        "trials": info["trials"], "counts": c,
        "check_seconds": round(sum(t.user_attrs.get("check_s", 0.0) for t in study.get_trials(deepcopy=False)), 3),
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": dict(best.params),
                                            "run": best.user_attrs.get("run"), "test": best.user_attrs.get("test", {})},
    }


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:
        return None


def table(rs: list[dict[str, Any]], info: dict[str, Any]) -> str:
    names: list[str] = []
    for r in rs:
        names += [k for k in r["params"] if k not in names]
    obj = info["objective"]
    head = ["trial", "state", obj, "epochs", "seconds", *names, "reason"]
    body = []
    for r in rs:
        body.append([str(r["trial"]), r["state"], _num(r[obj]), _num(r["epochs"]), _num(r["seconds"]),
                     *(_short(r["params"].get(n, "")) for n in names), _short(r["reason"] or "", 70)])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _short(v: Any, n: int = 24) -> str:
    s = _num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else " ".join(str(v).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def csv_text(rs: list[dict[str, Any]], info: dict[str, Any]) -> str:
    names: list[str] = []
    tests: list[str] = []
    for r in rs:
        names += [k for k in r["params"] if k not in names]
        tests += [k for k in r["test"] if k not in tests]
    obj = info["objective"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", obj, "epochs", "seconds", *names, *(f"test_{k}" for k in tests), "reason", "run"])
    for r in rs:
        w.writerow([r["trial"], r["state"], r[obj], r["epochs"], r["seconds"], *(r["params"].get(n, "") for n in names),
                    *(r["test"].get(k, "") for k in tests), r["reason"] or "", r["run"] or ""])
    return buf.getvalue()


def write_best(folder: Path, study: Any, info: dict[str, Any]) -> Path | None:
    """best.dls (the best trial's values put into the spec) and best.json; the spec is checked."""
    from .study import load_plan

    best = _best(study)
    if best is None:
        return None
    plan = load_plan(Path(info["spec"]), info["recipe"])
    picker = FixedPicker(plan.space.names, dict(best.params))
    plan.compile(picker)  # the same values the trial trained (raises if the spec no longer takes them)
    text = plan.concrete(picker, header_of(info, best.number, dict(best.params), best.value))
    path = folder / "best.dls"
    atomic_write_text(path, text)
    atomic_write_json(folder / "best.json", {"trial": best.number, info["objective"]: best.value,
                                             "params": dict(best.params), "run": best.user_attrs.get("run"),
                                             "test": best.user_attrs.get("test", {})})
    return path


def write_plots(folder: Path, study: Any) -> list[str]:
    """The three pictures; returns notes for the ones there are too few trials for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ov

    notes = []
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return ["no trial completed: no pictures"]
    varied = {k for t in done for k in t.params if len({str(x.params.get(k)) for x in done}) > 1}
    for name, fn, need in (("history.png", ov.plot_optimization_history, 1),
                           ("importances.png", ov.plot_param_importances, 2),
                           ("parallel.png", ov.plot_parallel_coordinate, 1)):
        if len(done) < need or (name == "importances.png" and not varied):
            notes.append(f"{name}: needs {need} or more completed trials with varied values")
            continue
        try:
            ax = fn(study)
        except (ValueError, RuntimeError) as exc:
            notes.append(f"{name}: {exc}")
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(folder / name, buf.getvalue())
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return notes


def finish(folder: Path) -> dict[str, Any]:
    """Write trials.csv, best.dls/best.json and the pictures; returns the summary."""
    import warnings

    info = read_settings(folder)
    study, _ = load_study(info)
    rs = rows(study, info)
    atomic_write_text(folder / "trials.csv", csv_text(rs, info))
    s = summary(study, info)
    s["notes"] = []
    try:
        best = write_best(folder, study, info)
        s["best_spec"] = str(best) if best else None
    except DlspecError as exc:
        s["best_spec"] = None
        s["notes"].append("best.dls not written: " + "; ".join(d.message for d in exc.diagnostics))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        s["notes"] += write_plots(folder, study)
    atomic_write_json(folder / "summary.json", s)
    return s


def status(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    info = read_settings(folder)
    study, _ = load_study(info)
    return summary(study, info), rows(study, info), info


def describe(s: dict[str, Any]) -> str:
    c = s["counts"]
    done = c["complete"] + c["pruned"] + c["failed"]
    lines = [f"study {s['study']}: {done}/{s['trials']} trained ({c['complete']} complete, {c['pruned']} pruned, "
             f"{c['failed']} failed), {c['running']} running, {c['invalid']} rejected by the checker before "
             f"training ({s['check_seconds']:.2f} s of checking)"
             + (f", {c['interrupted']} interrupted and run again" if c.get("interrupted") else "")]
    b = s.get("best")
    if b:
        v = b["value"]
        lines.append(f"best: trial {b['trial']}, {s['objective']} = {v:.6g}" if isinstance(v, float) and math.isfinite(v)
                     else f"best: trial {b['trial']}")
        for k, v in b["params"].items():
            lines.append(f"  {k} = {' '.join(str(v).split())}")
        if b.get("run"):
            lines.append(f"  run folder: {b['run']}")
    return "\n".join(lines)
