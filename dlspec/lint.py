"""Warnings for likely mistakes in a spec that compiles (W101–W110): an output activation that
does not fit its loss or metric, a sigmoid twice in a GAN, dropout as the last layer, names and
blocks never used, a model a target backend refuses.

`lint_program` runs once a file lowered without an error (`compile_source(..., lint=True)`, what
`dlspec check` asks for). It reads the lowered graphs, the recipes' configs and the AST of the
file's own definitions; it imports no framework. Each warning is at the spec
location it is about: the layer (`softmax()`), the recipe entry (`loss = ...`), the name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import ast
from .errors import Diagnostic
from .ir.graph import Graph, Node, Program
from .source import SourceFile, Span

#: what checks a lowered model against backends (W108): `dlspec.backends.targets.target_check`
#: makes one; the front end imports no backend, so it is handed in
TargetCheck = Callable[[Graph], list[Diagnostic]]

#: ops that move or relabel values without changing them: looked through to find the layer that
#: computes an output
_SHAPE_ONLY = frozenset({"identity", "flatten", "reshape", "squeeze", "unsqueeze", "permute"})
#: ops whose output is probabilities
_PROBABILITIES = frozenset({"softmax", "sigmoid"})
#: ops whose output is unbounded scores (logits, when a loss reads them as such)
_RAW = frozenset({"dense", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"})
#: ops whose output is never negative: logits that cannot say "unlikely"
_NON_NEGATIVE = frozenset({"relu", "relu6"})

#: supervised losses that take logits and apply the softmax or sigmoid themselves
_LOGIT_LOSSES = {"cross_entropy": "it applies log_softmax itself", "dice": "it applies sigmoid or softmax itself",
                 "bce_with_logits": "it applies the sigmoid itself"}
#: a loss on logits after the activation it applies itself
_TWICE = frozenset({("cross_entropy", "softmax"), ("bce_with_logits", "sigmoid"), ("dice", "sigmoid"),
                    ("dice", "softmax")})
#: losses that take log-probabilities
_LOG_PROB_LOSSES = frozenset({"nll", "kl_div"})
#: metrics that turn an output into labels: argmax over classes, or a single channel above 0
_LABEL_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "iou", "dice"})


def lint_program(program: Program, defs: Any, file: str, target_check: TargetCheck | None = None) -> list[Diagnostic]:
    """Every warning about `file`: its own definitions (`defs`, the loader's `Definitions`), its
    recipes against the graphs they train, and, given `target_check`, its models against backends."""
    out: list[Diagnostic] = []
    sources: dict[str, SourceFile] = defs.sources
    own = [d for d in [*defs.blocks.values(), *defs.models.values()] if d.file == file]
    for d in own:
        out += unused_names(d, sources)
    out += unused_blocks(own, [r for r in defs.recipes if r.file == file], sources)
    tdefs = {(t.name, t.span): t for t in defs.recipes}
    for cfg in program.recipes:
        tdef = tdefs.get((cfg.name, cfg.span))
        if tdef is not None:
            out += recipe_warnings(cfg, tdef, program)
    seen: set[int] = set()
    for g in [*program.models.values(), *program.recipe_graphs.values()]:
        if g is None or id(g) in seen or g.source != file:  # an imported model is checked in its own file
            continue
        seen.add(id(g))
        out += dropout_last(g)
        if target_check is not None:
            out += target_check(g)
    return out


def _warning(code: str, message: str, span: Span | None, hint: str | None = None,
             notes: list[str] | None = None) -> Diagnostic:
    return Diagnostic(code=code, severity="warning", message=message, span=span, hint=hint, notes=notes or [])


# ---- the layer an output comes from -------------------------------------------------------------


def last_layer(g: Graph, value: str, through_dropout: bool = True) -> Node | None:
    """The node that computes `value`, looking through reshapes, permutes and identities (and
    dropout, unless `through_dropout` is false); None for a graph input."""
    producers = g.producers()
    node = producers.get(value)
    skip = _SHAPE_ONLY | ({"dropout"} if through_dropout else set())
    while node is not None and node.op in skip and node.inputs:
        node = producers.get(node.inputs[0])
    return node


def _layer(node: Node) -> str:
    return f"`{node.op}`" if node.name == node.op else f"{node.op} `{node.name}`"


def _where_layer(node: Node) -> list[str]:
    return [f"{_layer(node)} is at {node.span}"] if node.span is not None else []


def _single_channel(g: Graph, value: str) -> bool:
    """One score per example (or per pixel or step): what the metrics threshold at 0."""
    shape = g.values[value].shape
    return len(shape) == 1 or (len(shape) >= 2 and shape[1] == 1) or (len(shape) == 3 and shape[-1] == 1)


# ---- recipes against their graphs ---------------------------------------------------------------


def _entry(tdef: ast.TrainDef, key: str) -> ast.Node | None:
    """The value node of the recipe line `key = ...`, or None when the recipe leaves it out."""
    return next((s.value for s in tdef.body if isinstance(s, ast.Assign) and s.targets == [key]), None)


def _loss_spans(tdef: ast.TrainDef, outputs: list[str]) -> dict[str, Span]:
    """Output name → the span of its loss in the recipe; empty when the recipe takes the default."""
    node = _entry(tdef, "loss")
    if node is None:
        return {}
    if isinstance(node, ast.DictLit):
        spans = {k: v.span for k, v in node.items}
        return {o: spans.get(o, node.span) for o in outputs}
    return {o: node.span for o in outputs}


def _metric_spans(tdef: ast.TrainDef, count: int) -> list[Span]:
    node = _entry(tdef, "metrics")
    if isinstance(node, ast.ListLit) and len(node.items) == count:
        return [item.span for item in node.items]
    return [node.span if node is not None else tdef.span] * count


def recipe_warnings(cfg: Any, tdef: ast.TrainDef, program: Program) -> list[Diagnostic]:
    """W101–W104, W109, W110: each output's last layer against its loss and metrics; a GAN's
    discriminator against its loss; a distillation's networks against the logits it softens."""
    kind = getattr(cfg, "kind", "supervised")
    graphs = program.recipe_graphs
    if kind == "gan":
        dis = graphs.get(f"{tdef.name}.discriminator")
        return gan_loss_mismatch(dis, cfg.loss, _entry(tdef, "loss"), tdef) if dis is not None else []
    g = graphs.get(f"{tdef.name}.student") if kind == "distill" else graphs.get(tdef.name)
    if g is None:
        return []
    out = loss_mismatches(g, cfg.loss, _loss_spans(tdef, [o.name for o in g.outputs]), tdef.span)
    out += metric_mismatches(g, cfg.metrics, _metric_spans(tdef, len(cfg.metrics)))
    if kind == "distill":
        flagged = {d.span for d in out}  # a student's softmax that its loss already reports
        for role in ("teacher", "student"):
            net = graphs.get(f"{tdef.name}.{role}")
            if net is not None:
                out += [d for d in distill_mismatches(net, role, tdef) if d.span not in flagged]
    return out


def loss_mismatches(g: Graph, loss: Any, spans: dict[str, Span], recipe_span: Span | None = None) -> list[Diagnostic]:
    """An output whose last layer gives the loss something else than what it takes: W101
    (probabilities into a loss on logits), W102 (sigmoid twice, or logits into `bce`), W109 (not
    log-probabilities into `nll`/`kl_div`), W110 (a relu's logits)."""
    losses = dict(loss) if isinstance(loss, dict) else {o.name: loss for o in g.outputs}
    out: list[Diagnostic] = []
    for o in g.outputs:
        cfg = losses.get(o.name)
        node = last_layer(g, o.value)
        if cfg is None or node is None:
            continue
        name, where = cfg.type, spans.get(o.name)
        note = [f"the loss `{name}` is at {where}" if where is not None else f"the loss is `{name}`, the default"]
        where = where or recipe_span
        if name in _LOGIT_LOSSES and node.op in _PROBABILITIES:
            code = "W102" if name == "bce_with_logits" else "W101"
            effect = (f"the {node.op} is applied twice" if (name, node.op) in _TWICE
                      else "it reads probabilities in (0, 1) as logits")
            out.append(_warning(
                code, f"output `{o.name}` ends in {_layer(node)}, and `{name}` expects logits ({_LOGIT_LOSSES[name]}): "
                      f"{effect}", node.span,
                hint=f"drop the {node.op}: train on the logits" + (" (`dlspec predict` still prints probabilities)"
                                                                     if name != "dice" else ""),
                notes=note))
        elif name in _LOGIT_LOSSES and node.op in _NON_NEGATIVE:
            out.append(_warning(
                "W110", f"output `{o.name}` ends in {_layer(node)}, so its logits are never negative; `{name}` "
                        "expects unbounded logits", node.span,
                hint=f"drop the {node.op} after the last layer", notes=note))
        elif name == "bce" and node.op in _RAW:
            out.append(_warning(
                "W102", f"`bce` expects probabilities in [0, 1], but output `{o.name}` comes straight from "
                        f"{_layer(node)}: logits", where,
                hint="use loss = bce_with_logits() (it applies the sigmoid, stably), or end the model with sigmoid()",
                notes=_where_layer(node)))
        elif name in _LOG_PROB_LOSSES and (node.op in _PROBABILITIES or node.op in _RAW):
            what = "probabilities" if node.op in _PROBABILITIES else "logits"
            out.append(_warning(
                "W109", f"`{name}` expects log-probabilities, but output `{o.name}` comes from {_layer(node)}: {what}",
                where, hint="end the model with log_softmax()" + (", or use loss = cross_entropy() on the logits"
                                                                  if name == "nll" else ""),
                notes=_where_layer(node)))
    return out


def metric_mismatches(g: Graph, metrics: Sequence[Any], spans: list[Span]) -> list[Diagnostic]:
    """W104: a metric that thresholds a single-channel output at 0 (a logit) given a sigmoid's
    probabilities, which are all above 0."""
    out: list[Diagnostic] = []
    for m, where in zip(metrics, spans):
        if m.type not in _LABEL_METRICS:
            continue
        for o in g.outputs:
            if m.output is not None and m.output != o.name:
                continue
            node = last_layer(g, o.value)
            if node is None or node.op not in _PROBABILITIES or not _single_channel(g, o.value):
                continue
            out.append(_warning(
                "W104", f"metric `{m.key}` reads output `{o.name}` as a logit (a single channel is class 1 above 0), "
                        f"but it ends in {_layer(node)}: every prediction is class 1", where,
                hint=f"drop the {node.op}: metrics and `dlspec predict` read logits (train with a loss on logits, "
                     "such as bce_with_logits())", notes=_where_layer(node)))
    return out


def gan_loss_mismatch(dis: Graph, loss: str, entry: ast.Node | None, tdef: ast.TrainDef) -> list[Diagnostic]:
    """W103: a discriminator ending in sigmoid, which every GAN loss reads as raw scores."""
    if len(dis.outputs) != 1:
        return []
    node = last_layer(dis, dis.outputs[0].value)
    if node is None or node.op != "sigmoid":
        return []
    where = entry.span if entry is not None else tdef.span
    notes = [f"the loss `{loss}` is {'at ' + str(where) if entry is not None else 'the default'}"]
    if loss == "standard":
        message = (f"discriminator `{dis.name}` ends in {_layer(node)}, and the `standard` GAN loss applies the "
                   "sigmoid itself (binary cross-entropy on logits): the sigmoid is applied twice, so D(x) and "
                   "D(G(z)) stay within (0.5, 0.73)")
    else:
        message = (f"discriminator `{dis.name}` ends in {_layer(node)}, but the `{loss}` GAN loss takes unbounded "
                   "scores: the sigmoid keeps them within (0, 1)")
    return [_warning("W103", message, node.span, hint="drop the sigmoid(): the discriminator's output is a raw score",
                     notes=notes)]


def distill_mismatches(net: Graph, role: str, tdef: ast.TrainDef) -> list[Diagnostic]:
    """W101 for distillation: it softens the teacher's and the student's logits (log_softmax(x / T))."""
    out: list[Diagnostic] = []
    for o in net.outputs:
        node = last_layer(net, o.value)
        if node is not None and node.op in _PROBABILITIES:
            out.append(_warning(
                "W101", f"the {role} `{net.name}`'s output `{o.name}` ends in {_layer(node)}, and distillation expects "
                        "logits (it softens them with log_softmax(x / temperature))", node.span,
                hint=f"drop the {node.op}", notes=[f"the recipe `{tdef.name}` is at {tdef.span}"]))
    return out


# ---- graphs -----------------------------------------------------------------------------------


def dropout_last(g: Graph) -> list[Diagnostic]:
    """W105: dropout as the last layer before an output."""
    out: list[Diagnostic] = []
    for o in g.outputs:
        node = last_layer(g, o.value, through_dropout=False)
        if node is not None and node.op == "dropout" and node.attrs.get("p", 0.5) > 0:
            out.append(_warning(
                "W105", f"{_layer(node)} is the last layer before output `{o.name}`: while training it zeroes outputs "
                        "at random, and at inference it does nothing", node.span,
                hint="drop it, or move it before the last layer (dropout belongs between layers)"))
    return out


# ---- the file's definitions -------------------------------------------------------------------


def _walk(node: Any) -> Iterator[ast.Node]:
    """`node` and every AST node below it."""
    if isinstance(node, ast.Node):
        yield node
        for f in dataclasses.fields(node):
            if f.name != "span":
                yield from _walk(getattr(node, f.name))
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item)


