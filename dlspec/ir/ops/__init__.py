"""The op catalogue: every op, declared once (attributes, shape rule, parameters, FLOPs)."""

from . import activation, attention, conv, elementwise, linear, norm, pool, recurrent, tensor  # noqa: F401  (registration)
from .base import REGISTRY, OpDef


def get_op(name: str) -> OpDef:
    return REGISTRY[name]


def op_names() -> list[str]:
    return sorted(REGISTRY)


__all__ = ["REGISTRY", "OpDef", "get_op", "op_names"]
