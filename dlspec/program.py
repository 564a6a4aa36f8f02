"""Compile a spec file: parse, load imports, lower every model and recipe, collect diagnostics.

`compile_file` is what `dlspec check`, `summary` and `ir` call; it never imports a framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import ast
from .errors import Diagnostic, Diagnostics, DlspecError, did_you_mean
from .ir.graph import Graph, Program
from .lower import Evaluator, Loader
from .source import SourceFile
from .values import Arg

Overrides = dict[str, Any]


def compile_source(src: SourceFile, overrides: Overrides | None = None, base_dir: Path | None = None) -> Program:
    """Lower every model and recipe; raise DlspecError carrying all diagnostics if any is an error."""
    diags = Diagnostics()
    loader = Loader(diags)
    defs = loader.load(src, base_dir)
    program = Program(file=src.name)
    if diags.errors:
        raise DlspecError(diags.items)
    ev = Evaluator(defs, diags)
    overrides = overrides or {}
    local_models = [m for m in defs.models.values() if m.file == src.name]
    for mdef in local_models:
        if any(p.default is None and p.name not in overrides for p in mdef.params) and mdef.base is None:
            continue  # a model with required parameters is checked where a recipe instantiates it
        kwargs = {p.name: Arg(overrides[p.name], mdef.span) for p in mdef.params if p.name in overrides}
        g = ev.lower_model(mdef, [], kwargs)
        if g is not None:
            program.models[mdef.name] = _bind_symbols(g, overrides, mdef.params)
    for tdef in defs.recipes:
        cfg = _lower_recipe(ev, defs, tdef, diags, program)
        if cfg is not None:
            program.recipes.append(cfg)
    program.warnings = [d for d in diags.items if d.severity == "warning"]
    if diags.errors:
        raise DlspecError(diags.items)
    return program


def compile_file(path: str | Path, overrides: Overrides | None = None) -> Program:
    return compile_source(read_source(path), overrides)


def read_source(path: str | Path) -> SourceFile:
    p = Path(path)
    try:
        return SourceFile.read(p)
    except FileNotFoundError:
        raise DlspecError(Diagnostic(code="E901", message=f"no such file: {path}")) from None
    except IsADirectoryError:
        raise DlspecError(Diagnostic(code="E901", message=f"{path} is a folder, not a spec file")) from None
    except UnicodeDecodeError:
        raise DlspecError(Diagnostic(code="E902", message=f"{path} is not UTF-8 text")) from None
    except OSError as exc:
        raise DlspecError(Diagnostic(code="E901", message=f"cannot read {path}: {exc.strerror}")) from None


def _lower_recipe(ev: Evaluator, defs, tdef: ast.TrainDef, diags: Diagnostics, program: Program):
    # imported here: the recipe schemas are dozens of pydantic models a file without recipes never needs
    from .ir.training import KINDS, ModelCall
    from .recipe import recipe_from_entries

    if tdef.kind is not None and tdef.kind not in KINDS:
        diags.add(Diagnostic(code="E411", message=f"unknown training program `{tdef.kind}`", span=tdef.span,
                             hint=did_you_mean(tdef.kind, KINDS) or f"one of: {', '.join(KINDS)}; or `train Model {{...}}`"))
        return None
    model_call = None
    g = None
    if tdef.kind is None:
        mdef = defs.models.get(tdef.name)
        if mdef is None:
            diags.add(Diagnostic(code="E101", message=f"`train {tdef.name}`: unknown model `{tdef.name}`", span=tdef.span,
                                 hint=did_you_mean(tdef.name, defs.models)))
            return None
        try:
            args = [Arg(ev.ev(a, _recipe_scope()), a.span) for a in tdef.args]
            kwargs = {k.name: Arg(ev.ev(k.value, _recipe_scope()), k.value.span) for k in tdef.kwargs}
        except Exception as exc:  # evaluation failures were recorded as diagnostics
            if exc.__class__.__name__ == "Fail":
                return None
            raise
        g = ev.lower_model(mdef, args, kwargs, tdef.span)
        names = [p.name for p in mdef.params]
        bound = dict(zip(names, [a.value for a in args]))
        bound.update({k: a.value for k, a in kwargs.items()})
        model_call = ModelCall(name=mdef.name, args={k: _plain(v) for k, v in bound.items()})
        if g is not None:
            program.models.setdefault(mdef.name, g)
        program.recipe_graphs[tdef.name] = g
    entries, directives = ev.recipe_entries(tdef)
    cfg, errs = recipe_from_entries(tdef.kind, tdef.name, model_call, entries, directives, defs.models, tdef.span)
    for d in errs:
        diags.add(d)
    if tdef.kind is None and g is None:
        return None  # the model's errors are reported; the recipe's own were checked above
    if cfg is not None and tdef.kind is None and g is not None:
        for d in _check_supervised(cfg, g, entries, directives, tdef.span):
            diags.add(d)
    if cfg is not None and tdef.kind is not None:
        for role in ("generator", "discriminator", "teacher", "student"):
            call = getattr(cfg, role, None)
            if call is not None:
                mdef = defs.models[call.name]
                g = ev.lower_model(mdef, [], {k: Arg(v, tdef.span) for k, v in call.args.items()}, tdef.span)
                if g is None:
                    return None
                program.recipe_graphs[f"{tdef.name}.{role}"] = g  # what the trainer of the program builds
        if tdef.kind == "gan":
            _check_gan(ev, defs, cfg, tdef, diags)
    return cfg


def _check_supervised(cfg, g, entries: dict, directives: list, span) -> list[Diagnostic]:
    """The rules a supervised recipe must meet for its model, checked before anything runs:
    the schedule (E413), monitored keys (E414), a loss per output (E415), something to train (E416)."""
    from .ir.training import OneCycle, Plateau, Warmup, logged_keys

    def at(key: str):
        arg = entries.get(key)
        return arg.span if arg is not None else span

    def directive(name: str):
        return next((d.span for d in directives if getattr(d, "name", None) == name), span)

    out: list[Diagnostic] = []
    parts = tuple(cfg.schedule)
    if parts and isinstance(parts[0], Warmup) and any(isinstance(p, OneCycle) for p in parts):
        out.append(Diagnostic(code="E413", message="one_cycle has its own warm-up; `warmup(...) then one_cycle(...)` "
                                                   "warms up twice", span=at("schedule"),
                              hint="drop `warmup(...) then`, and set one_cycle's `pct_start` for a longer warm-up"))
    outputs = [o.name for o in g.outputs]
    keys = logged_keys(outputs, cfg.metrics)
    monitors = [(cfg.checkpoint.monitor, "checkpoint", directive("checkpoint"))]
    if cfg.early_stop is not None:
        monitors.append((cfg.early_stop.monitor, "early_stop", directive("early_stop")))
    monitors += [(p.monitor, "the plateau schedule", at("schedule")) for p in parts if isinstance(p, Plateau)]
    for m, what, where in monitors:
        if m not in keys:
            out.append(Diagnostic(code="E414", message=f"{what} monitors `{m}`, which this run does not log", span=where,
                                  hint=did_you_mean(m, keys) or f"logged: {', '.join(keys)}"))
    if isinstance(cfg.loss, dict):
        if sorted(cfg.loss) != sorted(outputs):
            out.append(Diagnostic(code="E415", message=f"the loss names outputs {sorted(cfg.loss)}, the model has {outputs}",
                                  span=at("loss"), hint="give one loss per output: loss = {name: cross_entropy(), ...}"))
    elif len(outputs) > 1:
        out.append(Diagnostic(code="E415", message=f"the model has {len(outputs)} outputs {outputs} but the recipe gives one loss",
                              span=at("loss"),
                              hint="write loss = {" + ", ".join(f"{o}: cross_entropy()" for o in outputs) + "}"))
    params = [p for p in g.params() if not p.buffer]
    if params and not any(p.trainable for p in params):
        out.append(Diagnostic(code="E416", message="every parameter is frozen: there is nothing to train", span=at("freeze"),
                              hint="freeze fewer layers, or unfreeze some with `unfreeze = {epoch: [\"pattern\"]}`"))
    return out


def _check_gan(ev: Evaluator, defs, cfg, tdef, diags: Diagnostics) -> None:
    gen = ev.lower_model(defs.models[cfg.generator.name], [], {k: Arg(v, tdef.span) for k, v in cfg.generator.args.items()})
    dis = ev.lower_model(defs.models[cfg.discriminator.name], [], {k: Arg(v, tdef.span) for k, v in cfg.discriminator.args.items()})
    if gen is None or dis is None:
        return
    g_out = gen.values[gen.outputs[0].value]
    d_in = dis.inputs[0].type
    if tuple(g_out.shape[1:]) != tuple(d_in.shape[1:]):
        diags.add(Diagnostic(
            code="E412",
            message=f"the generator makes {g_out.shape_str()} but the discriminator takes {d_in.shape_str()}",
            span=tdef.span,
            hint="the generator's output and the discriminator's input must agree on every axis but the batch",
        ))


def _recipe_scope():
    from .lower import Scope

    return Scope({}, "", "recipe")


def _plain(v: Any) -> Any:
    from .lower import _jsonable

    return _jsonable(v)


def _bind_symbols(g: Graph, overrides: Overrides, params: list[ast.Param]) -> Graph:
    env = {k: int(v) for k, v in overrides.items() if isinstance(v, int) and k not in {p.name for p in params}}
    return bind_symbols(g, env) if env else g


def bind_symbols(g: Graph, env: dict[str, int]) -> Graph:
    """The graph with symbolic dimensions replaced by the given integers."""
    from .ir.dims import subs

    def t(tt):
        return tt.with_shape(tuple(subs(d, env) for d in tt.shape))

    values = {k: t(v) for k, v in g.values.items()}
    inputs = [i.model_copy(update={"type": t(i.type)}) for i in g.inputs]
    return g.model_copy(update={"values": values, "inputs": inputs})


def parse_overrides(pairs: list[str]) -> Overrides:
    """`--set key=value` pairs: ints, floats, bools or strings."""
    out: Overrides = {}
    for p in pairs:
        if "=" not in p:
            raise DlspecError(Diagnostic(code="E903", message=f"--set expects key=value; got {p!r}"))
        k, v = p.split("=", 1)
        k, v = k.strip(), v.strip()
        if not k.isidentifier():
            raise DlspecError(Diagnostic(code="E903", message=f"--set: {k!r} is not a name"))
        val: Any
        if v.lower() in ("true", "false"):
            val = v.lower() == "true"
        else:
            try:
                val = int(v)
            except ValueError:
                try:
                    val = float(v)
                except ValueError:
                    val = v
        out[k] = val
    return out

