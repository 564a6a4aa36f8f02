"""AST → IR. Expands blocks, evaluates compile-time expressions, resolves names, infers and
checks every tensor shape as the graph is built, and lowers training recipes to configs.

Errors do not stop the lowering: each statement that fails is recorded, the names it would have
bound hold a poison value, and anything computed from poison fails silently — so every
independent mistake in a file is reported in one run, each once.
"""

from __future__ import annotations

import gc
import math
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import ast
from .errors import AttrError, Diagnostic, Diagnostics, DlspecError, ShapeError, did_you_mean
from .ir.check import layer_name_problem
from .ir.dims import Sym
from .ir.graph import BlockUse, Graph, GraphInput, GraphOutput, Node
from .ir.ops import REGISTRY
from .ir.types import DTYPE_BYTES, DTYPES, TensorType
from .limits import (
    MAX_BLOCK_DEPTH,
    MAX_DIM,
    MAX_EVAL_DEPTH,
    MAX_INT,
    MAX_LAYERS,
    MAX_LIST,
    MAX_REPEAT,
    MAX_STRING,
    MAX_SYM_DEGREE,
    MAX_SYM_TERMS,
    MEMORY_WARN_FRACTION,
    human_bytes,
    memory_budget,
)
from .parser import parse
from .source import SourceFile, Span, UnreadableSource, _reason, check_path, read_spec_bytes, resolve_path
from .values import (
    FUNCTIONS,
    POISON,
    Arg,
    BlockFn,
    Compose,
    ConfigCall,
    EnumName,
    LayerFn,
    ModelRef,
    Repeat,
    Tensor,
    ThenChain,
    describe,
)

PARAM_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, (int, Sym)) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, (str, EnumName)),
    "list": lambda v: isinstance(v, (list, tuple)),
    "tuple": lambda v: isinstance(v, (list, tuple)),
    "layer": lambda v: isinstance(v, FUNCTIONS),
    "any": lambda v: True,
}

