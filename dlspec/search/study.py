"""`dlspec search`: a spec's search values explored on Optuna, every configuration checked first.

One search lives in one folder (`-o DIR`):

* `search.json` — what the workers need: the spec, the recipe, the study's storage and name,
  the trial budget (written once; `--resume` reads it back);
* `study.db` — the Optuna study (embedded SQLite) unless `--storage URL` names another database;
* `trials/trial-NNNN/` — each trained trial's run folder (a standard one: `dlspec evaluate`,
  `predict` and `export` take it) with `trial.dls`, the concrete spec it trained;
* `trials.csv`, `best.dls` (the best configuration as a concrete spec, checked), `best.json`,
  and `history.png`, `importances.png`, `parallel.png`.

Each trial: the sampler proposes values (define-by-run, so a value inside an unchosen option is
never asked for), the spec is compiled with them by the full checker, and only a configuration
that passes is trained (through `train.session.train`, the code path of `dlspec train`). One that
fails is told to Optuna as FAIL with its located reason in the trial's `invalid` attribute; it
costs no training and does not count towards `trials`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DlspecError, error
from ..io import atomic_write_json, atomic_write_text
from ..search_space import OptunaPicker, Picker, Space, read_space
from ..source import SourceFile

SETTINGS = "search.json"
TRIALS = "trials"
#: invalid configurations tolerated per trial to train before the search stops asking for more
INVALID_PER_TRIAL = 20


class Invalid(Exception):
    """A sampled configuration the checker rejects (the trial is told FAIL)."""


# ---- the spec and its space ------------------------------------------------------------------


@dataclass
class Plan:
    """A spec with search values, read and checked once per process."""

    spec: Path
    src: SourceFile
    space: Space
    recipe: str | None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.src.text.encode()).hexdigest()

    def compile(self, picker: Picker | None) -> Any:
        """The program of one configuration (DlspecError: the checker's diagnostics)."""
        from ..program import compile_source

        if picker is not None:
            picker.file = self.src.name
        return compile_source(self.src, observe=(lambda ev: setattr(ev, "search", picker)) if picker else None)

    def recipe_of(self, program: Any) -> Any:
        from ..train.programs import pick_recipe

        return pick_recipe(program, self.recipe, self.spec)

    def concrete(self, picker: Picker, header: str = "") -> str:
        from ..search_space import concrete_text

        return concrete_text(self.src.text, self.space, picker, header)


def load_plan(spec: Path, recipe: str | None = None) -> Plan:
    from ..parser import parse
    from ..program import read_source
    from ..search_space import remember_text

    src = read_source(spec)
    remember_text(src.name, src.text)
    space = read_space(parse(src), recipe)
    if not space.dims:
        from ..program import compile_source

        compile_source(src, base_dir=Path(spec).parent)  # a spec's own errors come before "nothing to search"
        raise error("E948", f"{spec} has no search values: nothing to search",
                    hint="write choice(...), range(lo, hi), log_range(lo, hi) or int_range(lo, hi) where a value "
                         "may vary (docs/search.md)")
    return Plan(Path(spec), src, space, recipe)


def settings_of(cfg: Any) -> Any:
    from ..ir.training import Search

    return cfg.search if getattr(cfg, "search", None) is not None else Search()


def direction_of(objective: str, direction: str | None) -> str:
    if direction is not None:
        return direction
    low = ("loss", "error", "mse", "mae", "rmse", "perplexity")
    return "minimize" if any(objective.endswith(s) for s in low) else "maximize"


def objective_problem(cfg: Any, program: Any, objective: str) -> str | None:
    """Why `objective` is not a number the trials produce (None: it is)."""
    from ..ir.training import logged_keys

    if cfg.kind != "supervised":
        return f"`dlspec search` trains supervised recipes (`train Model {{...}}`); this one is `{cfg.kind}`"
    graph = program.models.get(cfg.model.name)
    outputs = [o.name for o in graph.outputs] if graph is not None else ["output"]
    keys = logged_keys(outputs, cfg.metrics)
    if objective in keys or (objective.startswith("test_") and objective[5:] in keys):
        return None
    return (f"the objective `{objective}` is not a metric this recipe logs; it logs {', '.join(keys)} "
            f"(and test_<metric> for the test split)")


def first_reason(exc: DlspecError) -> tuple[str, str, Diagnostic]:
    """(code, one-line located reason, diagnostic) of a rejected configuration."""
    d = next((x for x in exc.diagnostics if x.severity == "error"), exc.diagnostics[0])
    where = f"{Path(d.span.file).name}:{d.span.line}:{d.span.column}: " if d.span else ""
    return d.code, f"{where}{d.code}: {d.message}", d


# ---- probing the space before the search -------------------------------------------------------


class _PathPicker(Picker):
    """Walks the tree of a define-by-run space: option `path[k]` at the k-th pick (0 beyond the
    path), recording how many options each pick had. A range counts as three options: its low
    end, its default and its high end."""

    def __init__(self, names, path: list[int]):
        super().__init__(names)
        self.path = path
        self.arity: list[int] = []
        self.exact = True  # False once a continuous range was met: probing, not proof

    def _next(self, n: int) -> int:
        k = len(self.arity)
        self.arity.append(n)
        return self.path[k] if k < len(self.path) else 0

    def _choice(self, name, labels, options, default):
        return self._next(len(options))

    def _number(self, name, kind, lo, hi, log, step, default):
        if kind == "int" and (hi - lo) // (step or 1) < 16:
            values = list(range(lo, hi + 1, step or 1))
        else:
            self.exact = False
            values = [lo, default, hi]
        return values[self._next(len(values))]


@dataclass
class Probe:
    configs: int  # configurations checked
    valid: int
    exact: bool  # every configuration of the space was checked
    failures: list[tuple[dict[str, Any], str, Diagnostic]]  # params, reason, diagnostic
    valid_params: list[dict[str, Any]]
    default_error: Diagnostic | None
    program: Any  # of a valid configuration (the default one when valid)


def probe(plan: Plan, limit: int = 256) -> Probe:
    """Check configurations of the space before any trial: all of them when the space is finite
    and has at most `limit` points (then what it says is proven), else `limit` of them."""
    names = plan.space.names
    default_error = None
    program = None
    try:
        program = plan.compile(None)
    except DlspecError as exc:
        default_error = first_reason(exc)[2]
    failures: list[tuple[dict[str, Any], str, Diagnostic]] = []
    valid: list[dict[str, Any]] = []
    exact = True
    path: list[int] = []
    n = 0
    rng = None  # a space too large to enumerate is probed at random points
    first_arity: list[int] = []
    while n < limit:
        if rng is not None:
            path = [rng.randrange(a) for a in first_arity]
        p = _PathPicker(names, path)
        try:
            prog = plan.compile(p)
            valid.append(dict(p.params))
            program = program or prog
        except DlspecError as exc:
            _, reason, diag = first_reason(exc)
            failures.append((dict(p.params), reason, diag))
        n += 1
        exact = exact and p.exact
        if n == 1 and math.prod(p.arity) > limit:
            import random

            rng, first_arity, exact = random.Random(0), p.arity, False
            continue
        if rng is not None:
            continue
        # the next path: the odometer over the arities this configuration met
        nxt = list(path) + [0] * (len(p.arity) - len(path))
        nxt = nxt[:len(p.arity)]
        i = len(nxt) - 1
        while i >= 0 and nxt[i] + 1 >= p.arity[i]:
            i -= 1
        if i < 0:
            break
        path = nxt[:i] + [nxt[i] + 1]
    else:
        exact = False
    return Probe(n, len(valid), exact, failures, valid, default_error, program)


def never_valid(plan: Plan, pr: Probe) -> list[Diagnostic]:
    """W941 for each option of a choice (or int value) that no checked configuration could use."""
    out = []
    if not pr.valid:
        return out
    for d in plan.space.dims:
        seen_ok = {_hashable(v[d.name]) for v in pr.valid_params if d.name in v}
        bad: dict[Any, str] = {}
        for params, reason, _ in pr.failures:
            if d.name in params and _hashable(params[d.name]) not in seen_ok:
                bad.setdefault(_hashable(params[d.name]), reason)
        if d.func == "choice" or d.func == "int_range":
            for v, reason in bad.items():
                proof = "in every configuration of the space" if pr.exact else f"in the {pr.configs} configurations probed"
                span = d.span
                if d.func == "choice":  # the option itself
                    from ..search_space import _literal, label_of

                    span = next((o.span for o in d.node.args if _hashable(_option(o)) == v
                                 or label_of(o, _literal(o)) == v), d.span)
                out.append(Diagnostic(code="W941", severity="warning", span=span,
                                      message=f"`{d.name}` = {v} never passes the checker {proof}; the first "
                                              f"reason: {reason}",
                                      hint="drop the option; the search would only spend (free) trials on it"))
    return out


def _option(node: Any) -> Any:
    from ..search_space import _literal, label_of

    is_lit, v = _literal(node)
    return v if is_lit else label_of(node, (is_lit, v))


def _hashable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else json.dumps(v)


def preflight(plan: Plan, for_search: bool = True) -> tuple[Probe, Any, list[Diagnostic]]:
    """The checks before a search: E949 when no configuration passes, E947 for an objective the
    trials never log; warnings for options never valid. Returns (probe, recipe config, warnings)."""
    pr = probe(plan)
    if not pr.valid:
        # the reason most configurations fail, at its place
        counts: dict[tuple, int] = {}
        for _, _, diag in pr.failures:
            k = (diag.code, str(diag.span))
            counts[k] = counts.get(k, 0) + 1
        code, where = max(counts, key=counts.get)  # type: ignore[arg-type]
        diag = next(d for _, _, d in pr.failures if (d.code, str(d.span)) == (code, where))
        if diag.code == "E948":  # not a region of the space: a value the search cannot vary
            raise DlspecError(diag)
        proof = (f"every one of its {pr.configs} configurations" if pr.exact
                 else f"all {pr.configs} configurations probed")
        raise DlspecError(Diagnostic(
            code="E949", span=diag.span,
            message=f"no configuration of the search space passes the checker ({proof} fail; "
                    f"{counts[(code, where)]} of them at this place, the first with {diag.code}: {diag.message})",
            hint=diag.hint or "widen the space so that some configuration is valid",
            notes=[f"search values: {', '.join(d.name for d in plan.space.dims)}"]))
    cfg = plan.recipe_of(pr.program) if pr.program.recipes or for_search else None
    problem = None
    if cfg is not None:
        problem = objective_problem(cfg, pr.program, settings_of(cfg).objective)
    if problem:
        span = plan.space.search_entry.span if plan.space.search_entry is not None else getattr(cfg, "span", None)
        raise DlspecError(Diagnostic(code="E947", message=problem, span=span,
                                     hint='set search = {objective: "val_accuracy", ...} to a logged metric'))
    warnings = never_valid(plan, pr)
    if pr.default_error is not None:
        d = pr.default_error
        warnings.insert(0, Diagnostic(code="W940", severity="warning", span=d.span,
                                      message=f"the default configuration fails the checker ({d.code}: {d.message}); "
                                              "`dlspec train` on this spec would stop there",
                                      hint="give the search values a valid `default=`"))
    return pr, cfg, warnings


# ---- storage ---------------------------------------------------------------------------------


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def open_storage(url: str) -> Any:
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what resumes killed trials
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=10, grace_period=40,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except (ImportError, ModuleNotFoundError) as exc:
        what = f" `{exc.name}`" if exc.name else ""
        raise error("E950", f"cannot open the study storage {_safe_url(url)}: its database driver{what} "
                    "is not installed", hint="for PostgreSQL: pip install psycopg2-binary") from None
    except Exception as exc:  # SQLAlchemy's errors: a bad URL, an unreachable server, a locked file
        raise error("E950", f"cannot open the study storage {_safe_url(url)}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}") from None
    finally:
        optuna.logging.set_verbosity(optuna.logging.ERROR)


def _safe_url(url: str) -> str:
    """A database URL without its password (never printed)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def make_sampler(name: str, seed: int | None, plan_space: Space, worker: int) -> Any:
    import optuna

    s = None if seed is None else seed + worker  # workers of one search must not propose the same values
    if name == "random":
        return optuna.samplers.RandomSampler(seed=s)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(plan_space), seed=s)
    return optuna.samplers.TPESampler(seed=s, n_startup_trials=5, multivariate=True, constant_liar=True)


def grid_space(space: Space) -> dict[str, list[Any]]:
    """The grid of a space of choices and stepped integer ranges (E953 otherwise)."""
    from .. import ast
    from ..search_space import _literal

    grid: dict[str, list[Any]] = {}
    for d in space.dims:
        n = d.node
        if d.func == "choice":
            lits = [_literal(o) for o in n.args]
            from ..search_space import label_of

            grid[d.name] = [v if is_lit else label_of(o, (is_lit, v)) for o, (is_lit, v) in zip(n.args, lits)]
        elif d.func == "int_range" and all(isinstance(a, ast.Literal) for a in n.args[:2]):
            step = next((k.value.value for k in n.kwargs if k.name == "step" and isinstance(k.value, ast.Literal)), 1)
            grid[d.name] = list(range(n.args[0].value, n.args[1].value + 1, step))
        elif d.func == "range" and any(k.name == "step" for k in n.kwargs) and \
                all(isinstance(a, ast.Literal) for a in n.args[:2]):
            step = next(k.value.value for k in n.kwargs if k.name == "step")
            lo, hi = n.args[0].value, n.args[1].value
            grid[d.name] = [lo + i * step for i in range(int(math.floor((hi - lo) / step + 1e-9)) + 1)]
        else:
            raise error("E953", f"sampler grid needs a finite space; `{d.name}` ({d.func} at line {d.span.line}) is "
                        "continuous or has bounds that are not literal numbers",
                        hint="give it `step=`, make it a choice, or use sampler tpe or random")
    return grid


def make_pruner(name: str) -> Any:
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    # not before the 3rd epoch: first epochs are noisy, and a warmup schedule starts them low
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)


def study_name(spec: Path, recipe: str) -> str:
    return f"{Path(spec).stem}-{recipe}"


def load_study(info: dict[str, Any], worker: int = 0) -> Any:
    import optuna

    from ..search_space import remember_text

    storage = open_storage(info["storage"])
    plan = load_plan(Path(info["spec"]), info["recipe"])
    remember_text(plan.src.name, plan.src.text)
    sampler = make_sampler(info["sampler"], info["seed"], plan.space, worker)
    return optuna.load_study(study_name=info["study"], storage=storage, sampler=sampler,
                             pruner=make_pruner(info["pruner"])), plan


# ---- trials --------------------------------------------------------------------------------


def trial_kind(t: Any) -> str:
    """complete, pruned, invalid (rejected by the checker), failed (in training), running, waiting."""
    state = t.state.name.lower()
    if state == "fail":
        if "invalid" in t.user_attrs:
            return "invalid"
        # no reason recorded: its worker stopped (killed, or its heartbeat went stale); run again
        return "failed" if "error" in t.user_attrs else "interrupted"
    return state


def counts(study: Any) -> dict[str, int]:
    out = {"complete": 0, "pruned": 0, "invalid": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        out[trial_kind(t)] = out.get(trial_kind(t), 0) + 1
    return out


def trained(c: dict[str, int]) -> int:
    """Trials that count towards the budget: trained or training (retried ones once)."""
    return c["complete"] + c["pruned"] + c["failed"] + c["running"]


@contextmanager
def epoch_reports(report: Callable[[dict[str, Any]], None]):
    """Let `report` see every epoch record of the trainings inside (for pruning): the run log of
    `dlspec train` is wrapped as `--tensorboard` wraps it (`train/tensorboard.attach`)."""
    from ..train import tensorboard as tb

    original = tb.attach

    def attach(stepper: Any, folder: Any, graph: Any) -> None:
        original(stepper, folder, graph)
        stepper.log = _ReportingLog(stepper.log, report)

    tb.attach = attach
    try:
        yield
    finally:
        tb.attach = original


class _ReportingLog:
    def __init__(self, log: Any, report: Callable[[dict[str, Any]], None]):
        self._log = log
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append(self, record: dict[str, Any]) -> None:
        self._log.append(record)
        self._report(record)


def _records(run: Path) -> list[dict[str, Any]]:
    from ..train.run import METRICS_JSONL

    path = run / METRICS_JSONL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def objective_value(objective: str, direction: str, records: list[dict[str, Any]], test: dict[str, float]) -> float:
    if objective.startswith("test_") and objective[5:] in test:
        return float(test[objective[5:]])
    values = [float(r[objective]) for r in records if isinstance(r.get(objective), (int, float))]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        raise error("E947", f"the runs logged no finite `{objective}`")
    return max(values) if direction == "maximize" else min(values)


def header_of(info: dict[str, Any], number: int | None, params: dict[str, Any], value: float | None = None) -> str:
    lines = [f"# {'The best configuration' if value is not None else 'One configuration'} of the search over "
             f"{Path(info['spec']).name} (dlspec search, study {info['study']}"
             + (f", trial {number}" if number is not None else "") + ")"]
    if value is not None:
        lines.append(f"# {info['objective']} = {value:.6g} ({info['direction']})")
    for k, v in params.items():
        lines.append(f"#   {k} = {' '.join(str(v).split())}")
    return "\n".join(lines) + "\n\n"


def run_worker(folder: Path, worker: int = 0, echo: Callable[[str], None] | None = None) -> None:
    """One worker process of the search in `folder`: asks, checks and trains trials until the
    study holds `trials` trained ones (or the time budget is spent)."""
    import optuna

    from ..train import session

    info = read_settings(folder)
    study, plan = load_study(info, worker)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    objective, direction = info["objective"], info["direction"]
    host, pid = socket.gethostname(), os.getpid()
    log = (folder / "logs")
    log.mkdir(exist_ok=True)
    logfile = open(log / f"worker-{worker}-{pid}.log", "a", encoding="utf-8")

    def say(line: str) -> None:
        logfile.write(line + "\n")
        logfile.flush()

    limit_invalid = INVALID_PER_TRIAL * info["trials"]

    def enough(study: Any, *_: Any) -> None:
        c = counts(study)
        if trained(c) >= info["trials"] or c["invalid"] >= limit_invalid:
            study.stop()

    def objective_fn(trial: Any) -> float:
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        c = counts(study)
        if trained(c) > info["trials"]:  # another worker took the last one while this trial was asked
            trial.set_user_attr("invalid", "not run: the trial budget was spent by the other workers")
            study.stop()
            raise Invalid("budget spent")
        picker = OptunaPicker(plan.space.names, trial)
        t0 = time.time()
        try:
            program = plan.compile(picker)
            cfg = plan.recipe_of(program)
        except DlspecError as exc:
            code, reason, _ = first_reason(exc)
            trial.set_user_attr("invalid", reason)
            trial.set_user_attr("code", code)
            trial.set_user_attr("check_s", round(time.time() - t0, 4))
            say(f"trial {trial.number}: rejected by the checker: {reason}")
            raise Invalid(reason) from None
        trial.set_user_attr("check_s", round(time.time() - t0, 4))
        run = folder / TRIALS / f"trial-{trial.number:04d}"
        text = plan.concrete(picker, header_of(info, trial.number, picker.params))
        # next to the spec, so that its relative paths (data files, imports) mean the same
        tmp = plan.spec.resolve().parent / f".{plan.spec.stem}.{info['study']}.trial-{trial.number}.{pid}.dls"
        atomic_write_text(tmp, text)
        trial.set_user_attr("run", str(run))

        last = info.get("epochs") or cfg.epochs

        def report(record: dict[str, Any]) -> None:
            v = record.get(objective)
            epoch = int(record.get("epoch", 0))
            if isinstance(v, (int, float)) and math.isfinite(v):
                trial.report(float(v), epoch)
                if epoch < last and trial.should_prune():  # after the last epoch there is nothing to save
                    raise optuna.TrialPruned(f"pruned after epoch {record.get('epoch')}")

        try:
            with epoch_reports(report):
                outcome = session.train(tmp, cfg.name, info.get("device"), info.get("epochs"), None, None, run,
                                        progress=False, echo=say)
        except optuna.TrialPruned:
            atomic_write_text(run / "trial.dls", text)
            say(f"trial {trial.number}: pruned")
            raise
        except DlspecError as exc:
            code, reason, _ = first_reason(exc)
            trial.set_user_attr("error", reason)
            say(f"trial {trial.number}: training failed: {reason}")
            raise
        except Exception as exc:  # counted as a failed training; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:300]}")
            say(f"trial {trial.number}: training failed: {type(exc).__name__}: {exc}")
            raise
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_text(run / "trial.dls", text)
        value = objective_value(objective, direction, _records(run), outcome.test)
        trial.set_user_attr("test", {k: float(v) for k, v in outcome.test.items()})
        trial.set_user_attr("epochs", outcome.epochs_run)
        say(f"trial {trial.number}: {objective} = {value:.6g}")
        return value

    if trained(counts(study)) >= info["trials"]:
        return
    started = info.get("started") or time.time()
    timeout = None
    if info.get("timeout"):
        timeout = max(1.0, info["timeout"] - (time.time() - started))
    try:
        study.optimize(objective_fn, n_trials=None, timeout=timeout, catch=(Exception,),
                       callbacks=[enough], gc_after_trial=True)
    finally:
        logfile.close()


# ---- the search folder -----------------------------------------------------------------------


def read_settings(folder: Path) -> dict[str, Any]:
    p = Path(folder) / SETTINGS
    if not p.is_file():
        raise error("E951", f"{folder} holds no search (no {SETTINGS})",
                    hint="start one with: dlspec search SPEC -o DIR")
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not {"spec", "storage", "study", "trials"} <= set(info):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise error("E951", f"{p} is damaged: it is not the settings of a search") from None
    return info


def start(spec: Path, folder: Path, recipe: str | None, trials: int | None, storage: str | None, resume: bool,
          device: str | None, epochs: int | None, timeout: float | None, echo: Callable[[str], None]) -> dict[str, Any]:
    """Check the space and create (or, with `resume`, reopen) the study; returns the settings."""
    import optuna

    plan = load_plan(spec, recipe)
    pr, cfg, warnings = preflight(plan)
    for w in warnings:
        echo(w.render())
    s = settings_of(cfg)
    info = {
        "spec": str(Path(spec).resolve()), "recipe": cfg.name, "digest": plan.digest,
        "storage": storage or default_storage(folder), "study": study_name(spec, cfg.name),
        "trials": trials or s.trials, "objective": s.objective, "direction": direction_of(s.objective, s.direction),
        "sampler": s.sampler, "pruner": s.pruner, "seed": s.seed if s.seed is not None else cfg.seed,
        "timeout": timeout or s.timeout, "device": device, "epochs": epochs,
        "space": [d.name for d in plan.space.dims],
        "probe": {"configs": pr.configs, "valid": pr.valid, "exact": pr.exact},
        "started": time.time(),
    }
    if s.sampler == "grid":
        grid_space(plan.space)  # E953 before anything is written
    if resume:
        old = read_settings(folder)
        if old.get("digest") != plan.digest:
            raise error("E952", f"{spec} changed since the search in {folder} started; its trials would not "
                        "match the spec", hint="start a new search with another -o, or restore the spec")
        info = {**old, **{k: v for k, v in {"trials": trials, "timeout": timeout, "device": device,
                                             "epochs": epochs}.items() if v is not None}}
        info["started"] = time.time()
        if storage and storage != old["storage"]:
            raise error("E950", "--resume continues the study where it is stored; --storage names another",
                        hint=f"drop --storage (the search uses {_safe_url(old['storage'])})")
    elif (folder / SETTINGS).exists():
        raise error("E950", f"{folder} already holds a search", hint="continue it with --resume, or choose another -o")
    folder.mkdir(parents=True, exist_ok=True)
    st = open_storage(info["storage"])
    names = [x.study_name for x in optuna.get_all_study_summaries(st)]
    if resume:
        if info["study"] not in names:
            raise error("E950", f"the storage holds no study `{info['study']}` to resume")
        study = optuna.load_study(study_name=info["study"], storage=st)
        retried = revive_dead_trials(study)
        if retried:
            echo(f"{retried} trial(s) a stopped worker left running will be run again")
    else:
        if info["study"] in names:
            raise error("E950", f"the storage already holds a study `{info['study']}`",
                        hint="resume it with --resume -o on its folder, or use another storage")
        study = optuna.create_study(study_name=info["study"], storage=st, direction=info["direction"])
        study.set_user_attr("spec", info["spec"])
    atomic_write_json(folder / SETTINGS, info)
    return info


def revive_dead_trials(study: Any) -> int:
    """Trials left RUNNING by a worker of this machine that no longer runs: failed and queued
    again with the same values (other machines' ones go stale by their heartbeat)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials} | {t.system_attrs.get("failed_trial") for t in trials}
    n = 0
    for t in trials:
        if t.state == TrialState.RUNNING:
            pid = t.user_attrs.get("pid")
            if pid is None and not t.params:  # killed between being asked and its first step: nothing
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # to run again, but
                continue  # left RUNNING it would hold a place in the budget for ever
            if t.user_attrs.get("host") != host or not isinstance(pid, int) or _alive(pid):
                continue
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            if not t.params:
                continue  # killed before it drew a value: nothing to run again
        elif trial_kind(t) != "interrupted" or t.number in retried or not t.params:
            continue  # finished, or (Ctrl-C, a stale heartbeat) already queued again
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        n += 1
    return n


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not a running worker
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def launch(folder: Path, workers: int, progress: bool, echo: Callable[[str], None]) -> None:
    """Run the search with `workers` processes (1: in this one) and a progress line."""
    import subprocess

    info = read_settings(folder)
    if workers <= 1 and not progress:
        try:
            run_worker(folder, 0)
        except KeyboardInterrupt:
            raise error("E954", "search interrupted; the finished trials are kept in the study",
                        hint=f"continue with: dlspec search {info['spec']} -o {folder} --resume") from None
        return
    procs = [subprocess.Popen([sys.executable, "-m", "dlspec.search.worker", str(folder), str(i)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(workers)]
    try:
        study, _ = load_study(info)
        while any(p.poll() is None for p in procs):
            if progress:
                _bar(study, info)
            time.sleep(1.0)
        if progress:
            _bar(study, info)
            sys.stderr.write("\n")
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        raise error("E954", "search interrupted; the finished trials are kept in the study",
                    hint=f"continue with: dlspec search {info['spec']} -o {folder} --resume") from None
    bad = [p for p in procs if p.returncode not in (0, None)]
    for p in bad:
        msg = (p.stderr.read() if p.stderr else b"").decode(errors="replace").strip().splitlines()
        if msg:
            echo(f"a worker stopped with exit code {p.returncode}: {msg[-1]}")
    for p in procs:
        if p.stderr:
            p.stderr.close()


def _bar(study: Any, info: dict[str, Any]) -> None:
    c = counts(study)
    done = c["complete"] + c["pruned"] + c["failed"]
    n = info["trials"]
    width = 24
    fill = min(width, int(width * done / max(n, 1)))
    best = ""
    try:
        best = f" best {info['objective']} {study.best_value:.4g}"
    except ValueError:
        pass
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{n} trained, {c['running']} running, "
                     f"{c['pruned']} pruned, {c['invalid']} rejected by the checker{best}  ")
    sys.stderr.flush()
