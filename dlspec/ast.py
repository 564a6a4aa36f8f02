"""The abstract syntax tree: one dataclass per grammar rule, each carrying its source span."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .source import Span


@dataclass
class Node:
    span: Span = field(repr=False, compare=False)


# ---- expressions -----------------------------------------------------------------------------


@dataclass
class Var(Node):
    name: str


@dataclass
class Literal(Node):
    value: Any


@dataclass
class ListLit(Node):
    items: list[Node]


@dataclass
class TupleLit(Node):
    items: list[Node]


@dataclass
class DictLit(Node):
    items: list[tuple[str, Node]]


@dataclass
class Kwarg(Node):
    name: str
    value: Node


@dataclass
class Call(Node):
    func: Node
    args: list[Node]
    kwargs: list[Kwarg]


@dataclass
class Attr(Node):
    value: Node
    name: str


@dataclass
class Index(Node):
    value: Node
    index: Node


@dataclass
class BinOp(Node):
    op: str
    left: Node
    right: Node


@dataclass
class UnaryOp(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass
class BoolOp(Node):
    op: str  # "and" | "or"
    left: Node
    right: Node


@dataclass
class Cond(Node):
    then: Node
    test: Node
    orelse: Node


@dataclass
class Pipe(Node):
    source: Node
    target: Node


@dataclass
class NamedLayer(Node):
    layer: Node
    #: the name as written: `conv1`, a path `layer2.0.conv1`, or a template's text `"layer{i}"`
    name: str
    #: a template's parts, literal text and the expressions between `{` and `}`; None for a plain name
    template: list[str | Node] | None = None


@dataclass
class Then(Node):
    first: Node
    second: Node


# ---- statements ------------------------------------------------------------------------------


@dataclass
class TensorTypeExpr(Node):
    dtype: str
    dims: list[Node]


@dataclass
class InputDecl(Node):
    name: str
    type: TensorTypeExpr | None


@dataclass
class InputStmt(Node):
    decls: list[InputDecl]


@dataclass
class OutputItem(Node):
    name: str | None
    value: Node


@dataclass
class OutputStmt(Node):
    items: list[OutputItem]


@dataclass
class Assign(Node):
    targets: list[str]
    value: Node


@dataclass
class FreezeStmt(Node):
    patterns: list[str]


@dataclass
class ReplaceStmt(Node):
    path: str
    value: Node


@dataclass
class ExprStmt(Node):
    value: Node


#: what a `for` binds: one name, or a tuple of targets unpacking each item (`(i, (c, n))`)
LoopTarget = str | list["LoopTarget"]


@dataclass
class ForStmt(Node):
    targets: list[LoopTarget]  # several: each item is unpacked into them, `for c, n in ...`
    iterable: Node
    body: list[Node]


# ---- definitions -----------------------------------------------------------------------------


@dataclass
class Param(Node):
    name: str
    type: str | None
    default: Node | None


@dataclass
class BlockDef(Node):
    name: str
    params: list[Param]
    body: list[Node]
    file: str = ""


@dataclass
class BaseRef(Node):
    name: str
    args: list[Node]
    kwargs: list[Kwarg]


@dataclass
class ModelDef(Node):
    name: str
    params: list[Param]
    body: list[Node]
    base: BaseRef | None = None
    file: str = ""


@dataclass
class TrainDef(Node):
    kind: str | None  # None: a supervised recipe; else "gan", "distill", ...
    name: str
    args: list[Node]
    kwargs: list[Kwarg]
    body: list[Node]
    file: str = ""


@dataclass
class Import(Node):
    path: str
    names: list[str] | None  # None: everything


@dataclass
class Module(Node):
    items: list[Node]