#: the layers that take `activation=`, as Keras's Dense and Conv layers do
ACTIVATION_HOSTS = ("dense", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d")

#: iterations of `for` loops in the lowering of one file (each iteration at least a statement)
MAX_LOOP_STEPS = 100_000

TENSOR_ATTRS = ("shape", "rank", "dtype", "channels", "features", "batch", "length", "height", "width")


class Fail(Exception):
    """Unwinds the evaluation of one statement after its diagnostic was recorded."""


def snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


class Definitions:
    """Top-level definitions visible in one file: its own and those it imports."""

    def __init__(self) -> None:
        self.blocks: dict[str, ast.BlockDef] = {}
        self.models: dict[str, ast.ModelDef] = {}
        self.recipes: list[ast.TrainDef] = []
        self.sources: dict[str, SourceFile] = {}

    def names(self) -> list[str]:
        return [*self.blocks, *self.models]


class Loader:
    """Reads a file and, recursively, the files it imports; detects cycles and redefinitions."""

    def __init__(self, diags: Diagnostics):
        self.diags = diags
        self.sources: dict[str, SourceFile] = {}
        self._cache: dict[str, Definitions] = {}
        self._stack: list[str] = []

    def load(self, src: SourceFile, base_dir: Path | None = None) -> Definitions:
        self.sources[src.name] = src
        defs = Definitions()
        defs.sources = self.sources
        try:
            module = parse(src)
        except DlspecError as exc:
            self.diags.extend(exc)
            return defs
        try:
            own_path = resolve_path(src.name)
        except UnreadableSource:  # a name that is no path (`<generated>`, a NUL): imports resolve from here
            own_path = Path.cwd() / "<source>"
        base_dir = base_dir or own_path.parent
        own = str(own_path)
        pushed = own not in self._stack  # so that a file importing itself is a cycle too
        if pushed:
            self._stack.append(own)
        try:
            for item in module.items:
                if isinstance(item, ast.Import):
                    self._import(item, defs, base_dir)
        finally:
            if pushed:
                self._stack.pop()
        for item in module.items:
            if isinstance(item, (ast.BlockDef, ast.ModelDef)):
                self._define(defs, item)
            elif isinstance(item, ast.TrainDef):
                defs.recipes.append(item)
        return defs

    def _define(self, defs: Definitions, item: ast.BlockDef | ast.ModelDef, imported: bool = False) -> None:
        name = item.name
        if name in REGISTRY:
            self.diags.add(
                Diagnostic(code="E103", message=f"`{name}` is a built-in layer and cannot be redefined", span=item.span,
                           hint=f"name it `{name[0].upper() + name[1:]}` or `my_{name}`")
            )
            return
        existing = defs.blocks.get(name) or defs.models.get(name)
        if existing is not None and existing is not item:
            if imported:
                return
            self.diags.add(
                Diagnostic(code="E104", message=f"`{name}` is defined twice", span=item.span,
                           notes=[f"first defined at {existing.span}"])
            )
            return
        (defs.blocks if isinstance(item, ast.BlockDef) else defs.models)[name] = item

    def _import(self, item: ast.Import, defs: Definitions, base_dir: Path) -> None:
        try:
            path = resolve_path(base_dir / check_path(item.path))
        except UnreadableSource as exc:
            self.diags.add(Diagnostic(code="E105", message=f"cannot import {_shown(item.path)}: {exc.strerror}", span=item.span))
            return
        key = str(path)
        if key in self._stack:
            self.diags.add(Diagnostic(code="E106", message=f"import cycle: {item.path} imports itself", span=item.span))
            return
        if not _is_file(path):
            self.diags.add(
                Diagnostic(code="E105", message=f"cannot import {item.path!r}: no such file", span=item.span,
                           hint=f"paths are relative to the importing file's folder ({base_dir})")
            )
            return
        if key not in self._cache:
            self._stack.append(key)
            try:
                try:
                    text = read_spec_bytes(path).decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.diags.add(Diagnostic(code="E105", message=f"cannot read {item.path!r}: it is not UTF-8 text "
                                              f"(byte {exc.start})", span=item.span))
                    return
                except OSError as exc:
                    self.diags.add(Diagnostic(code="E105", message=f"cannot read {item.path!r}: {_reason(exc)}", span=item.span))
                    return
                rel = str(path)
                try:
                    rel = str(path.relative_to(Path.cwd()))
                except ValueError:
                    pass
                self._cache[key] = self.load(SourceFile(rel, text), path.parent)
            finally:
                self._stack.pop()
        sub = self._cache[key]
        wanted = item.names
        available = {**sub.blocks, **sub.models}
        if wanted is None:
            for d in available.values():
                self._define(defs, d, imported=True)
            return
        for n in wanted:
            if n not in available:
                self.diags.add(
                    Diagnostic(code="E107", message=f"{item.path!r} defines no `{n}`", span=item.span,
                               hint=did_you_mean(n, available))
                )
            else:
                self._define(defs, available[n], imported=True)


def _shown(path: str) -> str:
    """A path for a message: quoted, control characters escaped, at most 200 characters."""
    r = repr(path)
    return r if len(r) <= 200 else r[:197] + "..."


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


class Scope:
    def __init__(self, vars: dict[str, Any], prefix: str, owner: str):
        self.vars = vars
        self.prefix = prefix
        self.owner = owner  # "model", "block" or "recipe"
        self.counters: dict[str, int] = {}
        self.names: set[str] = set()

    def auto_name(self, base: str) -> str:
        n = self.counters.get(base, 0)
        while True:
            name = base if n == 0 else f"{base}_{n}"
            n += 1
            if name not in self.names:
                self.counters[base] = n
                return name


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.values: dict[str, TensorType] = {}
        self.paths: set[str] = set()
        #: each block use by its layer path (Graph.blocks)
        self.blocks: dict[str, BlockUse] = {}
        #: every proper prefix of a layer path (`layer2`, `layer2.0` for `layer2.0.conv1`): the groups
        #: a path names, which a layer cannot also be (its parameters would collide with theirs)
        self.groups: set[str] = set()
        #: bytes of parameters and buffers, and of one example's activations (symbols taken as 1)
        self.param_bytes = 0
        self.activation_bytes = 0
        #: the layer or input holding the most bytes: (bytes, what, span)
        self.largest: tuple[int, str, Span | None] = (0, "", None)

    def account(self, nbytes: int, what: str, span: Span | None) -> None:
        if nbytes > self.largest[0]:
            self.largest = (nbytes, what, span)


@contextmanager
def _evaluation_room():
    """Room for the evaluator's recursion (bounded by MAX_EVAL_DEPTH and MAX_BLOCK_DEPTH, far
    below this limit) and no cyclic garbage collection while a large graph is built: the values
    built hold no cycles, and full collections over a growing heap make the build superlinear."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 12_000))
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        sys.setrecursionlimit(old)


class Evaluator:
    """Lowers the models and recipes of one file's definitions."""

    def __init__(self, defs: Definitions, diags: Diagnostics):
        self.defs = defs
        self.diags = diags
        self.builder: GraphBuilder | None = None
        self.stack: list[tuple[str, Span]] = []
        self.replacements: dict[str, tuple[Any, Span]] = {}
        self.replaced: set[str] = set()
        self.depth = 0
        #: failures recorded so far, counting repeats that `Diagnostics` deduplicates: a model
        #: lowered twice (standalone, then by a recipe) must still see its own errors
        self.failures = 0
        #: gives each search value (`choice`, `range`, ...) its value: a `search_space.Picker`, or
        #: None for the defaults (`dlspec check`, `train`); see dlspec/search_space.py
        self.search: Any = None
        #: loop iterations run so far (bounded by MAX_LOOP_STEPS)
        self.loop_steps = 0
        #: `for` bodies being run now (nested loops count each)
        self.loop_depth = 0

    # ---- diagnostics ---------------------------------------------------------------------------
    def fail(self, code: str, message: str, span: Span | None, hint: str | None = None) -> Fail:
        notes = [f"in `{name}` used at {sp}" for name, sp in reversed(self.stack[-8:])]
        if len(self.stack) > 8:
            notes.append(f"... and {len(self.stack) - 8} more blocks around it")
        self.failures += 1
        self.diags.add(Diagnostic(code=code, message=message, span=span, hint=hint, notes=notes))
        return Fail()

    # ---- models --------------------------------------------------------------------------------
    def lower_model(self, mdef: ast.ModelDef, args: list[Arg], kwargs: dict[str, Arg], span: Span | None = None) -> Graph | None:
        with _evaluation_room():
            return self._lower_model(mdef, args, kwargs, span)

    def _lower_model(self, mdef: ast.ModelDef, args: list[Arg], kwargs: dict[str, Arg], span: Span | None = None) -> Graph | None:
        if mdef.base is not None:
            return self._lower_derived(mdef, args, kwargs, span)
        saved = self.builder
        self.builder = GraphBuilder()
        try:
            params = self.bind_params(mdef, args, kwargs, span or mdef.span)
        except Fail:
            self.builder = saved
            return None
        scope = Scope(dict(params), "", "model")
        inputs: list[GraphInput] = []
        outputs: list[GraphOutput] = []
        errors_before = self.failures
        for stmt in mdef.body:
            try:
                if isinstance(stmt, ast.InputStmt):
                    for decl in stmt.decls:
                        try:
                            inputs.append(self._model_input(decl, scope))
                        except Fail:
                            scope.vars.setdefault(decl.name, POISON)  # its uses fail silently
                elif isinstance(stmt, ast.OutputStmt):
                    outputs.extend(self._outputs(stmt, scope))
                else:
                    self.statement(stmt, scope)
            except Fail:
                pass
        if not inputs and self.failures == errors_before:
            self.fail("E110", f"model `{mdef.name}` declares no input", mdef.span,
                      hint="add `input x: float32[batch, 784]` (a name, a dtype and a shape)")
        if not outputs and self.failures == errors_before:
            self.fail("E111", f"model `{mdef.name}` has no output", mdef.span, hint="end the model with `output <value>`")
        b = self.builder
        self.builder = saved
        if self.failures == errors_before:
            self._check_memory(mdef, b)
        if self.failures > errors_before:
            return None
        return Graph(
            name=mdef.name,
            source=mdef.file,
            args={k: _jsonable(v) for k, v in params.items()},
            inputs=inputs,
            outputs=outputs,
            nodes=b.nodes,
            values=b.values,
            span=mdef.span,
            blocks=b.blocks,
        )

    def _lower_derived(self, mdef: ast.ModelDef, args, kwargs, span) -> Graph | None:
        base = mdef.base
        assert base is not None
        try:
            params = self.bind_params(mdef, args, kwargs, span or mdef.span)
        except Fail:
            return None
        scope = Scope(dict(params), "", "recipe")
        replacements: dict[str, tuple[Any, Span]] = {}
        freeze: list[tuple[str, Span]] = []
        weights: tuple[str, Span] | None = None
        for stmt in mdef.body:
            try:
                if isinstance(stmt, ast.ReplaceStmt):
                    fn = self.ev(stmt.value, Scope(scope.vars, "", "model"))
                    if not isinstance(fn, FUNCTIONS):
                        raise self.fail("E502", f"`replace {stmt.path}` needs a layer or block; got {describe(fn)}", stmt.value.span)
                    replacements[stmt.path] = (fn, stmt.span)
                elif isinstance(stmt, ast.FreezeStmt):
                    freeze.extend((p, stmt.span) for p in stmt.patterns)
                elif isinstance(stmt, ast.Assign) and stmt.targets == ["weights"]:
                    w = self.ev(stmt.value, scope)
                    if not isinstance(w, str):
                        raise self.fail("E504", f"`weights` is a file path string; got {describe(w)}", stmt.value.span)
                    weights = (w, stmt.value.span)
                elif isinstance(stmt, ast.Assign):
                    self.statement(stmt, scope)
                else:
                    raise self.fail(
                        "E501",
                        f"a model built from `{base.name}` may only set `weights = \"...\"`, `freeze` and `replace`",
                        stmt.span,
                        hint="to add layers, write a new model that uses the base as a block",
                    )
            except Fail:
                pass
        bdef = self.defs.models.get(base.name)
        if bdef is None:
            self.fail("E101", f"unknown model `{base.name}`", base.span, hint=did_you_mean(base.name, self.defs.models))
            return None
        if base.name == mdef.name or any(name == base.name for name, _ in self.stack):
            self.fail("E120", f"`{mdef.name}` is built from itself (through `{base.name}`)", base.span)
            return None
        try:
            bargs = [Arg(self.ev(a, scope), a.span) for a in base.args]
            bkw = {k.name: Arg(self.ev(k.value, scope), k.value.span) for k in base.kwargs}
        except Fail:
            return None
        saved_r, saved_d = self.replacements, self.replaced
        self.replacements, self.replaced = replacements, set()
        self.stack.append((base.name, base.span))
        try:
            graph = self.lower_model(bdef, bargs, bkw, base.span)
        finally:
            self.stack.pop()
            hit = self.replaced
            self.replacements, self.replaced = saved_r, saved_d
        if graph is None:
            return None
        ok = True
        node_names = [n.name for n in graph.nodes]
        for path, (_, sp) in replacements.items():
            if path not in hit:
                ok = False
                self.fail("E503", f"`{base.name}` has no layer `{path}` to replace", sp,
                          hint=did_you_mean(path, node_names) or f"its layers: {', '.join(node_names[:12])}")
        from fnmatch import fnmatchcase

        param_paths = [p.path for p in graph.params()]
        for pat, sp in freeze:
            if not any(fnmatchcase(p, pat) or fnmatchcase(p.rsplit(".", 1)[0], pat) for p in param_paths):
                ok = False
                self.fail("E505", f"freeze pattern {pat!r} matches no parameter of `{base.name}`", sp,
                          hint=did_you_mean(pat, node_names) or "patterns match layer paths like `features.*` or `conv1`")
        if not ok:
            return None
        graph = graph.model_copy(
            update={
                "name": mdef.name,
                "source": mdef.file,
                "frozen": [p for p, _ in freeze],
                "replaced": sorted(replacements),
                "base_weights": self._resolve_path(weights[0], mdef.file) if weights else None,
                "span": mdef.span,
            }
        )
        if weights is not None:
            self._check_weights(graph, weights, set(replacements))
        return graph

    def _check_memory(self, mdef: ast.ModelDef, b: GraphBuilder) -> None:
        """Parameters plus one example's activations against the memory budget (the machine's
        memory unless DLSPEC_MEMORY_BUDGET says otherwise): an error above it, a warning above
        MEMORY_WARN_FRACTION of it. Nothing has been allocated yet; this is arithmetic on shapes."""
        budget = memory_budget()
        total = b.param_bytes + b.activation_bytes
        if budget is None or total <= budget * MEMORY_WARN_FRACTION:
            return
        figures = (f"{human_bytes(b.param_bytes)} of parameters and {human_bytes(b.activation_bytes)} of activations "
                   f"for one example (symbolic sizes taken as 1)")
        biggest = f"the largest is {b.largest[1]} ({human_bytes(b.largest[0])})" if b.largest[1] else ""
        if total > budget:
            self.fail("E322", f"model `{mdef.name}` needs {figures}: {human_bytes(total)}, more than the "
                      f"{human_bytes(budget)} of memory this machine has", b.largest[2] or mdef.span,
                      hint=(biggest + "; " if biggest else "") + "make the layers or inputs smaller")
            return
        self.diags.add(Diagnostic(code="W320", severity="warning", span=mdef.span,
                                  message=f"model `{mdef.name}` needs {figures}: {human_bytes(total)} of the "
                                          f"{human_bytes(budget)} this machine has",
                                  hint=(biggest + "; " if biggest else "") + "training needs several times this (gradients, optimizer state, a whole batch)"))

    def _resolve_path(self, path: str, spec_file: str) -> str:
        """A weights path relative to the spec's folder; a run folder (`../runs/x`) stands for its
        best.safetensors, or last.safetensors when the run kept no best."""
        p = Path(path)
        if not p.is_absolute():
            p = Path(spec_file).resolve().parent / p
        if p.is_dir() or (not p.suffix and not p.exists()):
            best = p / "best.safetensors"
            p = best if best.is_file() or not (p / "last.safetensors").is_file() else p / "last.safetensors"
        return str(p)

    def _check_weights(self, graph: Graph, weights: tuple[str, Span], replaced: set[str]) -> None:
        from .weights import read_header

        path = graph.base_weights
        assert path is not None
        if not Path(path).is_file():
            self.diags.add(
                Diagnostic(code="W501", severity="warning", span=weights[1],
                           message=f"weights file {weights[0]!r} does not exist yet; names and shapes are not checked",
                           hint="train the base model first; its run folder holds best.safetensors")
            )
            return
        try:
            header = read_header(path)
        except ValueError as exc:
            self.fail("E506", f"cannot read weights {weights[0]!r}: {exc}", weights[1])
            return
        want = {p.path: tuple(int(d) for d in p.shape) for p in graph.params()
                if not any(p.node == r or p.node.startswith(r + ".") for r in replaced)}
        for name, shape in want.items():
            if name not in header:
                self.fail("E507", f"weights {weights[0]!r} lack `{name}` {list(shape)}", weights[1],
                          hint=did_you_mean(name, header))
            elif tuple(header[name]) != shape:
                self.fail("E508", f"weights {weights[0]!r}: `{name}` is {list(header[name])}, the model needs {list(shape)}",
                          weights[1], hint="replace that layer (`replace ...`) so it is trained afresh")

    def _model_input(self, decl: ast.InputDecl, scope: Scope) -> GraphInput:
        if decl.type is None:
            raise self.fail("E112", f"model input `{decl.name}` needs a type", decl.span,
                            hint=f"write `input {decl.name}: float32[batch, 784]`")
        t = self.tensor_type(decl.type, scope)
        b = self.builder
        assert b is not None
        if decl.name in scope.vars:
            raise self.fail("E104", f"`{decl.name}` is defined twice", decl.span)
        b.values[decl.name] = t
        nbytes = _bytes_at_one(t)
        b.activation_bytes += nbytes
        b.account(nbytes, f"input `{decl.name}` {t}", decl.span)
        scope.vars[decl.name] = Tensor(decl.name, t)
        scope.names.add(decl.name)
        return GraphInput(name=decl.name, type=t, span=decl.span)

    def tensor_type(self, te: ast.TensorTypeExpr, scope: Scope) -> TensorType:
        if te.dtype not in DTYPES:
            raise self.fail("E311", f"unknown dtype `{te.dtype}`", te.span, hint=did_you_mean(te.dtype, DTYPES) or f"one of {', '.join(DTYPES)}")
        dims = []
        for d in te.dims:
            v = self.ev(d, scope, symbols=True)
            if isinstance(v, EnumName):
                v = Sym.symbol(v.name)
            if isinstance(v, bool) or not isinstance(v, (int, Sym)):
                raise self.fail("E312", f"a dimension is an integer or a symbol like `batch`; got {describe(v)}", d.span)
            if isinstance(v, int) and v <= 0:
                raise self.fail("E312", f"a dimension must be positive; got {v}", d.span)
            if isinstance(v, int) and v > MAX_DIM:
                raise self.fail("E312", f"a dimension must be at most {MAX_DIM}; got {v}", d.span)
            dims.append(v)
        return TensorType(dtype=te.dtype, shape=tuple(dims))

    def _outputs(self, stmt: ast.OutputStmt, scope: Scope) -> list[GraphOutput]:
        outs = []
        for i, item in enumerate(stmt.items):
            v = self.ev(item.value, scope)
            if v is POISON:
                raise Fail()
            if not isinstance(v, Tensor):
                if isinstance(v, EnumName):
                    raise self._unknown_name(v, scope)
                raise self.fail("E113", f"an output must be a tensor; got {describe(v)}", item.value.span)
            if item.name is not None:
                name = item.name
            elif isinstance(item.value, ast.Var):
                name = item.value.name
            else:
                name = "output" if len(stmt.items) == 1 else f"output{i}"
            outs.append(GraphOutput(name=name, value=v.value, span=item.span))
        return outs

    # ---- parameters ----------------------------------------------------------------------------
    def bind_params(self, d: ast.BlockDef | ast.ModelDef, args: list[Arg], kwargs: dict[str, Arg], span: Span) -> dict[str, Any]:
        kind = "block" if isinstance(d, ast.BlockDef) else "model"
        names = [p.name for p in d.params]
        if len(args) > len(names):
            raise self.fail("E206", f"{kind} `{d.name}` takes {len(names)} argument(s); got {len(args)}", span,
                            hint=f"its parameters: ({', '.join(names)})" if names else None)
        bound: dict[str, Any] = {}
        given: dict[str, Arg] = dict(zip(names, args))
        for k, a in kwargs.items():
            if k not in names:
                raise self.fail("E203", f"{kind} `{d.name}` has no parameter `{k}`", a.span,
                                hint=did_you_mean(k, names) or (f"its parameters: ({', '.join(names)})" if names else f"`{d.name}` takes no arguments"))
            if k in given:
                raise self.fail("E206", f"parameter `{k}` of `{d.name}` is given twice", a.span)
            given[k] = a
        scope = Scope(bound, "", "block")
        for p in d.params:
            if p.name in given:
                v, vspan = given[p.name].value, given[p.name].span
            elif p.default is not None:
                v, vspan = self.ev(p.default, scope), p.default.span
            else:
                raise self.fail("E202", f"{kind} `{d.name}` needs `{p.name}`", span,
                                hint=f"pass it: {d.name}({p.name}=...)")
            if v is POISON:
                raise Fail()
            if p.type is not None:
                check = PARAM_TYPES.get(p.type)
                if check is None:
                    raise self.fail("E208", f"unknown parameter type `{p.type}`", p.span,
                                    hint=did_you_mean(p.type, PARAM_TYPES) or f"one of {', '.join(PARAM_TYPES)}")
                if not check(v):
                    raise self.fail("E204", f"`{p.name}` of `{d.name}` is {p.type}; got {describe(v)}", vspan)
                if p.type == "float" and isinstance(v, int):
                    v = float(v)
                if p.type == "str" and isinstance(v, EnumName):
                    v = v.name
            bound[p.name] = v
        return bound

    # ---- statements ----------------------------------------------------------------------------
    def statement(self, stmt: ast.Node, scope: Scope) -> Any:
        if isinstance(stmt, ast.Assign):
            try:
                v = self.ev(stmt.value, scope)
            except Fail:
                for t in stmt.targets:
                    scope.vars[t] = POISON
                raise
            self._bind(stmt, v, scope)
            return v
        if isinstance(stmt, ast.ExprStmt):
            v = self.ev(stmt.value, scope)
            if isinstance(v, EnumName) and isinstance(stmt.value, ast.Var):
                scope.vars[v.name] = POISON  # most likely meant as `name = ...`; its uses fail silently
                raise self.fail("E114", f"`{v.name}` on its own does nothing", stmt.span,
                                hint=f"is a `=` missing? `{v.name} = x -> layer(...)`")
            if isinstance(v, FUNCTIONS) and scope.owner == "model":
                raise self.fail("E114", f"{describe(v)} is not applied to anything", stmt.span,
                                hint="chain it: `y = x -> layer(...)`")
            return v
        if isinstance(stmt, ast.ForStmt):
            self.loop(stmt, scope, lambda s: self.statement(s, scope))
            return None
        if isinstance(stmt, ast.InputStmt):
            raise self.fail("E115", "`input` belongs at the top of a model or block", stmt.span)
        if isinstance(stmt, ast.OutputStmt):
            raise self.fail("E115", "`output` belongs in a model or a block with inputs", stmt.span)
        if isinstance(stmt, (ast.FreezeStmt, ast.ReplaceStmt)):
            raise self.fail("E501", "`freeze` and `replace` belong in a model built `from` another model", stmt.span)
        raise self.fail("E001", "unexpected statement", stmt.span)

    def loop(self, stmt: ast.ForStmt, scope: Scope, run: Callable[[ast.Node], Any]) -> None:
        """`for targets in items { body }`: the body once per item, its names bound in the
        enclosing scope (as in Python, what the body assigns stays visible after the loop). Every
        failing statement of an iteration is reported; the iterations after it are not run, since
        they would most likely repeat the same mistake."""
        items = self._loop_items(stmt, scope)
        for s in stmt.body:
            if isinstance(s, (ast.InputStmt, ast.OutputStmt)):
                raise self.fail("E132", f"`{'input' if isinstance(s, ast.InputStmt) else 'output'}` cannot be inside a `for`",
                                s.span, hint="declare inputs and outputs once, outside the loop")
        for item in items:
            self.loop_steps += 1
            if self.loop_steps > MAX_LOOP_STEPS:
                raise self.fail("E134", f"loops ran more than {MAX_LOOP_STEPS:,} iterations in this model", stmt.span,
                                hint="iterate over a shorter list, or nest fewer loops")
            self._bind_loop(stmt, stmt.targets, item, scope, stmt.iterable.span)
            failed = False
            self.loop_depth += 1
            try:
                for s in stmt.body:
                    try:
                        run(s)
                    except Fail:
                        failed = True
            finally:
                self.loop_depth -= 1
            if failed:
                raise Fail()

    def _loop_items(self, stmt: ast.ForStmt, scope: Scope) -> list:
        node = stmt.iterable
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Var) and node.func.name == "range" \
                and "range" not in scope.vars and not node.kwargs:
            # `for i in range(n)`: Python's range (elsewhere `range(low, high)` is a search value)
            bounds = [self.ev(a, scope) for a in node.args]
            if any(b is POISON for b in bounds):
                raise Fail()
            if not 1 <= len(bounds) <= 3 or not all(_is_int(b) for b in bounds):
                raise self.fail("E133", f"`range` in a `for` takes 1 to 3 integers; got {', '.join(map(describe, bounds)) or 'none'}",
                                node.span, hint="`for i in range(4)`, `range(1, 5)` or `range(0, 8, 2)`")
            if len(bounds) == 3 and bounds[2] == 0:
                raise self.fail("E133", "the step of `range` cannot be 0", node.args[2].span)
            r = range(*bounds)
            if len(r) > MAX_LIST:
                raise self.fail("E215", f"a list holds at most {MAX_LIST:,} items; this range holds {len(r):,}", node.span)
            return list(r)
        v = self.ev(node, scope)
        if v is POISON:
            raise Fail()
        if isinstance(v, (list, tuple)):
            return list(v)
        raise self.fail("E133", f"`for` iterates over a list or tuple; got {describe(v)}", node.span,
                        hint="`for (c, s) in [(64, 1), (128, 2)] { ... }` or `for i in range(4) { ... }`")

    def _bind_loop(self, stmt: ast.ForStmt, targets: list, item: Any, scope: Scope, span: Span) -> None:
        if len(targets) == 1 and isinstance(targets[0], str):
            scope.vars[targets[0]] = item
            return
        if len(targets) == 1:
            targets = targets[0]
        if not isinstance(item, (list, tuple)) or len(item) != len(targets):
            n = (f"{len(item)} value{'s' if len(item) != 1 else ''}" if isinstance(item, (list, tuple))
                 else describe(item))
            raise self.fail("E133", f"`for` cannot unpack {n} into the {len(targets)} names {_loop_text(targets)}", span,
                            hint="each item of the list needs as many values as the loop has names")
        for t, x in zip(targets, item):
            if isinstance(t, str):
                scope.vars[t] = x
            else:
                self._bind_loop(stmt, [t], x, scope, span)

    def _bind(self, stmt: ast.Assign, v: Any, scope: Scope) -> None:
        if len(stmt.targets) == 1:
            scope.vars[stmt.targets[0]] = v
            return
        if v is POISON:
            for t in stmt.targets:
                scope.vars[t] = POISON
            return
        if not isinstance(v, (list, tuple)) or len(v) != len(stmt.targets):
            n = len(v) if isinstance(v, (list, tuple)) else 1
            for t in stmt.targets:
                scope.vars[t] = POISON
            raise self.fail("E209", f"cannot unpack {n} value(s) into {len(stmt.targets)} names", stmt.span)
        for t, item in zip(stmt.targets, v):
            scope.vars[t] = item

    # ---- expressions ---------------------------------------------------------------------------
    def ev(self, node: ast.Node, scope: Scope, symbols: bool = False) -> Any:
        # the counter goes back down in `finally` however the evaluation ends, so a failure
        # leaves the next expression the same room as the first
        if self.depth >= MAX_EVAL_DEPTH:
            raise self.fail("E121", f"evaluation nests more than {MAX_EVAL_DEPTH} levels deep (expressions inside "
                            "blocks inside blocks)", node.span, hint="split deep expressions into named steps, "
                            "or flatten the blocks")
        self.depth += 1
        try:
            return self._ev(node, scope, symbols)
        finally:
            self.depth -= 1

    def _checked(self, v: Any, span: Span) -> Any:
        """A computed number within the compile-time limits, or E214."""
        problem = _number_problem(v)
        if problem:
            raise self.fail("E214", problem, span, hint="compile-time integers are int64")
        return v

    def _ev(self, node: ast.Node, scope: Scope, symbols: bool) -> Any:
        if isinstance(node, ast.Literal):
            return node.value
        if isinstance(node, ast.Var):
            return self._var(node, scope, symbols)
        if isinstance(node, ast.Call):
            fn = self.ev_fn(node, scope)
            if isinstance(fn, (LayerFn, BlockFn)) and (fn.tensor_args or getattr(fn, "tensor_kwargs", None)):
                return self.apply(fn, [], scope, node.span)
            return fn
        if isinstance(node, ast.Pipe):
            # a chain `a -> f -> g` nests to the left; walk it as a list so long chains need no deep recursion
            steps: list[ast.Pipe] = []
            head: ast.Node = node
            while isinstance(head, ast.Pipe):
                steps.append(head)
                head = head.source
            cur = self.ev(head, scope)
            for step in reversed(steps):
                cur = self._pipe_step(cur, step, scope)
            return cur
        if isinstance(node, ast.NamedLayer):
            fn = self.ev_fn(node, scope)
            if isinstance(fn, (LayerFn, BlockFn)) and fn.tensor_args:
                return self.apply(fn, [], scope, node.span)
            return fn
        if isinstance(node, ast.BinOp):
            return self._binop(node, self.ev(node.left, scope, symbols), self.ev(node.right, scope, symbols), scope)
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand, scope, symbols)
            if v is POISON:
                raise Fail()
            if node.op == "not":
                if not isinstance(v, bool):
                    raise self.fail("E205", f"`not` needs a bool; got {describe(v)}", node.operand.span)
                return not v
            if isinstance(v, Tensor):
                return self._emit_scalar("mul", v, -1.0, scope, node.span)
            if isinstance(v, (int, float, Sym)) and not isinstance(v, bool):
                return -v  # |v| <= MAX_INT, so -v is in range too
            raise self.fail("E205", f"cannot negate {describe(v)}", node.span)
        if isinstance(node, ast.Compare):
            return self._compare(node, self.ev(node.left, scope, symbols), self.ev(node.right, scope, symbols))
        if isinstance(node, ast.BoolOp):
            left = self.ev(node.left, scope, symbols)
            if not isinstance(left, bool):
                raise self.fail("E205", f"`{node.op}` needs bools; got {describe(left)}", node.left.span)
            if (node.op == "and" and not left) or (node.op == "or" and left):
                return left
            right = self.ev(node.right, scope, symbols)
            if not isinstance(right, bool):
                raise self.fail("E205", f"`{node.op}` needs bools; got {describe(right)}", node.right.span)
            return right
        if isinstance(node, ast.Cond):
            test = self.ev(node.test, scope, symbols)
            if test is POISON:
                raise Fail()
            if not isinstance(test, bool):
                raise self.fail("E205", f"the condition of `if` must be a bool; got {describe(test)}", node.test.span)
            return self.ev(node.then if test else node.orelse, scope, symbols)
        if isinstance(node, ast.ListLit):
            return [self.ev(i, scope, symbols) for i in node.items]
        if isinstance(node, ast.TupleLit):
            return tuple(self.ev(i, scope, symbols) for i in node.items)
        if isinstance(node, ast.DictLit):
            return {k: self.ev(v, scope, symbols) for k, v in node.items}
        if isinstance(node, ast.Attr):
            return self._attr(node, self.ev(node.value, scope, symbols))
        if isinstance(node, ast.Index):
            return self._index(node, self.ev(node.value, scope, symbols), self.ev(node.index, scope, symbols))
        if isinstance(node, ast.Then):
            a = self.ev(node.first, scope)
            b = self.ev(node.second, scope)
            parts = (a.parts if isinstance(a, ThenChain) else [a]) + [b]
            return ThenChain(parts, node.span)
        raise self.fail("E001", f"unexpected {type(node).__name__}", node.span)

    def _pipe_step(self, src: Any, node: ast.Pipe, scope: Scope) -> Any:
        if src is POISON:
            raise Fail()
        if isinstance(src, FUNCTIONS):
            return Compose([src, self.ev_fn(node.target, scope)], node.span)
        fn = self.ev_fn(node.target, scope)
        inputs = list(src) if isinstance(src, (list, tuple)) else [src]
        for t in inputs:
            if t is POISON:
                raise Fail()
            if not isinstance(t, Tensor):
                raise self.fail("E205", f"`->` feeds a tensor into a layer; its left side is {describe(t)}", node.source.span)
        return self.apply(fn, inputs, scope, node.target.span)

    def _var(self, node: ast.Var, scope: Scope, symbols: bool) -> Any:
        name = node.name
        if name in scope.vars:
            v = scope.vars[name]
            if v is POISON:
                raise Fail()
            return v
        if name == "inf":  # masks: where(keep, scores, a_value=-inf)
            return math.inf
        if name in REGISTRY:
            return LayerFn(REGISTRY[name], [], {}, node.span)
        if name in self.defs.blocks:
            return BlockFn(self.defs.blocks[name], [], {}, node.span)
        if name in self.defs.models:
            if scope.owner == "recipe":
                return ModelRef(self.defs.models[name], [], {}, node.span)
            return BlockFn(self.defs.models[name], [], {}, node.span)
        if symbols:
            return Sym.symbol(name)
        return EnumName(name, node.span)

    def _unknown_name(self, v: EnumName, scope: Scope, what: str = "value") -> Fail:
        candidates = [k for k, x in scope.vars.items() if x is not POISON] + list(REGISTRY) + self.defs.names()
        return self.fail("E102", f"unknown {what} `{v.name}`", v.span, hint=did_you_mean(v.name, candidates))

    # ---- calls and layers ----------------------------------------------------------------------
    def ev_fn(self, node: ast.Node, scope: Scope) -> Any:
        """Evaluate the right side of `->`: a layer, block or repetition, not yet applied."""
        if isinstance(node, ast.NamedLayer):
            fn = self.ev_fn(node.layer, scope)
            if not isinstance(fn, FUNCTIONS):
                raise self.fail("E205", f"only a layer or block can be named with `as`; got {describe(fn)}", node.span)
            return fn.named(self.layer_name(node, scope))
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        if isinstance(node, ast.BinOp) and node.op == "*":
            left = self.ev_fn(node.left, scope) if _is_fn_syntax(node.left) else self.ev(node.left, scope)
            right = self.ev_fn(node.right, scope) if _is_fn_syntax(node.right) else self.ev(node.right, scope)
            return self._binop(node, left, right, scope)
        v = self.ev(node, scope)
        if v is POISON:
            raise Fail()
        if isinstance(v, EnumName):
            raise self._unknown_name(v, scope, "layer")
        if not isinstance(v, FUNCTIONS):
            raise self.fail("E205", f"the right side of `->` must be a layer or block; got {describe(v)}", node.span)
        return v

    def layer_name(self, node: ast.NamedLayer, scope: Scope) -> str:
        """The name `as` gives: as written, or a template's text with its values filled in."""
        if node.template is None:
            return node.name
        text = ""
        for part in node.template:
            if isinstance(part, str):
                text += part
                continue
            v = self.ev(part, scope)
            if v is POISON:
                raise Fail()
            if isinstance(v, EnumName):
                raise self._unknown_name(v, scope)
            if not (_is_int(v) or isinstance(v, str)):
                raise self.fail("E131", f"a name template holds integers and strings; got {describe(v)}", part.span)
            text += str(v)
        if not text:
            raise self.fail("E131", "this name template gives an empty name", node.span)
        return text

    def _call(self, node: ast.Call, scope: Scope) -> Any:
        func = node.func
        if not isinstance(func, ast.Var):
            callee = self.ev(func, scope)
            raise self.fail("E205", f"{describe(callee)} cannot be called", func.span)
        name = func.name
        callee = scope.vars.get(name)
        if callee is None and name in SEARCH_FUNCTIONS:  # its options are evaluated only when chosen
            from .search_space import search_value

            return search_value(self, node, scope)
        args = [Arg(self.ev(a, scope), a.span) for a in node.args]
        kwargs: dict[str, Arg] = {}
        for k in node.kwargs:
            if k.name in kwargs:
                raise self.fail("E206", f"argument `{k.name}` is given twice", k.span)
            kwargs[k.name] = Arg(self.ev(k.value, scope), k.span)  # a caret under `name=value`
        for a in [*args, *kwargs.values()]:
            if a.value is POISON:
                raise Fail()
        if callee is not None and isinstance(callee, FUNCTIONS) and not (args or kwargs):
            return callee
        if callee is not None:
            raise self.fail("E205", f"`{name}` is {describe(callee)}, which cannot be called", func.span)
        if name in BUILTIN_FUNCTIONS:
            return self._builtin(name, args, kwargs, node)
        if name in REGISTRY:
            op = REGISTRY[name]
            tensor_args = [a for a in args if isinstance(a.value, (Tensor, list, tuple)) and _all_tensors(a.value)]
            attr_args = [a for a in args if a not in tensor_args]
            flat: list[Arg] = []
            for a in tensor_args:
                if isinstance(a.value, Tensor):
                    flat.append(a)
                else:
                    flat.extend(Arg(t, a.span) for t in a.value)
            tkw = {k: a for k, a in kwargs.items() if k in op.inputs and isinstance(a.value, Tensor)}
            akw = {k: a for k, a in kwargs.items() if k not in tkw}
            return LayerFn(op, attr_args, akw, node.span, tensor_args=flat, tensor_kwargs=tkw)
        if name in self.defs.blocks or (name in self.defs.models and scope.owner != "recipe"):
            d = self.defs.blocks.get(name) or self.defs.models[name]
            tensor_args = [a for a in args if isinstance(a.value, Tensor)]
            other = [a for a in args if not isinstance(a.value, Tensor)]
            return BlockFn(d, other, kwargs, node.span, tensor_args=tensor_args)
        if name in self.defs.models:
            return ModelRef(self.defs.models[name], args, kwargs, node.span)
        if scope.owner == "recipe":
            return ConfigCall(name, args, kwargs, node.span)
        candidates = list(REGISTRY) + self.defs.names()
        raise self.fail("E101", f"unknown layer `{name}`", func.span,
                        hint=did_you_mean(name, candidates) or "see `docs/language.md` for the layers dlspec knows")

    def _builtin(self, name: str, args: list[Arg], kwargs: dict[str, Arg], node: ast.Call) -> Any:
        allowed = BUILTIN_KEYWORDS.get(name, ())
        unknown = [k for k in kwargs if k not in allowed]
        if unknown:
            takes = f"takes only {', '.join(f'`{k}=`' for k in allowed)}" if allowed else "takes no keyword arguments"
            raise self.fail("E203", f"`{name}` {takes}; got `{unknown[0]}=`", kwargs[unknown[0]].span)
        vals = [a.value for a in args]
        try:
            result = BUILTIN_FUNCTIONS[name](*vals, **{k: a.value for k, a in kwargs.items()})
        except (TypeError, ValueError, OverflowError) as exc:
            raise self.fail("E205", f"`{name}`: {exc}", node.span) from None
        return self._checked(result, node.span)

    def apply(self, fn: Any, inputs: list[Tensor], scope: Scope, span: Span) -> Any:
        if isinstance(fn, LayerFn):
            act = fn.kwargs.get("activation")
            if act is not None and fn.op.name in ACTIVATION_HOSTS and "activation" not in fn.op.Attrs.model_fields:
                # Keras's `Dense(64, activation="relu")`: the layer, then the activation as a layer of
                # its own (named as unnamed layers are), so the layer's parameters keep their names
                after = self._activation_layer(fn.op.name, act)
                base = replace(fn, kwargs={k: v for k, v in fn.kwargs.items() if k != "activation"})
                out = self._apply_layer(base, inputs, scope, span)
                if after is None:
                    return out
                return self._apply_layer(after, [out], scope, act.span)
            return self._apply_layer(fn, inputs, scope, span)
        if isinstance(fn, BlockFn):
            return self._apply_block(fn, inputs, scope, span)
        if isinstance(fn, Repeat):
            if fn.times == 0:  # no layer: the value passes through
                return inputs[0] if len(inputs) == 1 else tuple(inputs)
            cur: Any = inputs
            b = self.builder
            before = len(b.nodes) if b is not None else 0
            for i in range(fn.times):
                step = fn.fn.named(f"{fn.name}.{i}") if fn.name else fn.fn
                cur = self.apply(step, cur if isinstance(cur, list) else [cur], scope, span)
                if i == 0 and b is not None:  # each repetition adds what the first added
                    predicted = before + (len(b.nodes) - before) * fn.times
                    if predicted > MAX_LAYERS:
                        raise self.fail("E320", f"this repetition would make {predicted:,} layers; a model holds at "
                                        f"most {MAX_LAYERS:,}", fn.span, hint="repeat fewer times, or repeat a smaller block")
            return cur
        if isinstance(fn, Compose):
            cur = inputs
            for i, f in enumerate(fn.fns):
                step = f.named(f"{fn.name}.{i}") if fn.name else f
                cur = self.apply(step, cur if isinstance(cur, list) else [cur], scope, span)
            return cur
        raise self.fail("E205", f"{describe(fn)} cannot be applied to a tensor", span)

    def _claim_name(self, scope: Scope, fn: Any, base: str, span: Span) -> str:
        if fn.name is not None:
            local = fn.name
            if local in scope.names:
                hint = ("each iteration of a `for` names its layers again: put the loop's variable in the name, "
                        f"`as \"{local}{{i}}\"`") if self.loop_depth else None
                raise self.fail("E104", f"layer name `{local}` is used twice in this scope", span, hint=hint)
            parts = local.split(".")
            why = next((w for w in map(layer_name_problem, parts) if w), None)
            if why:
                if len(parts) > 1:
                    why = f"each part of a layer path (between dots) is a name; {why}"
                raise self.fail("E117", f"`{local}` cannot name a layer: {why}", span,
                                hint=f"rename it, e.g. `{_suggest_name(parts)}`")
        else:
            local = scope.auto_name(base)
        scope.names.add(local)
        return scope.prefix + local

    def _apply_layer(self, fn: LayerFn, piped: list[Tensor], scope: Scope, span: Span) -> Any:
        op = fn.op
        path = self._claim_name(scope, fn, op.name, span)
        if path in self.replacements and path not in self.replaced:  # not inside its own replacement
            new, rspan = self.replacements[path]
            self.replaced.add(path)
            local = path[len(scope.prefix):]
            return self.apply(new.named(local), [*piped, *[a.value for a in fn.tensor_args]], _Unnamed(scope, local), rspan)
        # attributes
        attrs: dict[str, Any] = {}
        if len(fn.args) > len(op.positional):
            extra = fn.args[len(op.positional)]
            if not op.positional:
                raise self.fail("E206", f"{op.name} takes no positional attributes; got {describe(extra.value)}", extra.span,
                                hint=f"name it: {op.name}(<attribute>=...)" if op.Attrs.model_fields else f"{op.name}() takes no attributes")
            raise self.fail("E206", f"{op.name} takes at most {len(op.positional)} positional attribute(s) "
                            f"({', '.join(op.positional)}); got {len(fn.args)}", extra.span)
        for pname, a in zip(op.positional, fn.args):
            attrs[pname] = self._attr_value(op.name, pname, a)
        fields = list(op.Attrs.model_fields)
        for k, a in fn.kwargs.items():
            if k not in fields:
                if k in op.inputs:
                    raise self.fail("E204", f"`{k}` of {op.name} is a tensor input; got {describe(a.value)}", a.span)
                raise self.fail("E203", f"{op.name} has no attribute `{k}`", a.span,
                                hint=did_you_mean(k, fields + list(op.inputs) + (["activation"] if op.name in ACTIVATION_HOSTS else [])) or (f"its attributes: {', '.join(fields)}" if fields else f"{op.name} takes no attributes"))
            if k in attrs:
                raise self.fail("E206", f"`{k}` of {op.name} is given twice", a.span)
            attrs[k] = self._attr_value(op.name, k, a)
        try:
            av = op.attrs_from_dict(attrs)
            op.validate_attrs(av)
        except AttrError as exc:
            missing = re.match(rf"{op.name} requires `(\w+)`", exc.message)
            hint = f"{op.name}({', '.join(op.positional) or '...'}) — e.g. {_example(op)}" if missing else exc.hint
            at = fn.span if missing else _attr_span(exc, fn, op.positional)
            raise self.fail("E210" if not missing else "E202", exc.message, at, hint=hint) from None
        # inputs
        inputs: list[Tensor | None] = [*piped, *[a.value for a in fn.tensor_args]]
        for k, a in fn.tensor_kwargs.items():
            idx = op.inputs.index(k)
            if idx < len(inputs) and inputs[idx] is not None:
                raise self.fail("E207", f"input `{k}` of {op.name} is given twice", a.span)
            while len(inputs) <= idx:
                inputs.append(None)
            inputs[idx] = a.value
        for i, t in enumerate(inputs):
            if t is None and op.inputs[i] in op.input_defaults:
                inputs[i] = inputs[op.inputs.index(op.input_defaults[op.inputs[i]])]
        if any(t is None for t in inputs):
            missing = [op.inputs[i] for i, t in enumerate(inputs) if t is None]
            raise self.fail("E207", f"{op.name}: input(s) {', '.join(missing)} missing before later inputs", fn.span)
        need = op.required_inputs()
        if len(inputs) < need:
            raise self.fail("E207", f"{op.name} takes {'at least ' if op.variadic or op.min_inputs is not None else ''}{need} "
                            f"tensor input(s); got {len(inputs)}", span,
                            hint="pass more with `->` or as arguments: concat(a, b, axis=1)" if op.variadic else None)
        if not op.variadic and len(inputs) > len(op.inputs):
            raise self.fail("E207", f"{op.name} takes {len(op.inputs)} tensor input(s) ({', '.join(op.inputs)}); got {len(inputs)}", span)
        types = [t.type for t in inputs if t is not None]
        try:
            op.check_inputs(av, types)
            outs = op.infer(av, types)
        except ShapeError as exc:
            shapes = ", ".join(str(t) for t in types)
            raise self.fail(exc.code, exc.message, span, hint=exc.hint or f"input(s): {shapes}") from None
        except AttrError as exc:
            raise self.fail("E210", exc.message, _attr_span(exc, fn, op.positional), hint=exc.hint) from None
        b = self.builder
        assert b is not None
        if path in b.paths:
            raise self.fail("E104", f"layer path `{path}` is used twice", span)
        parts = path.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
        if path in b.groups:
            inner = next(p for p in sorted(b.paths) if p.startswith(path + "."))
            raise self.fail("E104", f"layer path `{path}` names a layer and also the group holding `{inner}`", span,
                            hint="a layer's parameters are `path.weight`, ...: name the layer or the group differently")
        clash = next((p for p in prefixes if p in b.paths), None)
        if clash is not None:
            raise self.fail("E104", f"layer path `{path}` lies inside `{clash}`, which is a layer", span,
                            hint="a layer holds no other layers: name this one outside it, e.g. "
                                 f"`{clash}_{parts[-1]}`")
        if len(b.nodes) >= MAX_LAYERS:
            raise self.fail("E320", f"a model holds at most {MAX_LAYERS:,} layers", span,
                            hint="repeat fewer times, or split the network into several models")
        b.paths.add(path)
        b.groups.update(prefixes)
        out_names = [path if i == 0 else f"{path}#{i}" for i in range(len(outs))]
        nbytes = 0
        for n, t in zip(out_names, outs):
            b.values[n] = t
            nbytes += _bytes_at_one(t)
        b.activation_bytes += nbytes
        if op.has_params:
            pbytes = 4 * sum(_numel_at_one(shape) for shape in (*op.params(av, types).values(), *op.buffers(av, types).values()))
            b.param_bytes += pbytes
            nbytes = max(nbytes, pbytes)
        b.account(nbytes, f"layer `{path}` ({op.name})", span)
        b.nodes.append(
            Node(name=path, op=op.name, attrs=av.model_dump(), inputs=tuple(t.value for t in inputs if t is not None),
                 outputs=tuple(out_names), span=span)
        )
        tensors = [Tensor(n, t) for n, t in zip(out_names, outs)]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def _activation_layer(self, host: str, a: Arg) -> LayerFn | None:
        """The layer `activation=` names: a layer (`relu`, `leaky_relu(0.2)`) or its name as a
        string (`"relu"`, Keras's spelling); `none` or `"linear"` for none."""
        v = a.value
        if v is None or v == "linear":
            return None
        if isinstance(v, EnumName):
            v = v.name
        if isinstance(v, str):
            op = REGISTRY.get(v)
            if op is None or op.category != "activation":
                acts = sorted(n for n, o in REGISTRY.items() if o.category == "activation")
                raise self.fail("E210", f"`activation` of {host} names an activation; `{v}` is none", a.span,
                                hint=did_you_mean(v, acts) or f"one of: {', '.join(acts)}")
            return LayerFn(op, [], {}, a.span)
        if isinstance(v, LayerFn) and v.op.category == "activation" and not v.tensor_args and v.name is None:
            return v
        raise self.fail("E210", f"`activation` of {host} is an activation layer (relu, leaky_relu(0.2), \"gelu\", "
                        f"none); got {describe(v)}", a.span)

    def _attr_value(self, op: str, name: str, a: Arg) -> Any:
        v = a.value
        if isinstance(v, EnumName):
            return v.name
        if isinstance(v, LayerFn) and not (v.args or v.kwargs or v.tensor_args or v.name):
            return v.op.name  # `activation=gelu`: a bare layer name used as a word
        if isinstance(v, Sym):
            raise self.fail("E211", f"`{name}` of {op} needs a known integer; got the symbolic `{v}`", a.span,
                            hint="bind the symbol with --set, or compute the value from a fixed dimension")
        if isinstance(v, Tensor):
            raise self.fail("E204", f"`{name}` of {op} is an attribute, not a tensor", a.span)
        if isinstance(v, list):
            return tuple(self._attr_value(op, name, Arg(x, a.span)) for x in v)
        if isinstance(v, tuple):
            return tuple(self._attr_value(op, name, Arg(x, a.span)) for x in v)
        if isinstance(v, FUNCTIONS) or isinstance(v, (ConfigCall, ModelRef, ThenChain)):
            raise self.fail("E204", f"`{name}` of {op} cannot be {describe(v)}", a.span)
        return v

    def _apply_block(self, fn: BlockFn, piped: list[Tensor], scope: Scope, span: Span) -> Any:
        d = fn.block
        base = snake(d.name)
        path = self._claim_name(scope, fn, base, span)
        if path in self.replacements and path not in self.replaced:  # not inside its own replacement
            new, rspan = self.replacements[path]
            self.replaced.add(path)
            local = path[len(scope.prefix):]
            return self.apply(new.named(local), [*piped, *[a.value for a in fn.tensor_args]], _Unnamed(scope, local), rspan)
        if any(name == d.name for name, _ in self.stack):
            raise self.fail("E120", f"`{d.name}` uses itself", span)
        if len(self.stack) >= MAX_BLOCK_DEPTH:
            raise self.fail("E121", f"blocks nest more than {MAX_BLOCK_DEPTH} deep (`{d.name}` is used inside "
                            f"{len(self.stack)} blocks)", span, hint="flatten the blocks: use several in a row instead of one inside another")
        self.stack.append((d.name, span))
        try:
            params = self.bind_params(d, fn.args, fn.kwargs, fn.span)
            if self.builder is not None:
                plain = {k: v for k, v in params.items() if type(v) in (bool, int, float, str)}
                self.builder.blocks[path] = BlockUse(block=d.name, args=plain)
            inner = Scope(dict(params), path + ".", "block")
            return self._block_body(d, inner, [*piped, *[a.value for a in fn.tensor_args]], span)
        finally:
            self.stack.pop()

    def _block_body(self, d: ast.BlockDef | ast.ModelDef, scope: Scope, inputs: list[Tensor], span: Span) -> Any:
        decls = [decl for s in d.body if isinstance(s, ast.InputStmt) for decl in s.decls]
        failed = False
        if decls:
            if len(inputs) != len(decls):
                names = ", ".join(x.name for x in decls)
                raise self.fail("E207", f"`{d.name}` takes {len(decls)} input(s) ({names}); got {len(inputs)}", span)
            for decl, t in zip(decls, inputs):
                if decl.type is not None:
                    self._check_input_type(d, decl, t, scope, span)
                scope.vars[decl.name] = t
            result: Any = POISON
            for stmt in d.body:
                if isinstance(stmt, ast.InputStmt):
                    continue
                try:
                    if isinstance(stmt, ast.OutputStmt):
                        vals = []
                        for item in stmt.items:
                            v = self.ev(item.value, scope)
                            if not isinstance(v, Tensor):
                                if isinstance(v, EnumName):
                                    raise self._unknown_name(v, scope)
                                raise self.fail("E113", f"a block's output must be a tensor; got {describe(v)}", item.value.span)
                            vals.append(v)
                        result = vals[0] if len(vals) == 1 else tuple(vals)
                    else:
                        self.statement(stmt, scope)
                except Fail:
                    failed = True
            if failed:
                raise Fail()
            if result is POISON:
                raise self.fail("E111", f"block `{d.name}` has inputs but no `output`", d.span)
            return result
        # a sequential block: each expression statement is a layer applied to the running value
        cur: Any = inputs if len(inputs) != 1 else inputs[0]
        if not inputs:
            raise self.fail("E207", f"`{d.name}` needs an input tensor", span)

        def layer(stmt: ast.Node) -> None:
            nonlocal cur
            if isinstance(stmt, ast.ExprStmt):
                fn = self.ev_fn(stmt.value, scope)
                cur = self.apply(fn, list(cur) if isinstance(cur, (list, tuple)) else [cur], scope, stmt.value.span)
            elif isinstance(stmt, ast.Assign):
                self.statement(stmt, scope)
            elif isinstance(stmt, ast.ForStmt):
                self.loop(stmt, scope, layer)
            else:
                raise self.fail("E115", "a block without `input` is a list of layers; use `input x` ... `output y` for a graph",
                                stmt.span)

        for stmt in d.body:
            layer(stmt)
        return cur

    def _check_input_type(self, d, decl: ast.InputDecl, t: Tensor, scope: Scope, span: Span) -> None:
        want = self.tensor_type(decl.type, Scope(scope.vars, scope.prefix, "block"))
        got = t.type
        bad = want.dtype != got.dtype or want.rank != got.rank or any(
            isinstance(w, int) and isinstance(g, int) and w != g for w, g in zip(want.shape, got.shape)
        )
        if bad:
            raise self.fail("E313", f"`{d.name}` expects `{decl.name}` as {want}; got {got}", span)

    # ---- operators -----------------------------------------------------------------------------
    def _emit_binary(self, op: str, a: Tensor, b: Tensor, scope: Scope, span: Span) -> Tensor:
        return self._apply_layer(LayerFn(REGISTRY[op], [], {}, span), [a, b], scope, span)

    def _emit_scalar(self, op: str, a: Tensor, scalar: float, scope: Scope, span: Span) -> Tensor:
        fn = LayerFn(REGISTRY[op], [], {"scalar": Arg(float(scalar), span)}, span)
        return self._apply_layer(fn, [a], scope, span)

    def _binop(self, node: ast.BinOp, a: Any, b: Any, scope: Scope) -> Any:
        op = node.op
        if a is POISON or b is POISON:
            raise Fail()
        for v in (a, b):
            if isinstance(v, EnumName):
                raise self._unknown_name(v, scope)
        ops = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
        if isinstance(a, Tensor) and isinstance(b, Tensor) and op in ops:
            return self._emit_binary(ops[op], a, b, scope, node.span)
        if isinstance(a, Tensor) and _is_number(b) and op in ops:
            return self._emit_scalar(ops[op], a, b, scope, node.span)
        if _is_number(a) and isinstance(b, Tensor) and op in ("+", "*"):
            return self._emit_scalar(ops[op], b, a, scope, node.span)
        if _is_number(a) and isinstance(b, Tensor):
            raise self.fail("E205", f"`{op}` with a number on the left of a tensor is not supported", node.span,
                            hint="write the tensor first, e.g. `x * -1 + 1` instead of `1 - x`")
        if op == "*" and (isinstance(a, FUNCTIONS) and _is_int(b) or isinstance(b, FUNCTIONS) and _is_int(a)):
            fn, times, tspan = (a, b, node.right.span) if isinstance(a, FUNCTIONS) else (b, a, node.left.span)
            if times < 0:
                raise self.fail("E210", f"a layer is repeated zero or more times; got {times}", tspan,
                                hint="`layer * 0` is no layer at all, `layer * 1` the layer once")
            if times > MAX_REPEAT:
                raise self.fail("E215", f"a layer is repeated at most {MAX_REPEAT:,} times; got {times:,}", tspan)
            return Repeat(fn, times, node.span)
        if _is_dim(a) and _is_dim(b) or (_is_number(a) and _is_number(b)):
            problem = _arith_problem(op, a, b)
            if problem:
                raise self.fail("E214", problem, node.span, hint="compile-time integers are int64")
            try:
                result = _arith(op, a, b)
            except ZeroDivisionError:
                raise self.fail("E212", "division by zero", node.span) from None
            except OverflowError:
                raise self.fail("E212", "the result is too large", node.span) from None
            except TypeError as exc:
                raise self.fail("E205", str(exc), node.span) from None
            return self._checked(result, node.span)
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            if len(a) + len(b) > MAX_STRING:
                raise self.fail("E215", f"a string holds at most {MAX_STRING:,} characters; this one would hold "
                                f"{len(a) + len(b):,}", node.span)
            return a + b
        if op == "+" and isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            if len(a) + len(b) > MAX_LIST:
                raise self.fail("E215", f"a list holds at most {MAX_LIST:,} items; this one would hold "
                                f"{len(a) + len(b):,}", node.span)
            return type(a)(list(a) + list(b))
        if op == "*" and isinstance(a, (list, tuple)) and _is_int(b):
            if len(a) * max(b, 0) > MAX_LIST:
                raise self.fail("E215", f"a list holds at most {MAX_LIST:,} items; this one would hold "
                                f"{len(a) * b:,}", node.span)
            return a * b
        raise self.fail("E205", f"cannot apply `{op}` to {describe(a)} and {describe(b)}", node.span)

    def _compare(self, node: ast.Compare, a: Any, b: Any) -> bool:
        if a is POISON or b is POISON:
            raise Fail()
        if isinstance(a, EnumName):
            a = a.name
        if isinstance(b, EnumName):
            b = b.name
        if node.op in ("==", "!="):
            eq = a == b
            return eq if node.op == "==" else not eq
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise self.fail("E211", f"cannot order the symbolic dimension `{a if isinstance(a, Sym) else b}`", node.span,
                            hint="bind the symbol with --set, or compare a fixed dimension")
        try:
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[node.op]
        except TypeError:
            raise self.fail("E205", f"cannot compare {describe(a)} and {describe(b)}", node.span) from None

    def _attr(self, node: ast.Attr, v: Any) -> Any:
        if v is POISON:
            raise Fail()
        name = node.name
        if isinstance(v, Tensor):
            t = v.type
            if name == "shape":
                return tuple(t.shape)
            if name == "rank":
                return t.rank
            if name == "dtype":
                return t.dtype
            spatial = {"channels": 1, "batch": 0, "features": -1, "length": -1, "height": -2, "width": -1}
            if name in spatial:
                if t.rank < 1:
                    raise self.fail("E305", f"`.{name}` needs a tensor of rank ≥ 1; got the scalar {t}", node.span)
                if t.rank < 2 and name != "batch":
                    raise self.fail("E305", f"`.{name}` needs a tensor of rank ≥ 2; got {t}", node.span)
                if name in ("height", "width") and t.rank < 3:
                    raise self.fail("E305", f"`.{name}` needs a tensor of rank ≥ 3; got {t}", node.span)
                return t.shape[spatial[name]]
            raise self.fail("E116", f"a tensor has no attribute `{name}`", node.span,
                            hint=did_you_mean(name, TENSOR_ATTRS) or f"one of {', '.join(TENSOR_ATTRS)}")
        raise self.fail("E116", f"{describe(v)} has no attribute `{name}`", node.span)

    def _index(self, node: ast.Index, v: Any, i: Any) -> Any:
        if v is POISON or i is POISON:
            raise Fail()
        if isinstance(v, (list, tuple)) and isinstance(i, int) and not isinstance(i, bool):
            if not -len(v) <= i < len(v):
                raise self.fail("E213", f"index {i} is out of range for {describe(v)}", node.index.span)
            return v[i]
        if isinstance(v, dict) and isinstance(i, str):
            if i not in v:
                raise self.fail("E213", f"no key {i!r}", node.index.span, hint=did_you_mean(i, v))
            return v[i]
        raise self.fail("E205", f"cannot index {describe(v)} with {describe(i)}", node.span)

    # ---- recipes -------------------------------------------------------------------------------
    def recipe_entries(self, tdef: ast.TrainDef) -> tuple[dict[str, Arg], list[ConfigCall]]:
        with _evaluation_room():
            return self._recipe_entries(tdef)

    def _recipe_entries(self, tdef: ast.TrainDef) -> tuple[dict[str, Arg], list[ConfigCall]]:
        scope = Scope({}, "", "recipe")
        entries: dict[str, Arg] = {}
        directives: list[ConfigCall] = []
        for stmt in tdef.body:
            try:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    key = stmt.targets[0]
                    if key in entries:
                        raise self.fail("E401", f"`{key}` is set twice in this recipe", stmt.span)
                    v = self.ev(stmt.value, scope)
                    entries[key] = Arg(v, stmt.value.span)
                elif isinstance(stmt, ast.ExprStmt):
                    v = self.ev(stmt.value, scope)
                    if isinstance(v, ConfigCall):
                        directives.append(v)
                    elif isinstance(v, EnumName):
                        directives.append(ConfigCall(v.name, [], {}, v.span))
                    else:
                        raise self.fail("E401", f"a recipe holds `key = value` lines and directives like `early_stop(...)`; got {describe(v)}", stmt.span)
                else:
                    raise self.fail("E401", "a recipe holds `key = value` lines and directives like `early_stop(...)`", stmt.span)
            except Fail:
                pass
        return entries, directives