def _used(nodes: Any) -> set[str]:
    return {n.name for n in _walk(nodes) if isinstance(n, ast.Var)}


def _name_span(span: Span, name: str, sources: dict[str, SourceFile]) -> Span:
    """The span of `name` on the first line of `span` (at or after its start), else `span`."""
    src = sources.get(span.file)
    col = src.line(span.line).find(name, span.column - 1) if src is not None else -1
    if col < 0:
        return span
    return Span(file=span.file, line=span.line, column=col + 1, end_line=span.line, end_column=col + 1 + len(name))


def unused_names(d: ast.BlockDef | ast.ModelDef, sources: dict[str, SourceFile]) -> list[Diagnostic]:
    """W106: a value assigned in a model or block (or an input it declares) that nothing reads.
    Names starting with `_` are meant to be unused; of an unpacking (`a, b = ...`) only one whose
    names all go unused is reported."""
    used = _used(d.body)
    out: list[Diagnostic] = []
    for stmt in _walk(d.body):
        if isinstance(stmt, ast.InputDecl) and stmt.name not in used and not stmt.name.startswith("_"):
            out.append(_warning("W106", f"input `{stmt.name}` of `{d.name}` is never used",
                                _name_span(stmt.span, stmt.name, sources),
                                hint="use it, or drop it from the inputs"))
        elif isinstance(stmt, ast.Assign) and not any(t in used or t.startswith("_") for t in stmt.targets) \
                and not (getattr(d, "base", None) is not None and stmt.targets == ["weights"]):  # a derived model's setting
            names = ", ".join(f"`{t}`" for t in stmt.targets)
            span = _name_span(stmt.span, stmt.targets[0], sources) if len(stmt.targets) == 1 else stmt.span
            out.append(_warning("W106", f"{names} {'is' if len(stmt.targets) == 1 else 'are'} assigned in `{d.name}` "
                                        "but never used", span,
                                hint="use it (in the `output`, or as a later layer's input), or drop the line"))
    return out


def unused_blocks(own: list[ast.BlockDef | ast.ModelDef], recipes: list[ast.TrainDef],
                  sources: dict[str, SourceFile]) -> list[Diagnostic]:
    """W107: a block the file defines that none of its models, blocks or recipes uses. A file of
    blocks alone is a library for others to import, and is not reported."""
    blocks = [d for d in own if isinstance(d, ast.BlockDef)]
    if len(blocks) == len(own) and not recipes:
        return []
    out: list[Diagnostic] = []
    for b in blocks:
        used = _used([[d.body, getattr(d, "base", None), d.params] for d in own if d is not b] + [recipes])
        if b.name not in used:
            out.append(_warning("W107", f"block `{b.name}` is defined but never used",
                                _name_span(b.span, b.name, sources),
                                hint="use it in a model, or delete it"))
    return out
