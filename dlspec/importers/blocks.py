"""Repeated structure in imported layers → `block` definitions and their instances.

`find_blocks(imported)` cuts the layer list where exactly one value is live (the net narrows to
one tensor: between two residual blocks, after an inception module's concat). A piece between
two cuts that branches inside (a residual merge, parallel branches) and occurs at least twice
with the same ops and wiring becomes one block; pieces that differ only by one extra chain from
the entry into a merge (ResNet's projection shortcut) share the block, the chain written under a
`with_<name>: bool` parameter. Parameter-free layers that follow every occurrence alike (the
ReLU after the sum) join it, and where layers carry PyTorch module scopes a piece takes the
pieces after it in the same module (a transformer layer's two residual halves). Attributes that
differ between occurrences become block parameters (equal ones shared, `channels * 4` where one
is a multiple of another).

Names: each occurrence's instance name and its layers' inner names come from the source names.
The first layer with parameters fixes the split: its names across occurrences share a suffix
that starts at a `.` or `_` (`.conv1`, `_branch2a`), the rest is the instance (`layer1.0`,
`res2a`); another layer's inner name is its name after the instance (`downsample.0`) or, failing
that, with the instance's varying part taken out (`bn2a_branch2a` → `bn_branch2a`). ONNX layers
exported by PyTorch are named by their module path (`layer1.0.conv1`, read from the node's
scope), so a block instance's parameter paths are the PyTorch state-dict keys. Where no such
split exists the instances are `<block>.0`, `<block>.1`, … with their layers named after their
ops. The spec writer keeps the blocks only when the spec gets shorter and lowers to the flat
spec's graph; otherwise it writes the flat spec.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.ops import get_op
from .onnx import KEYWORDS, Imported, Layer, Names, _auto_name_clash

#: the short parameter name of an attribute (when one parameter alone comes from it)
SHORT = {"out_channels": "channels", "units": "units"}
#: attributes that count channels or features: one parameter (or a multiple of it) may give several
WIDTHS = {"out_channels", "groups", "units", "num_groups", "num_features"}
#: instance-name stems that say nothing of what a block is
GENERIC_STEMS = {"layer", "layers", "block", "blocks", "stage", "stages", "features", "model", "module", "net",
                 "unit", "cell"}
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
_PART_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


@dataclass
class Param:
    name: str
    values: list[Any | None]  # per occurrence; None where the occurrence does not use it
    key: str = ""             # the attribute it first stood for
    first: int = 0            # the template position of that attribute
    default: Any | None = None
    has_default: bool = False

    @property
    def type(self) -> str:
        vals = [v for v in self.values if v is not None]
        if all(isinstance(v, bool) for v in vals):
            return "bool"
        if all(_is_int(v) for v in vals):
            return "int"
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            return "float"
        if all(isinstance(v, str) for v in vals):
            return "str"
        if all(isinstance(v, (list, tuple)) for v in vals):
            return "list"
        return "any"


@dataclass
class Occurrence:
    start: int          # index of its first layer in imported.layers
    stop: int           # one past its last layer
    entry: str
    exit: str
    layers: list[int]   # template position → layer index (None where the optional chain is absent)
    has_chain: bool
    name: str | None = None


@dataclass
class Block:
    name: str
    template: list[int]          # layer indices of the occurrence the body is written from
    chain: list[int]             # template positions of the optional chain (empty: none)
    occurrences: list[Occurrence]
    params: list[Param] = field(default_factory=list)
    #: template position → {attribute: parameter expression}
    exprs: dict[int, dict[str, str]] = field(default_factory=dict)
    inner: dict[int, str] = field(default_factory=dict)   # template position → inner layer name
    flag: str | None = None      # the bool parameter that keeps the optional chain

    def args(self, o: int) -> str:
        """The call arguments of occurrence `o`."""
        occ = self.occurrences[o]
        out = [_literal(p.values[o]) for p in self.params if not p.has_default]
        out += [f"{p.name}={_literal(p.values[o])}" for p in self.params
                if p.has_default and p.values[o] is not None and _literal(p.values[o]) != _literal(p.default)]
        if self.flag is not None and occ.has_chain:
            out.append(f"{self.flag}=true")
        return ", ".join(out)


@dataclass
class Plan:
    blocks: list[Block]
    #: layer index → its full path in the spec (instance path + inner name)
    renames: dict[int, str]
    #: layer index of an occurrence's first layer → (block, occurrence number)
    starts: dict[int, tuple[Block, int]]


def _literal(v: Any) -> str:
    """A value as the spec language writes it (the spec writer's too)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if np.isinf(f):
            return "inf" if f > 0 else "-inf"
        if not np.isfinite(f):
            raise ValueError(f"non-finite attribute value {f}")
        return repr(f)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} in a spec")