class _Unnamed(Scope):
    """A scope view that hands out one fixed name: used when a replacement takes a layer's place."""

    def __init__(self, scope: Scope, local: str):
        super().__init__(scope.vars, scope.prefix, scope.owner)
        self._scope = scope
        self._local = local

    def auto_name(self, base: str) -> str:
        return self._local


def _suggest_name(parts: list[str]) -> str:
    """A valid layer path close to an invalid one (`fc.-1` -> `fc.n1`, `a b` -> `a_b_layer`)."""
    out = []
    for p in parts:
        q = re.sub(r"[^A-Za-z0-9_]", "_", p.replace("-", "n")).strip("_") or "layer"
        if layer_name_problem(q):
            q = f"{q}_layer" if not layer_name_problem(f"{q}_layer") else "layer"
        out.append(q)
    return ".".join(out)


def _loop_text(targets: Any) -> str:
    if isinstance(targets, str):
        return targets
    return "(" + ", ".join(_loop_text(t) for t in targets) + ")"


def _is_fn_syntax(node: ast.Node) -> bool:
    return isinstance(node, (ast.Call, ast.NamedLayer))


def _all_tensors(v: Any) -> bool:
    if isinstance(v, Tensor):
        return True
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, Tensor) for x in v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _at_one(d: Any) -> int:
    """A dimension with every symbol taken as 1 (the size of one example), at least 1."""
    if isinstance(d, Sym):
        try:
            v = d.subs({name: 1 for name in d.symbols()})
        except (ZeroDivisionError, TypeError):
            return 1
        return v if isinstance(v, int) and v > 1 else 1
    return d if isinstance(d, int) and d > 0 else 1


