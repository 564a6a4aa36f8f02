"""Whether a graph is well formed, and the naming rule every layer path obeys.

A graph comes from the front end, from a pass, from an importer or from a run folder's
`graph.json` — the last is untrusted data. `check_graph` re-runs every op's attribute
validation and shape rule from the inputs and checks the value table; `revalidated` returns the
graph with every node's attributes replaced by their validated values (typed ints, floats,
bools and the op's own words), which is what backends generate code from.

Layer names become attribute names of framework modules (PyTorch's `nn.Module` and
`nn.ModuleDict`, whose layout is canonical). `layer_name_problem` says why a name cannot be one;
the front end and `check_graph` both ask it, so a spec, an import and a run folder obey one rule.
"""

from __future__ import annotations

import re

from ..errors import AttrError, Diagnostic, DlspecError, ShapeError
from .graph import Graph, Node
from .ops import REGISTRY

#: attributes of torch's nn.Module and nn.ModuleDict (the canonical layout's containers). A
#: layer with one of these names could not be registered; `tests/` compares this with torch.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "clear", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float",
    "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "items", "keys", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "pop", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state",
    "set_submodule", "share_memory", "smart_apply", "state_dict", "to", "to_empty", "train", "training",
    "type", "update", "values", "xpu", "zero_grad",
})

_LAYER_PART = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
MAX_NAME_LENGTH = 200


class GraphInvalid(Exception):
    """A graph that is not well formed; `where` names the field (`nodes[3].attrs`)."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.message = message
        self.where = where


def layer_name_problem(name: str) -> str | None:
    """Why `name` (one part of a layer path) cannot name a layer, or None when it can."""
    if not _LAYER_PART.fullmatch(name):
        return "a layer name is letters, digits and underscores"
    if len(name) > MAX_NAME_LENGTH:
        return f"a layer name has at most {MAX_NAME_LENGTH} characters"
    if name.startswith("_"):
        return "a layer name may not start with `_` (PyTorch keeps its module internals there)"
    if name in MODULE_ATTRIBUTES:
        return f"`{name}` is an attribute of PyTorch's nn.Module"
    return None


def _check_name(text: str, where: str, what: str) -> None:
    if not isinstance(text, str) or not text or len(text) > MAX_NAME_LENGTH or not text.isprintable():
        raise GraphInvalid(f"{what} must be printable text of 1 to {MAX_NAME_LENGTH} characters", where)


def check_graph(graph: Graph) -> None:
    """Raise GraphInvalid unless every name obeys the rules, every node's op exists and its
    attributes validate, every value is defined before it is read, and shape inference from the
    inputs reproduces every recorded type."""
    _check_name(graph.name, "name", "the model name")
    known = {}
    for i, gi in enumerate(graph.inputs):
        _check_name(gi.name, f"inputs[{i}].name", "an input name")
        if gi.name in known:
            raise GraphInvalid(f"graph input `{gi.name}` appears twice", f"inputs[{i}]")
        known[gi.name] = gi.type
        if graph.values.get(gi.name) != gi.type:
            raise GraphInvalid(f"graph input `{gi.name}` has no matching value type", f"inputs[{i}]")
    names: set[str] = set()
    for i, node in enumerate(graph.nodes):
        where = f"nodes[{i}]"
        for part in node.name.split("."):
            why = layer_name_problem(part)
            if why:
                raise GraphInvalid(f"layer `{node.name}`: {why}", f"{where}.name")
        if node.name in names:
            raise GraphInvalid(f"node `{node.name}` appears twice", f"{where}.name")
        names.add(node.name)
        op = REGISTRY.get(node.op)
        if op is None:
            raise GraphInvalid(f"node `{node.name}` has the unknown op `{node.op}`", f"{where}.op")
        for j, v in enumerate((*node.inputs, *node.outputs)):
            _check_name(v, f"{where}.inputs/outputs[{j}]", "a value name")
        missing = [v for v in node.inputs if v not in known]
        if missing:
            raise GraphInvalid(f"node `{node.name}` reads `{missing[0]}` before it is defined", f"{where}.inputs")
        ins = [known[v] for v in node.inputs]
        most = None if op.variadic else len(op.inputs)
        if len(ins) < op.required_inputs() or (most is not None and len(ins) > most):
            takes = f"{op.required_inputs()} to {most}" if most != op.required_inputs() else f"{most}"
            if most is None:
                takes = f"at least {op.required_inputs()}"
            raise GraphInvalid(f"node `{node.name}` ({node.op}) takes {takes} input{'' if takes == '1' else 's'}; "
                               f"it has {len(ins)}", f"{where}.inputs")
        try:
            attrs = op.attrs_from_dict(node.attrs)
            op.validate_attrs(attrs)
            op.check_inputs(attrs, ins)
            outs = op.infer(attrs, ins)
        except (AttrError, ShapeError) as exc:
            raise GraphInvalid(f"node `{node.name}` ({node.op}) does not check: {exc.message}",
                               f"{where}.attrs") from None
        if len(outs) != len(node.outputs):
            raise GraphInvalid(f"node `{node.name}` has {len(node.outputs)} outputs, its op gives {len(outs)}",
                               f"{where}.outputs")
        for v, t in zip(node.outputs, outs):
            if v in known:
                raise GraphInvalid(f"value `{v}` is defined twice", f"{where}.outputs")
            if graph.values.get(v) != t:
                raise GraphInvalid(f"value `{v}` is recorded as {graph.values.get(v)}, shape inference gives {t}",
                                   f"values.{v}", )
            known[v] = t
    for i, o in enumerate(graph.outputs):
        _check_name(o.name, f"outputs[{i}].name", "an output name")
        if o.value not in known:
            raise GraphInvalid(f"output `{o.name}` names the undefined value `{o.value}`", f"outputs[{i}].value")
    if set(graph.values) != set(known):
        extra = sorted(set(graph.values) - set(known))
        raise GraphInvalid(f"the value table holds values no node defines: {', '.join(extra[:5])}", "values")


def revalidated(graph: Graph) -> Graph:
    """`graph` after `check_graph`, with each node's attributes as its op's validated values."""
    check_graph(graph)
    nodes = [_validated_node(n) for n in graph.nodes]
    return graph.model_copy(update={"nodes": nodes})


def _validated_node(node: Node) -> Node:
    attrs = REGISTRY[node.op].attrs_from_dict(node.attrs).model_dump()
    return node.model_copy(update={"attrs": attrs})


def validated(graph: Graph) -> Graph:
    """`revalidated(graph)`, with a graph that is not well formed reported as E719."""
    try:
        return revalidated(graph)
    except GraphInvalid as exc:
        where = f" (at `{exc.where}`)" if exc.where else ""
        raise DlspecError(Diagnostic(code="E719", message=f"model `{graph.name}` is not a valid graph{where}: {exc.message}",
                                     span=graph.span)) from None
