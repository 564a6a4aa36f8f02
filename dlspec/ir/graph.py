"""The graph IR: values, nodes, parameters and the program that holds models and recipes.

A `Graph` is one model after lowering: every block is expanded, every compile-time expression
evaluated, every name resolved. Nodes are in topological order. Node names are dotted layer
paths (`encoder.conv1`); parameters are keyed `<node path>.<param>` (`encoder.conv1.weight`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..source import Span
from .dims import Dim
from .types import DimField, TensorType


class Node(BaseModel):
    """One op application. `inputs` and `outputs` name values in the graph's `values` table."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="dotted layer path, unique in the graph")
    op: str
    attrs: dict[str, Any] = {}
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    span: Span | None = None


class Param(BaseModel):
    """A parameter or buffer tensor, in the canonical (PyTorch) layout."""

    model_config = ConfigDict(frozen=True)

    path: str
    node: str
    name: str
    shape: tuple[DimField, ...]
    trainable: bool = True
    buffer: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


class BlockUse(BaseModel):
    """One use of a spec block: which block, called with which plain arguments (numbers, strings
    and booleans, by parameter name). Generated code writes one class or function per block from
    it; what the graph computes does not depend on it."""

    block: str
    args: dict[str, bool | int | float | str] = {}


class GraphInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    type: TensorType
    span: Span | None = None


class GraphOutput(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    value: str
    span: Span | None = None


class Graph(BaseModel):
    """A lowered model."""

    name: str
    source: str | None = None
    args: dict[str, Any] = {}
    inputs: list[GraphInput]
    outputs: list[GraphOutput]
    nodes: list[Node]
    values: dict[str, TensorType]
    frozen: list[str] = Field(default=[], description="fnmatch patterns of parameter paths that do not train")
    base_weights: str | None = Field(default=None, description="weights file this model starts from")
    replaced: list[str] = Field(default=[], description="layer paths replaced on the base model: trained afresh")
    span: Span | None = None
    blocks: dict[str, BlockUse] = Field(
        default={}, description="the spec block each block use expanded from, by its layer path (`layer1`)")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producers(self) -> dict[str, Node]:
        return {v: n for n in self.nodes for v in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def params(self) -> list[Param]:
        from .ops import get_op

        out: list[Param] = []
        frozen = self.frozen
        from fnmatch import fnmatchcase

        for node in self.nodes:
            op = get_op(node.op)
            ins = [self.values[v] for v in node.inputs]
            attrs = op.attrs_from_dict(node.attrs)
            for pname, shape in op.params(attrs, ins).items():
                path = f"{node.name}.{pname}"
                trainable = not any(fnmatchcase(path, p) or fnmatchcase(node.name, p) for p in frozen)
                out.append(Param(path=path, node=node.name, name=pname, shape=tuple(shape), trainable=trainable))
            for bname, shape in op.buffers(attrs, ins).items():
                out.append(
                    Param(path=f"{node.name}.{bname}", node=node.name, name=bname, shape=tuple(shape), trainable=False, buffer=True)
                )
        return out


class Program(BaseModel):
    """Everything a spec file defines, lowered: its models and its training recipes."""

    file: str
    models: dict[str, Graph] = {}
    recipes: list[Any] = []
    #: the graph each supervised recipe trains, lowered with the recipe's model arguments; the
    #: models of a GAN or distillation program under `<recipe>.<role>` (`DCGAN.generator`)
    recipe_graphs: dict[str, Graph] = {}
    warnings: list[Any] = []


def shape_of(graph: Graph, value: str) -> tuple[Dim, ...]:
    return graph.values[value].shape