def name_text(name: str) -> str:
    """`name` as written after `as`: bare where the grammar reads it, else a quoted name."""
    return name if _PATH.fullmatch(name) else f'"{name}"'


# ---- cutting the layer list ---------------------------------------------------------------------

def _segments(imp: Imported) -> list[tuple[int, int, str, str]]:
    """(start, stop, entry, exit) of the runs of layers between two points where one value is live."""
    layers = imp.layers
    n = len(layers)
    last_use: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for v in layer.inputs:
            last_use[v] = i
    for _, v in imp.outputs:
        last_use[v] = n
    live: set[str] = {mi.value for mi in imp.inputs if mi.value in last_use}
    cuts: list[tuple[int, str]] = []
    for i in range(n + 1):
        if i > 0:
            live.update(v for v in layers[i - 1].outputs if last_use.get(v, -1) >= i)
            live = {v for v in live if last_use.get(v, -1) >= i}
        if len(live) == 1:
            cuts.append((i, next(iter(live))))
    return [(a, b, va, vb) for (a, va), (b, vb) in zip(cuts, cuts[1:]) if va != vb]


def _pieces(imp: Imported) -> list[tuple[int, int, str, str]]:
    """The segments that branch inside (at least 3 layers). Where the layers carry PyTorch module
    scopes, a piece takes the segments after it that lie in its scope, branching or not (a
    transformer layer's attention and feed-forward halves and their norms are one piece)."""
    segments = _segments(imp)
    scopes = [_common_scope(imp.layers[a:b]) for a, b, _, _ in segments]
    pieces: list[tuple[int, int, str, str]] = []
    k = 0
    while k < len(segments):
        a, b, entry, exit_ = segments[k]
        if b - a < 3 or not _branches(imp, a, b):
            k += 1
            continue
        scope = scopes[k]
        k += 1
        while scope and k < len(segments) and _within(scopes[k], scope):
            b, exit_ = segments[k][1], segments[k][3]
            k += 1
        pieces.append((a, b, entry, exit_))
    return pieces


def _scope(layer: Layer) -> tuple[str, ...] | None:
    """The PyTorch module a layer was exported from, as path parts (`/layer1/layer1.0/Add` → layer1, 0)."""
    if not layer.origin.startswith("/"):
        return None
    parts = [p for p in layer.origin.split("/") if p]
    if parts and re.fullmatch(r"[A-Z][A-Za-z0-9]*(_\d+)?", parts[-1]):
        parts.pop()
    path: list[str] = []
    for p in parts:
        if path and p.startswith(path[-1] + "."):
            path[-1] = p
        else:
            path.append(p)
    return tuple(".".join(path).split(".")) if path else ()


def _common_scope(layers: list[Layer]) -> tuple[str, ...] | None:
    scopes = [_scope(layer) for layer in layers]
    if not scopes or any(s is None for s in scopes):
        return None
    common = list(scopes[0])
    for s in scopes[1:]:
        k = 0
        while k < len(common) and k < len(s) and common[k] == s[k]:
            k += 1
        del common[k:]
    return tuple(common)


