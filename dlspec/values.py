"""Compile-time values of the evaluator: tensors in the graph being built, layers not yet applied,
blocks with bound arguments, repetitions, recipe calls, and the poison value that stands for
something that already failed (so one mistake is reported once)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import ast
from .ir.ops.base import OpDef
from .ir.types import TensorType
from .source import Span


@dataclass(frozen=True)
class Tensor:
    value: str
    type: TensorType


@dataclass(frozen=True)
class EnumName:
    """A bare name that is not a variable: an enum-like word such as `same` or `val_loss`."""

    name: str
    span: Span


@dataclass
class Arg:
    value: Any
    span: Span


@dataclass
class LayerFn:
    op: OpDef
    args: list[Arg]
    kwargs: dict[str, Arg]
    span: Span
    name: str | None = None
    tensor_args: list[Arg] = field(default_factory=list)
    tensor_kwargs: dict[str, Arg] = field(default_factory=dict)

    def named(self, name: str) -> LayerFn:
        return replace(self, name=name)


@dataclass
class BlockFn:
    block: ast.BlockDef | ast.ModelDef
    args: list[Arg]
    kwargs: dict[str, Arg]
    span: Span
    name: str | None = None
    tensor_args: list[Arg] = field(default_factory=list)

    def named(self, name: str) -> BlockFn:
        return replace(self, name=name)


@dataclass
class Repeat:
    fn: Any
    times: int
    span: Span
    name: str | None = None

    def named(self, name: str) -> Repeat:
        return replace(self, name=name)


@dataclass
class Compose:
    fns: list[Any]
    span: Span
    name: str | None = None

    def named(self, name: str) -> Compose:
        return replace(self, name=name)


@dataclass
class ConfigCall:
    """A call in a training recipe (`adam(lr=1e-3)`), validated later against the recipe schema."""

    name: str
    args: list[Arg]
    kwargs: dict[str, Arg]
    span: Span


@dataclass
class ModelRef:
    model: ast.ModelDef
    args: list[Arg]
    kwargs: dict[str, Arg]
    span: Span


@dataclass
class ThenChain:
    parts: list[Any]
    span: Span


class _Poison:
    def __repr__(self) -> str:
        return "<error>"


POISON = _Poison()

FUNCTIONS = (LayerFn, BlockFn, Repeat, Compose)


def describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, LayerFn):
        return f"the layer `{v.op.name}`"
    if isinstance(v, BlockFn):
        return f"the block `{v.block.name}`"
    if isinstance(v, Repeat):
        return "a repeated layer"
    if isinstance(v, Compose):
        return "a chain of layers"
    if isinstance(v, EnumName):
        return f"the name `{v.name}`"
    if isinstance(v, bool):
        return f"the bool {str(v).lower()}"
    if isinstance(v, int):
        return f"the int {v}"
    if isinstance(v, float):
        return f"the float {v}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, (list, tuple)):
        return f"a {'list' if isinstance(v, list) else 'tuple'} of {len(v)}"
    if isinstance(v, ConfigCall):
        return f"`{v.name}(...)`"
    if v is None:
        return "none"
    return type(v).__name__