def _numel_at_one(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= _at_one(d)
    return n


def _bytes_at_one(t: TensorType) -> int:
    return _numel_at_one(t.shape) * DTYPE_BYTES.get(t.dtype, 4)


def _sym_problem(v: Sym) -> str | None:
    if len(v.terms) > MAX_SYM_TERMS:
        return f"the symbolic dimension has {len(v.terms)} terms; at most {MAX_SYM_TERMS} are allowed"
    degree = max((len(m) for m, _ in v.terms), default=0)
    if degree > MAX_SYM_DEGREE:
        return f"the symbolic dimension has degree {degree}; at most {MAX_SYM_DEGREE} is allowed"
    if any(abs(c) > MAX_INT for _, c in v.terms):
        return f"a coefficient of the symbolic dimension is larger than {MAX_INT} (int64)"
    return None


def _number_problem(v: Any) -> str | None:
    """Why a compile-time number is beyond the limits (docs/security.md), or None."""
    if _is_int(v) and abs(v) > MAX_INT:
        return f"the result ({_digits(v)}) is larger than {MAX_INT} (int64)"
    if isinstance(v, Sym):
        return _sym_problem(v)
    return None


def _digits(v: int) -> str:
    bits = v.bit_length()
    return f"about 2**{bits - 1}" if bits > 80 else str(v)


def _arith_problem(op: str, a: Any, b: Any) -> str | None:
    """A result that would exceed the limits, told before it is computed (so that `2**64**64`
    costs nothing), or None."""
    if op == "**" and _is_int(a) and _is_int(b) and b > 0 and abs(a) > 1:
        if (abs(a).bit_length() - 1) * b > 63:
            return f"{a} ** {b} is larger than {MAX_INT} (int64)"
    if op == "*" and isinstance(a, Sym) and isinstance(b, Sym) and len(a.terms) * len(b.terms) > MAX_SYM_TERMS ** 2:
        return f"the product of two symbolic dimensions would have up to {len(a.terms) * len(b.terms)} terms"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_dim(v: Any) -> bool:
    return isinstance(v, Sym) or (isinstance(v, int) and not isinstance(v, bool))


def _arith(op: str, a: Any, b: Any) -> Any:
    sym = isinstance(a, Sym) or isinstance(b, Sym)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "//":
        if isinstance(b, Sym):
            raise TypeError("cannot divide by a symbolic dimension")
        if b == 0:
            raise ZeroDivisionError
        return a // b
    if op == "/":
        if sym:
            raise TypeError("`/` on a symbolic dimension; use `//`")
        return a / b
    if op == "%":
        if sym:
            raise TypeError("`%` on a symbolic dimension")
        return a % b
    if op == "**":
        if sym:
            raise TypeError("`**` on a symbolic dimension")
        if isinstance(b, int) and abs(b) > 64:
            raise TypeError("exponent too large")
        return a**b
    raise TypeError(f"unknown operator {op}")


def _attr_span(exc: AttrError, fn: Any, positional: Sequence[str]) -> Span:
    """Where an attribute error points: at the attribute it is about (`key=value`, or the
    positional value), named by the error or, for a check across attributes, the first given
    attribute its message names (in backticks first); else at the call."""
    given = {name: a.span for name, a in zip(positional, fn.args)}
    given.update({k: a.span for k, a in fn.kwargs.items()})
    keys = [exc.key] if exc.key else [*re.findall(r"`(\w+)`", exc.message), *re.findall(r"\w+", exc.message)]
    return next((given[k] for k in keys if k in given), fn.span)


def _example(op) -> str:
    samples = {"dense": "dense(128)", "conv2d": "conv2d(64, 3)", "conv1d": "conv1d(64, 3)", "lstm": "lstm(128)",
               "gru": "gru(128)", "embedding": "embedding(10000, 128)", "maxpool2d": "maxpool2d(2)"}
    return samples.get(op.name, f"{op.name}(...)")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, EnumName):
        return v.name
    return describe(v)