def _within(scope: tuple[str, ...] | None, outer: tuple[str, ...]) -> bool:
    return scope is not None and scope[: len(outer)] == outer


def _branches(imp: Imported, start: int, stop: int) -> bool:
    uses = Counter(v for layer in imp.layers[start:stop] for v in layer.inputs)
    return any(c > 1 for c in uses.values()) or any(len(layer.inputs) > 1 for layer in imp.layers[start:stop])


def _signature(imp: Imported, idx: list[int], entry: str, exit_: str, subst: dict[str, str]) -> tuple | None:
    local: dict[str, tuple[int, int]] = {}
    sig = []
    for k, i in enumerate(idx):
        layer = imp.layers[i]
        ins = []
        for v in layer.inputs:
            v = subst.get(v, v)
            if v == entry:
                ins.append(("x",))
            elif v in local:
                ins.append(local[v])
            else:
                return None
        sig.append((layer.op, tuple(ins), len(layer.outputs), layer.name is not None))
        for j, v in enumerate(layer.outputs):
            local[v] = (k, j)
    if exit_ not in local:
        return None
    return tuple(sig), local[exit_]


def _chains(imp: Imported, start: int, stop: int, entry: str) -> list[list[int]]:
    """Linear chains from the entry into one input of a merge (layers in list order)."""
    producer = {v: i for i in range(start, stop) for v in imp.layers[i].outputs}
    uses = Counter(v for layer in imp.layers for v in layer.inputs)
    outputs = {v for _, v in imp.outputs}
    found = []
    for i in range(start, stop):
        merge = imp.layers[i]
        if len(merge.inputs) < 2:
            continue
        for v in merge.inputs:
            chain: list[int] = []
            while v in producer:
                c = imp.layers[producer[v]]
                if len(c.inputs) != 1 or len(c.outputs) != 1 or uses[v] != 1 or v in outputs:
                    break
                chain.append(producer[v])
                v = c.inputs[0]
            if chain and v == entry:
                found.append(sorted(chain))
    return found


# ---- naming -------------------------------------------------------------------------------------

def source_path(layer: Layer) -> str | None:
    """A layer's name as its source wrote it: the PyTorch module path for a node exported by
    PyTorch (`/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1`) when it agrees with the layer's
    name, else the layer's name."""
    if layer.name is None:
        return None
    scope = _scope(layer)
    if scope:
        dotted = ".".join(scope)
        if re.sub(r"\W+", "_", dotted) == layer.name:
            return dotted
    return layer.name


def _common_suffix(names: list[str], keep: int) -> str:
    """The longest suffix of every name that leaves `keep` characters before it and starts at a separator."""
    shortest = min(len(n) for n in names) - keep
    k = 0
    while k < shortest and len({n[len(n) - k - 1] for n in names}) == 1:
        k += 1
    suffix = names[0][len(names[0]) - k:] if k else ""
    m = re.search(r"[._]", suffix)
    return suffix[m.start():] if m else ""


def _varying_part(instance: str, prefix_len: int) -> str:
    """The part of an instance name that tells occurrences apart: `2a` of `res2a`, `1.0` of `layer1.0`."""
    j = min(prefix_len, len(instance))
    while j > 0 and (instance[j - 1].isdigit() or (instance[j - 1] in "._" and j > 1 and instance[j - 2].isdigit())):
        j -= 1
    return instance[j:]


def _tidy(name: str) -> str:
    return re.sub(r"([._])[._]+", r"\1", name).strip("._")


