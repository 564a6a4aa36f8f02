"""Recipes from the front end: evaluated `train` entries (`key = value` lines and directives)
become the typed configs of `ir.training`, every bad key, value and option a located error
with a suggestion. The configs themselves know nothing of the language."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .errors import Diagnostic, did_you_mean, validation_problems
from .ir.training import (
    CLIPS,
    DATASETS,
    DIRECTIVES,
    KINDS,
    LOSSES,
    METRIC_ALIASES,
    OPTIMIZERS,
    SCHEDULES,
    Config,
    Metric,
    ModelCall,
    TrainConfig,
    Warmup,
)
from .source import Span
from .values import Arg, ConfigCall, EnumName, ModelRef, ThenChain, describe

# ---- conversion from evaluated recipe values --------------------------------------------------


class RecipeError(Exception):
    def __init__(self, diag: Diagnostic):
        self.diag = diag


def _fail(code: str, message: str, span: Span | None, hint: str | None = None) -> RecipeError:
    return RecipeError(Diagnostic(code=code, message=message, span=span, hint=hint))


def plain(v: Any, span: Span) -> Any:
    """A recipe value as plain data (names become strings)."""
    if isinstance(v, EnumName):
        return v.name
    if isinstance(v, (list, tuple)):
        return [plain(x, span) for x in v]
    if isinstance(v, dict):
        return {k: plain(x, span) for k, x in v.items()}
    if isinstance(v, (ConfigCall, ModelRef, ThenChain)):
        raise _fail("E403", f"{describe(v)} is not a plain value here", span)
    return v


def _call_to(table: dict[str, type[Config]], what: str, v: Any, span: Span, defaults: dict | None = None) -> Config:
    if isinstance(v, EnumName):
        v = ConfigCall(v.name, [], {}, v.span)
    if isinstance(v, str):
        v = ConfigCall(v, [], {}, span)
    if not isinstance(v, ConfigCall):
        raise _fail("E402", f"`{what}` needs a call such as {next(iter(table))}(...); got {describe(v)}", span)
    if v.name not in table:
        raise _fail("E402", f"unknown {what} `{v.name}`", v.span,
                    hint=did_you_mean(v.name, table) or f"one of {', '.join(table)}")
    model = table[v.name]
    fields = [f for f in model.model_fields if f != "type"]
    values: dict[str, Any] = dict(defaults or {})
    if len(v.args) > len(fields):
        raise _fail("E403", f"{v.name} takes at most {len(fields)} argument(s)", v.args[len(fields)].span)
    for f, a in zip(fields, v.args):
        values[f] = plain(a.value, a.span)
    for k, a in v.kwargs.items():
        if k not in fields:
            raise _fail("E403", f"{v.name} has no option `{k}`", a.span,
                        hint=did_you_mean(k, fields) or (f"its options: {', '.join(fields)}" if fields else f"{v.name} takes no options"))
        values[k] = plain(a.value, a.span)
    try:
        return model(**values)
    except ValidationError as exc:
        raise _fail("E404", _pretty(v.name, exc), v.span) from None


def _pretty(name: str, exc: ValidationError) -> str:
    parts = []
    for field, kind, text in validation_problems(exc):
        if kind == "missing":
            parts.append(f"{name} needs `{field}`")
        elif kind == "unknown":
            parts.append(f"{name} has no option `{field}`")
        else:
            parts.append(f"`{field}` of {name} {text}")
    return "; ".join(parts)


def _metric(v: Any, span: Span) -> Metric:
    if isinstance(v, EnumName):
        v = ConfigCall(v.name, [], {}, v.span)
    if isinstance(v, str):
        v = ConfigCall(v, [], {}, span)
    if not isinstance(v, ConfigCall):
        raise _fail("E402", f"a metric is a name such as `accuracy`; got {describe(v)}", span)
    if v.name not in METRIC_ALIASES:
        raise _fail("E402", f"unknown metric `{v.name}`", v.span,
                    hint=did_you_mean(v.name, METRIC_ALIASES) or f"one of {', '.join(METRIC_ALIASES)}")
    base = METRIC_ALIASES[v.name]
    fields = ["k"] if base["type"] == "top_k" else ["average"] if base["type"] in ("precision", "recall", "f1") else []
    values = dict(base)
    for f, a in zip(fields, v.args):
        values[f] = plain(a.value, a.span)
    for k, a in v.kwargs.items():
        if k not in ("k", "average", "output"):
            raise _fail("E403", f"metric {v.name} has no option `{k}`", a.span, hint=did_you_mean(k, ["k", "average", "output"]))
        values[k] = plain(a.value, a.span)
    try:
        return Metric(**values)
    except ValidationError as exc:
        raise _fail("E404", _pretty(v.name, exc), v.span) from None


def _model_call(v: Any, span: Span, models: dict[str, Any]) -> ModelCall:
    if isinstance(v, EnumName):
        raise _fail("E101", f"unknown model `{v.name}`", v.span, hint=did_you_mean(v.name, models))
    if not isinstance(v, ModelRef):
        raise _fail("E405", f"expected a model, such as Generator(latent=64); got {describe(v)}", span)
    names = [p.name for p in v.model.params]
    args: dict[str, Any] = {}
    for p, a in zip(names, v.args):
        args[p] = plain(a.value, a.span)
    for k, a in v.kwargs.items():
        args[k] = plain(a.value, a.span)
    return ModelCall(name=v.model.name, args=args)


def _schedule(v: Any, span: Span) -> tuple[Config, ...]:
    parts = v.parts if isinstance(v, ThenChain) else [v]
    out = tuple(_call_to(SCHEDULES, "schedule", p, span) for p in parts)
    for s in out[:-1]:
        if not isinstance(s, Warmup):
            raise _fail("E406", "only `warmup(...)` can come before `then`", span,
                        hint="write `schedule = warmup(epochs=5) then cosine()`")
    return out


def _loss(v: Any, span: Span) -> Any:
    if isinstance(v, dict):
        return {k: _call_to(LOSSES, "loss", x, span) for k, x in v.items()}
    return _call_to(LOSSES, "loss", v, span)


def _search(v: Any, span: Span) -> Config:
    from .ir.training import Search

    if not isinstance(v, dict):
        raise _fail("E946", f"`search` is a dictionary such as {{objective: \"val_accuracy\", trials: 30}}; got {describe(v)}",
                    span)
    fields = list(Search.model_fields)
    for k in v:
        if k not in fields:
            raise _fail("E946", f"`search` has no option `{k}`", span, hint=did_you_mean(k, fields) or f"its options: {', '.join(fields)}")
    try:
        return Search(**plain(v, span))
    except ValidationError as exc:
        raise _fail("E946", _pretty("search", exc), span) from None


CONVERTERS = {
    "data": lambda v, s: _call_to(DATASETS, "data source", v, s),
    "loss": _loss,
    "optimizer": lambda v, s: _call_to(OPTIMIZERS, "optimizer", v, s),
    "g_optimizer": lambda v, s: _call_to(OPTIMIZERS, "optimizer", v, s),
    "d_optimizer": lambda v, s: _call_to(OPTIMIZERS, "optimizer", v, s),
    "schedule": _schedule,
    "clip_grad": lambda v, s: _call_to(CLIPS, "clipping", v, s),
    "metrics": lambda v, s: tuple(_metric(x, s) for x in (v if isinstance(v, (list, tuple)) else [v])),
    "search": _search,
}


def recipe_from_entries(
    kind: str | None,
    name: str,
    model: Any,
    entries: dict[str, Arg],
    directives: list[ConfigCall],
    models: dict[str, Any],
    span: Span,
) -> tuple[Any, list[Diagnostic]]:
    """Build the config; returns (config or None, diagnostics)."""
    diags: list[Diagnostic] = []
    cls: type[Config] = TrainConfig if kind is None else KINDS[kind]
    values: dict[str, Any] = {"name": name, "span": span}
    if kind is None:
        values["model"] = model
    fields = [f for f in cls.model_fields if f not in ("kind", "name", "span", "model")]
    for key, arg in entries.items():
        try:
            if key not in fields:
                raise _fail("E407", f"unknown recipe key `{key}`", arg.span,
                            hint=did_you_mean(key, fields) or f"keys: {', '.join(sorted(fields))}")
            if key in CONVERTERS and not (key == "loss" and kind == "gan"):  # a GAN's loss is a name: hinge
                values[key] = CONVERTERS[key](arg.value, arg.span)
            elif key in ("generator", "discriminator", "teacher", "student"):
                values[key] = _model_call(arg.value, arg.span, models)
            else:
                values[key] = plain(arg.value, arg.span)
        except RecipeError as exc:
            diags.append(exc.diag)
    for d in directives:
        try:
            if d.name not in DIRECTIVES:
                raise _fail("E408", f"unknown recipe directive `{d.name}`", d.span,
                            hint=did_you_mean(d.name, DIRECTIVES) or "directives: early_stop(...), checkpoint(...)")
            values[d.name] = _call_to(DIRECTIVES, "directive", d, d.span)
        except RecipeError as exc:
            diags.append(exc.diag)
    if "data" not in values and not diags:
        diags.append(Diagnostic(code="E409", message=f"recipe `{name}` has no `data`", span=span,
                                hint='add `data = builtin("digits")` or `data = csv("file.csv", label="y")`'))
    if diags:
        return None, diags
    try:
        return cls(**values), []
    except ValidationError as exc:
        spans = {k: a.span for k, a in entries.items()}
        out = []
        for key, kind, text in validation_problems(exc):
            msg = f"needs `{key}`" if kind == "missing" else f"has no entry `{key}`" if kind == "unknown" else f"`{key}` {text}"
            out.append(Diagnostic(code="E410", message=f"recipe `{name}` {msg}", span=spans.get(key, span)))
        return None, out