def _checked_int(name: str, v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float, Sym)):
        raise TypeError(f"needs numbers; got {describe(v)}")
    return v


#: the search values of docs/search.md (`choice(32, 64)`, `range(1e-4, 1e-1, log)`, ...): handled
#: by dlspec/search_space.py, which imports no optimizer library
SEARCH_FUNCTIONS = ("choice", "range", "log_range", "int_range")

BUILTIN_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": lambda *a: min(_checked_int("min", x) for x in a),
    "max": lambda *a: max(_checked_int("max", x) for x in a),
    "abs": lambda x: abs(_checked_int("abs", x)),
    "int": lambda x: int(_checked_int("int", x)),
    "float": lambda x: float(_checked_int("float", x)),
    "round": lambda x: round(_checked_int("round", x)),
    "ceil": lambda x: math.ceil(_checked_int("ceil", x)),
    "floor": lambda x: math.floor(_checked_int("floor", x)),
    "len": lambda x: len(x),
    "enumerate": lambda x, start=0: [(start + i, v) for i, v in enumerate(_sequence("enumerate", x))],
    "zip": lambda *xs: [tuple(t) for t in zip(*(_sequence("zip", x) for x in xs), strict=True)],
}


#: the keyword arguments a built-in function takes (none where not listed)
BUILTIN_KEYWORDS: dict[str, tuple[str, ...]] = {"enumerate": ("start",)}


def _sequence(name: str, v: Any) -> list | tuple:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"needs a list or tuple; got {describe(v)}")
    return v