def _source_names(block: Block, imp: Imported) -> tuple[list[str], dict[int, str]] | None:
    """Instance names and inner names from the source names, or None when they do not split."""
    occs = block.occurrences
    src = [[source_path(imp.layers[i]) if i is not None else None for i in occ.layers] for occ in occs]
    named = [p for p, i in enumerate(block.template) if imp.layers[i].name is not None]
    anchors = [p for p in named if p not in block.chain]
    if not anchors:
        return None
    names0 = [s[anchors[0]] for s in src]
    prefix = os.path.commonprefix(names0)
    suffix = _common_suffix(names0, len(prefix))
    if not suffix:
        return None
    instances = [n[: len(n) - len(suffix)] for n in names0]
    if len(set(instances)) != len(instances) or not all(_PART_PATH.fullmatch(n) for n in instances):
        return None
    keys = [_varying_part(inst, len(prefix)) for inst in instances]
    inner: dict[int, str] = {}
    for p in named:
        found = set()
        for o, s in enumerate(src):
            n = s[p]
            if n is None:
                continue
            inst = instances[o]
            flat_inst = re.sub(r"\W+", "_", inst)  # a name the importer flattened (`enc_layers_0_out_proj`)
            if n.startswith(inst) and n[len(inst): len(inst) + 1] in (".", "_") and len(n) > len(inst) + 1:
                found.add(n[len(inst) + 1:])
            elif n.startswith(flat_inst + "_") and len(n) > len(flat_inst) + 1:
                found.add(n[len(flat_inst) + 1:])
            elif keys[o] and keys[o] in n:
                found.add(_tidy(n.replace(keys[o], "", 1)))
            else:
                return None
        if len(found) != 1:
            return None
        inner[p] = found.pop()
    if len(set(inner.values())) != len(inner) or not all(_valid_inner(n) for n in inner.values()):
        return None
    return instances, inner


def _valid_inner(name: str) -> bool:
    return bool(_PART_PATH.fullmatch(name)) and name not in KEYWORDS and not _auto_name_clash(name.split(".")[0])


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _name_layers(block: Block, imp: Imported) -> None:
    split = _source_names(block, imp)
    if split is None:
        stem = _snake(block.name)
        instances = [f"{stem}.{k}" for k in range(len(block.occurrences))]
        names = Names(layers=True)
        inner = {p: names.take(imp.layers[i].op, imp.layers[i].op) for p, i in enumerate(block.template)
                 if imp.layers[i].name is not None}
    else:
        instances, inner = split
    for occ, inst in zip(block.occurrences, instances):
        occ.name = inst if inner else None  # nothing to name inside: the language's own names do
    block.inner = inner


# ---- parameters ---------------------------------------------------------------------------------

def _attr_values(layer: Layer) -> dict[str, Any]:
    fields = get_op(layer.op).Attrs.model_fields
    out = {}
    for k, f in fields.items():
        if k in layer.attrs:
            out[k] = layer.attrs[k]
        elif not f.is_required():
            out[k] = f.get_default(call_default_factory=True)
    for k, v in layer.attrs.items():
        out.setdefault(k, v)
    return out


