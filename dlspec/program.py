"""Compile a spec file: parse, load imports, lower every model and recipe, collect diagnostics.

`compile_file` is what `dlspec check`, `summary` and `ir` call; it never imports a framework.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ast
from .errors import Diagnostic, Diagnostics, DlspecError, did_you_mean, error
from .ir.graph import Graph, Program
from .lower import Evaluator, Loader
from .source import SourceFile
from .values import Arg

if TYPE_CHECKING:
    from .lint import TargetCheck

Overrides = dict[str, Any]


def compile_source(src: SourceFile, overrides: Overrides | None = None, base_dir: Path | None = None,
                   loader: Loader | None = None, observe: Callable[[Evaluator], None] | None = None,
                   lint: bool = False, target_check: TargetCheck | None = None) -> Program:
    """Lower every model and recipe; raise DlspecError carrying all diagnostics if any is an error.

    For the language server: `loader` may be one that keeps parsed imports between calls (its
    `diags` collect this compilation's diagnostics), and `observe` sees the evaluator before
    anything is lowered. With `lint` (`dlspec check`), a file that lowers
    without an error also gets the warnings of `dlspec/lint.py` (W101–W110), its models checked
    by `target_check` (W108; `dlspec.backends.targets.target_check` makes one)."""
    loader = loader if loader is not None else Loader(Diagnostics())
    diags = loader.diags
    defs = loader.load(src, base_dir)
    program = Program(file=src.name)
    if diags.errors:
        raise DlspecError(diags.items)
    ev = Evaluator(defs, diags)
    if observe is not None:
        observe(ev)
    _lower_once(ev)
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
    if lint and not diags.errors:
        from .lint import lint_program

        for d in lint_program(program, defs, src.name, target_check):
            diags.add(d)
    program.warnings = [d for d in diags.items if d.severity == "warning"]
    if diags.errors:
        raise DlspecError(diags.items)
    return program


def _lower_once(ev: Evaluator) -> None:
    """Each model is lowered once per compilation for each set of arguments: the model itself, the
    recipe that trains it, a GAN's or distillation's networks and a derived model's base share
    one lowering. A lowering that fails is not kept (its errors are reported where it is asked), nor
    one made while a derived model's `replace` layers apply."""
    lower = ev.lower_model
    done: dict[tuple, Graph] = {}

    def lower_model(mdef, args, kwargs, span=None):
        if ev.replacements:  # a derived model's base, lowered with its `replace` layers: its own graph
            return lower(mdef, args, kwargs, span)
        try:
            if mdef.base is None:  # keyed by the parameters bound, defaults included
                key = (id(mdef), json.dumps(ev.bind_params(mdef, args, kwargs, span or mdef.span), sort_keys=True))
            else:
                key = (id(mdef), json.dumps([a.value for a in args], sort_keys=True),
                       json.dumps({k: a.value for k, a in kwargs.items()}, sort_keys=True))
        except Exception:  # values that are not plain data, or arguments that do not bind: lowered afresh
            return lower(mdef, args, kwargs, span)
        if key not in done:
            g = lower(mdef, args, kwargs, span)
            if g is None:
                return None
            done[key] = g
        return done[key]

    ev.lower_model = lower_model  # type: ignore[method-assign]


def compile_file(path: str | Path, overrides: Overrides | None = None, lint: bool = False,
                 target_check: TargetCheck | None = None) -> Program:
    return compile_source(read_source(path), overrides, lint=lint, target_check=target_check)


def read_source(path: str | Path) -> SourceFile:
    p = Path(path)
    try:
        return SourceFile.read(p)
    except FileNotFoundError:
        raise error("E901", f"no such file: {path}") from None
    except IsADirectoryError:
        raise error("E901", f"{path} is a folder, not a spec file") from None
    except UnicodeDecodeError:
        raise error("E902", f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise error("E901", f"cannot read {path}: {exc.strerror}") from None


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
        roles: dict[str, Graph] = {}
        for role in ("generator", "discriminator", "teacher", "student"):
            call = getattr(cfg, role, None)
            if call is not None:
                mdef = defs.models[call.name]
                g = ev.lower_model(mdef, [], {k: Arg(v, tdef.span) for k, v in call.args.items()}, tdef.span)
                if g is None:
                    return None
                roles[role] = program.recipe_graphs[f"{tdef.name}.{role}"] = g  # what the trainer of the program builds
        for d in PROGRAM_CHECKS[tdef.kind](cfg, roles, entries, directives, tdef.span):
            diags.add(d)
    return cfg


def _locator(entries: dict, directives: list, span):
    """(at(key), directive(name)): the span of a recipe entry or directive, else the recipe's."""

    def at(key: str):
        arg = entries.get(key)
        return arg.span if arg is not None else span

    def directive(name: str):
        return next((d.span for d in directives if getattr(d, "name", None) == name), span)

    return at, directive


def _nothing_to_train(g: Graph, what: str, where) -> list[Diagnostic]:
    """E416: a network none of whose parameters trains."""
    params = [p for p in g.params() if not p.buffer]
    if any(p.trainable for p in params):
        return []
    message = (f"{what} has no parameters: there is nothing to train" if not params
               else f"every parameter{' of ' + what if what != 'the model' else ''} is frozen: there is nothing to train")
    return [Diagnostic(code="E416", message=message, span=where,
                       hint="freeze fewer layers, or unfreeze some with `unfreeze = {epoch: [\"pattern\"]}`")]


def _check_supervised(cfg, g, entries: dict, directives: list, span) -> list[Diagnostic]:
    """The rules a supervised recipe (or a distillation's student) must meet for its model, checked
    before anything runs: the schedule (E413), monitored keys (E414), a loss per output (E415),
    something to train (E416)."""
    from .ir.training import OneCycle, Plateau, Warmup, logged_keys

    at, directive = _locator(entries, directives, span)
    out: list[Diagnostic] = []
    parts = tuple(cfg.schedule)
    if parts and isinstance(parts[0], Warmup) and any(isinstance(p, OneCycle) for p in parts):
        out.append(Diagnostic(code="E413", message="one_cycle has its own warm-up; `warmup(...) then one_cycle(...)` "
                                                   "warms up twice", span=at("schedule"),
                              hint="drop `warmup(...) then`, and set one_cycle's `pct_start` for a longer warm-up"))
    if parts and isinstance(parts[0], Warmup) and any(getattr(p, "type", "") == "caffe_lr" for p in parts):
        out.append(Diagnostic(code="E413", message="caffe_lr is Caffe's per-iteration policy from iteration 0; "
                                                   "`warmup(...) then caffe_lr(...)` cannot combine them", span=at("schedule"),
                              hint="drop `warmup(...) then`"))
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
    out += _nothing_to_train(g, "the model", at("freeze"))
    for gi in g.inputs:  # the trainers cut batches along axis 0; a time-major input has its steps there
        axes = [i for i, d in enumerate(gi.type.shape) if str(d) == "batch"]
        if axes and axes[0] != 0:
            out.append(Diagnostic(code="E418", message=f"input `{gi.name}` is {gi.type}: its batch is axis {axes[0]}, "
                                  "but training reads examples along axis 0", span=gi.span or span,
                                  hint="train a batch-first model (time_major=false; permute inside the model if "
                                       "a layer needs steps first) and keep the time-major one for inference"))
    return out


def recipe_problems(cfg, g: Graph) -> list[Diagnostic]:
    """What `_check_supervised` finds wrong with a supervised recipe for its model, without source
    locations, plus metrics naming outputs the model lacks: for recipes read back from a run
    folder, which no compiler checked."""
    outputs = {o.name for o in g.outputs}
    out = [d for d in _check_supervised(cfg, g, {}, [], None) if d.code != "E416"]
    for m in cfg.metrics:
        if m.output is not None and m.output not in outputs:
            out.append(Diagnostic(code="E415", message=f"metric {m.key} names the output `{m.output}`, "
                                                       f"the model has {sorted(outputs)}"))
    for name in cfg.loss_weights:
        if name not in outputs:
            out.append(Diagnostic(code="E415", message=f"loss_weights names the output `{name}`, "
                                                       f"the model has {sorted(outputs)}"))
    return out


def gan_network_problems(gen: Graph, dis: Graph) -> list[tuple[str, str, str | None, str]]:
    """What keeps two networks from being a GAN's generator and discriminator, as
    (code, message, hint, role): noise in (E640), an example in (E641), one score out (E642), and
    the generator's output taken by the discriminator (E412). The trainer and the run-folder
    readers ask the same function."""
    out: list[tuple[str, str, str | None, str]] = []
    if len(gen.inputs) != 1 or not gen.inputs[0].type.dtype.startswith("float"):
        out.append(("E640", f"generator `{gen.name}` must take one float noise input; it takes "
                    + ", ".join(f"{i.name}: {i.type}" for i in gen.inputs), "declare `input z: float32[batch, latent]`",
                    "generator"))
    elif not all(isinstance(d, int) for d in gen.inputs[0].type.shape[1:]):
        out.append(("E640", f"generator `{gen.name}`'s noise input {gen.inputs[0].type} has symbolic dimensions "
                    "besides the batch", "give the latent size as a number", "generator"))
    if len(dis.inputs) != 1:
        out.append(("E641", f"discriminator `{dis.name}` must take one input (an example); it takes {len(dis.inputs)}",
                    None, "discriminator"))
    if len(dis.outputs) != 1:
        out.append(("E642", f"discriminator `{dis.name}` must have one output, a score per example", None,
                    "discriminator"))
    else:
        score = dis.values[dis.outputs[0].value]
        if not (len(score.shape) == 1 or (len(score.shape) == 2 and score.shape[1] == 1)):
            out.append(("E642", f"discriminator `{dis.name}` returns {score}; a GAN needs one score per example, "
                        "[batch, 1]", "end the discriminator with flatten() and dense(1)", "discriminator"))
    if len(dis.inputs) == 1 and gen.outputs:
        g_out = gen.values[gen.outputs[0].value]
        d_in = dis.inputs[0].type
        if tuple(g_out.shape[1:]) != tuple(d_in.shape[1:]):
            out.append(("E412", f"the generator makes {g_out.shape_str()} but the discriminator takes {d_in.shape_str()}",
                        "the generator's output and the discriminator's input must agree on every axis but the batch",
                        ""))
    return out


def _check_gan(cfg, roles: dict[str, Graph], entries: dict, directives: list, span) -> list[Diagnostic]:
    """The rules of a `train gan` recipe: its two networks (E412, E640–E642, E416) and the
    settings a GAN can honour (E644)."""
    at, directive = _locator(entries, directives, span)
    gen, dis = roles["generator"], roles["discriminator"]
    out = [Diagnostic(code=code, message=message, hint=hint, span=at(role) if role else span)
           for code, message, hint, role in gan_network_problems(gen, dis)]
    for role, g in roles.items():
        out += _nothing_to_train(g, f"the {role} `{g.name}`", at(role))

    def bad(key: str, message: str, hint: str | None = None, where=None) -> None:
        out.append(Diagnostic(code="E644", message=message, span=where or at(key), hint=hint))

    if cfg.d_steps < 1:
        bad("d_steps", f"d_steps must be at least 1; got {cfg.d_steps}")
    if cfg.label_smoothing and cfg.loss != "standard":
        bad("label_smoothing", f"label_smoothing softens the real targets of the `standard` loss; `{cfg.loss}` has no "
            "targets", "drop label_smoothing, or use loss = standard")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        bad("label_smoothing", f"label_smoothing must lie in [0, 1); got {cfg.label_smoothing}")
    if cfg.early_stop is not None:
        bad("early_stop", "a GAN has no validation loss to stop early on; its losses do not measure sample quality",
            "drop early_stop(...); watch samples/ and sample_diversity", directive("early_stop"))
    if cfg.precision == "fp16":
        bad("precision", "precision fp16 is not supported for GANs (no loss scaling for two networks)", "use bf16 or fp32")
    if cfg.sample_grid < 1:
        bad("sample_grid", f"sample_grid must be at least 1; got {cfg.sample_grid}")
    return out


def distill_pairs(teacher: Graph, student: Graph) -> tuple[dict[str, str], list[tuple[str, str, str | None]]]:
    """Student output name → teacher output name, and what keeps them from pairing (E647) as
    (code, message, hint): with several outputs each student output needs a teacher output of its
    name, and paired outputs need the same classes. The trainer asks the same function."""
    t_outs = [o.name for o in teacher.outputs]
    s_outs = [o.name for o in student.outputs]
    if len(t_outs) == len(s_outs) == 1:
        pairs = {s_outs[0]: t_outs[0]}
    else:
        missing = [o for o in s_outs if o not in t_outs]
        if missing:
            return {}, [("E647", f"student `{student.name}` has outputs {s_outs} and teacher `{teacher.name}` {t_outs}; "
                         "with several outputs each student output needs a teacher output of its name", None)]
        pairs = {o: o for o in s_outs}
    problems: list[tuple[str, str, str | None]] = []
    for s, t in pairs.items():
        st = student.values[student.outputs[s_outs.index(s)].value]
        tt = teacher.values[teacher.outputs[t_outs.index(t)].value]
        if st.shape[1:] != tt.shape[1:]:
            problems.append(("E647", f"student output `{s}` is {st} but teacher output `{t}` is {tt}; distillation "
                             "compares them class by class", "give the student as many classes as the teacher"))
    return pairs, problems


def _check_distill(cfg, roles: dict[str, Graph], entries: dict, directives: list, span) -> list[Diagnostic]:
    """The rules of a `train distill` recipe: the student's as a supervised recipe's (E413–E416),
    the pairing of the two networks (E647), the mix (E646) and the teacher's weights named (E648)."""
    at, _ = _locator(entries, directives, span)
    out = _check_supervised(cfg, roles["student"], entries, directives, span)
    _, problems = distill_pairs(roles["teacher"], roles["student"])
    out += [Diagnostic(code=c, message=m, hint=h, span=at("student")) for c, m, h in problems]
    if cfg.temperature <= 0:
        out.append(Diagnostic(code="E646", message=f"temperature must be positive; got {cfg.temperature}",
                              span=at("temperature")))
    if not 0.0 <= cfg.alpha <= 1.0:
        out.append(Diagnostic(code="E646", message=f"alpha mixes the two losses and lies in [0, 1]; got {cfg.alpha}",
                              span=at("alpha")))
    if cfg.teacher_weights is None:
        out.append(Diagnostic(code="E648", message=f"`train distill {cfg.name}` names no teacher_weights", span=span,
                              hint='add `teacher_weights = "../runs/<teacher run>"` (a run folder or a .safetensors file)'))
    return out


#: the check-time rules of each training program beyond `train Model {...}` (`_check_supervised`)
PROGRAM_CHECKS = {"gan": _check_gan, "distill": _check_distill}


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
            raise error("E903", f"--set expects key=value; got {p!r}")
        k, v = p.split("=", 1)
        k, v = k.strip(), v.strip()
        if not k.isidentifier():
            raise error("E903", f"--set: {k!r} is not a name")
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