def _as_expr(key: str, vals: list[Any | None], params: list[Param]) -> tuple[Param, str] | None:
    """An existing parameter of the same attribute giving `vals`: itself, or `p * k` / `p // k`
    (as a text with `{}` for the parameter's name); it takes the values of occurrences that did
    not use it before."""
    candidates = [q for q in params if q.key == key or {q.key, key} <= WIDTHS]
    for q in candidates:
        common = [o for o, v in enumerate(vals) if v is not None and q.values[o] is not None]
        if common and all(_literal(vals[o]) == _literal(q.values[o]) for o in common):
            _extend(q, vals, lambda v: v)
            return q, "{}"
    for q in candidates:
        common = [o for o, v in enumerate(vals) if v is not None and q.values[o] is not None]
        new = [o for o, v in enumerate(vals) if v is not None and q.values[o] is None]
        if not common or not all(_is_int(v) and v > 0 for v in [*vals, *q.values] if v is not None):
            continue
        o0 = common[0]
        k = vals[o0] // q.values[o0]
        if k >= 2 and all(vals[o] == q.values[o] * k for o in common) and all(vals[o] % k == 0 for o in new):
            _extend(q, vals, lambda v, k=k: v // k)
            return q, f"{{}} * {k}"
        k = q.values[o0] // vals[o0]
        if k >= 2 and all(q.values[o] == vals[o] * k for o in common):
            _extend(q, vals, lambda v, k=k: v * k)
            return q, f"{{}} // {k}"
    return None


def _extend(q: Param, vals: list[Any | None], value: Any) -> None:
    for o, v in enumerate(vals):
        if v is not None and q.values[o] is None:
            q.values[o] = value(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parametrize(block: Block, imp: Imported) -> None:
    """Block parameters for the attributes whose values differ between occurrences."""
    n = len(block.occurrences)
    params: list[Param] = []
    uses: list[tuple[int, str, Param, str]] = []  # (position, attribute, parameter, expression with {})
    for p in range(len(block.template)):
        per = [_attr_values(imp.layers[occ.layers[p]]) if occ.layers[p] is not None else None
               for occ in block.occurrences]
        for k in get_op(imp.layers[block.template[p]].op).Attrs.model_fields:
            vals = [a.get(k) if a is not None else None for a in per]
            if len({_literal(v) for v, a in zip(vals, per) if a is not None}) < 2:
                continue
            found = _as_expr(k, vals, params)
            if found is None:
                found = Param("", list(vals), key=k, first=p), "{}"
                params.append(found[0])
            uses.append((p, k, *found))
    shorts = Counter(SHORT.get(q.key, q.key) for q in params)
    names = Names({"x"})
    for q in params:
        short = SHORT.get(q.key, q.key)
        if shorts[short] > 1:
            short = f"{block.inner.get(q.first) or imp.layers[block.template[q.first]].op}_{short}"
        q.name = names.take(re.sub(r"\W+", "_", short), "p")
        vals = [v for v in q.values if v is not None]
        text, count = Counter(_literal(v) for v in vals).most_common(1)[0]
        if count * 2 > n or len(vals) < n:
            q.has_default = True
            q.default = next(v for v in vals if _literal(v) == text)
    for p, k, q, expr in uses:
        block.exprs.setdefault(p, {})[k] = expr.format(q.name)
    block.params = [q for q in params if not q.has_default] + [q for q in params if q.has_default]
    if block.chain:
        first = next((block.inner[p] for p in block.chain if p in block.inner), "shortcut")
        block.flag = names.take("with_" + re.split(r"[._]", first)[0], "with_chain")


# ---- finding the blocks -------------------------------------------------------------------------

def find_blocks(imp: Imported) -> Plan | None:
    """The blocks of `imp`, or None where nothing repeats."""
    pieces = _pieces(imp)
    if len(pieces) < 2:
        return None
    full: dict[tuple, list[int]] = {}
    sigs = []
    for k, (a, b, entry, exit_) in enumerate(pieces):
        sig = _signature(imp, list(range(a, b)), entry, exit_, {})
        sigs.append(sig)
        if sig is not None:
            full.setdefault(sig, []).append(k)
    # a group whose pieces are another group's plus one chain from the entry joins it
    variant_of: dict[tuple, tuple[tuple, list[int]]] = {}
    for sig, members in full.items():
        a, b, entry, exit_ = pieces[members[0]]
        for chain in _chains(imp, a, b, entry):
            out = imp.layers[chain[-1]].outputs[0]
            reduced = _signature(imp, [i for i in range(a, b) if i not in chain], entry, exit_, {out: entry})
            if reduced in full and reduced != sig and all(base != reduced for base, _ in variant_of.values()):
                variant_of[sig] = (reduced, [i - a for i in chain])
                break
    blocks: list[Block] = []
    grouped = set()
    for sig, members in full.items():
        if sig in grouped or sig in variant_of:
            continue
        variants = [(vsig, rel) for vsig, (base, rel) in variant_of.items() if base == sig]
        vsig, rel = variants[0] if variants else (None, [])
        ks = sorted(members + (full[vsig] if vsig is not None else []))
        if len(ks) < 2:
            continue
        grouped.add(sig)
        if vsig is not None:
            grouped.add(vsig)
        occs = []
        for k in ks:
            a, b, entry, exit_ = pieces[k]
            if vsig is not None and k in full[vsig]:
                occs.append(Occurrence(a, b, entry, exit_, list(range(a, b)), True))
            elif vsig is not None:
                width = b - a + len(rel)
                rest = iter(range(a, b))
                occs.append(Occurrence(a, b, entry, exit_, [None if p in rel else next(rest) for p in range(width)],
                                       False))
            else:
                occs.append(Occurrence(a, b, entry, exit_, list(range(a, b)), False))
        blocks.append(Block("", [], list(rel), occs))
    if not blocks:
        return None
    starts_of_pieces = sorted(pc[0] for pc in pieces)
    for block in blocks:
        _take_trailing(imp, block, starts_of_pieces)
        block.template = list(next(o.layers for o in block.occurrences if all(i is not None for i in o.layers)))
    blocks.sort(key=lambda bl: bl.occurrences[0].start)
    taken = {imp.name}
    for block in blocks:
        block.name = _block_name(block, imp, taken)
        _name_layers(block, imp)
        _parametrize(block, imp)
    renames: dict[int, str] = {}
    starts: dict[int, tuple[Block, int]] = {}
    for block in blocks:
        for o, occ in enumerate(block.occurrences):
            starts[occ.start] = (block, o)
            for p, i in enumerate(occ.layers):
                if i is not None and p in block.inner:
                    renames[i] = f"{occ.name}.{block.inner[p]}"
    return Plan(blocks, renames, starts)


def _take_trailing(imp: Imported, block: Block, piece_starts: list[int]) -> None:
    """Extend every occurrence by the layers without parameters that follow each of them alike
    (the ReLU after a residual sum), up to the next piece."""
    uses = Counter(v for layer in imp.layers for v in layer.inputs)
    outputs = {v for _, v in imp.outputs}
    runs = []
    for occ in block.occurrences:
        limit = next((a for a in piece_starts if a >= occ.stop), len(imp.layers))
        run, v = [], occ.exit
        for i in range(occ.stop, limit):
            layer = imp.layers[i]
            if layer.params or layer.inputs != [v] or len(layer.outputs) != 1 or uses[v] != 1 or v in outputs:
                break
            run.append(i)
            v = layer.outputs[0]
        runs.append(run)
    ops = [imp.layers[i].op for i in runs[0]]
    common = min(next((k for k, i in enumerate(run) if k >= len(ops) or imp.layers[i].op != ops[k]), len(run))
                 for run in runs)
    for occ, run in zip(block.occurrences, runs):
        if common:
            occ.layers += run[:common]
            occ.stop = run[common - 1] + 1
            occ.exit = imp.layers[run[common - 1]].outputs[0]


def _block_name(block: Block, imp: Imported, taken: set[str]) -> str:
    first = next((source_path(imp.layers[i]) for i in block.template if imp.layers[i].name is not None), None) or ""
    m = re.match(r"[A-Za-z]+", first)
    stem = m.group(0).lower() if m else ""
    if len(stem) >= 4 and stem not in GENERIC_STEMS:
        base = stem[:1].upper() + stem[1:]
    else:
        merges = [imp.layers[i].op for i in block.template if len(imp.layers[i].inputs) > 1]
        base = {"add": "Residual", "mul": "Gated", "concat": "Branches"}.get(merges[-1] if merges else "", "Block")
    name, k = base, 2
    while name in taken or name in KEYWORDS:
        name = f"{base}{k}"
        k += 1
    taken.add(name)
    return name
