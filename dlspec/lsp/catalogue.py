"""What completion offers and hover describes, from the catalogues themselves: the ops with their
attributes, the recipe keys and the values each key takes."""

from __future__ import annotations

import types
import typing
from functools import lru_cache
from typing import Any

from pydantic_core import PydanticUndefined

#: recipe keys whose value is a call to one of a catalogue's entries
RECIPE_VALUE_KEYS = {
    "data": "DATASETS",
    "optimizer": "OPTIMIZERS",
    "g_optimizer": "OPTIMIZERS",
    "d_optimizer": "OPTIMIZERS",
    "schedule": "SCHEDULES",
    "loss": "LOSSES",
    "clip_grad": "CLIPS",
}
MODEL_KEYS = ("generator", "discriminator", "teacher", "student")


def type_name(annotation: Any) -> str:
    """A short reading of an attribute's type: `int`, `int | tuple[int, ...]`, `"same" | "valid"`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(a) for a in typing.get_args(annotation) if a is not type(None))) + (
            " | none" if type(None) in typing.get_args(annotation) else "")
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return "tuple"
    if origin is dict:
        return "dict"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    if hasattr(v, "model_dump"):
        return type(v).__name__
    return repr(v)


def fields_of(model: Any, skip: tuple[str, ...] = ()) -> list[tuple[str, str, str | None]]:
    """(name, type, default or None when required) of a pydantic model's fields."""
    out = []
    for name, f in model.model_fields.items():
        if name in skip:
            continue
        default = None if f.default is PydanticUndefined else literal(f.default)
        out.append((name, type_name(f.annotation), default))
    return out


def op_names() -> dict[str, str]:
    from ..ir.ops import REGISTRY

    return {name: op.summary for name, op in sorted(REGISTRY.items())}


def op_attributes(name: str) -> list[tuple[str, str, str | None]] | None:
    from ..ir.ops import REGISTRY

    op = REGISTRY.get(name)
    return None if op is None else fields_of(op.Attrs)


def op_signature(name: str) -> str:
    from ..ir.ops import REGISTRY

    op = REGISTRY[name]
    attrs = ", ".join(f"{n}: {t}" + (f" = {d}" if d is not None else "") for n, t, d in fields_of(op.Attrs))
    return f"{name}({attrs})"


@lru_cache(maxsize=1)
def _training() -> Any:
    from ..ir import training

    return training


def recipe_keys(kind: str | None) -> list[tuple[str, str, str | None]]:
    t = _training()
    cls = t.TrainConfig if kind is None else t.KINDS.get(kind, t.TrainConfig)
    keys = fields_of(cls, skip=("kind", "name", "span", "model"))
    return [k for k in keys if k[0] not in ("early_stop", "checkpoint")]


def recipe_directives() -> dict[str, list[tuple[str, str, str | None]]]:
    t = _training()
    return {name: fields_of(cls) for name, cls in t.DIRECTIVES.items()}


def recipe_values(key: str) -> dict[str, str]:
    """The names a recipe key's value can be, each with its parameters as detail."""
    t = _training()
    if key in RECIPE_VALUE_KEYS:
        table = getattr(t, RECIPE_VALUE_KEYS[key])
        return {name: "(" + ", ".join(f"{n}" + (f"={d}" if d is not None else "") for n, _, d in fields_of(cls, ("type",)))
                + ")" for name, cls in table.items()}
    if key == "metrics":
        return {name: "metric" for name in t.METRIC_ALIASES}
    fieldinfo = {**t.TrainConfig.model_fields, **t.GanConfig.model_fields, **t.DistillConfig.model_fields}.get(key)
    if fieldinfo is not None and typing.get_origin(fieldinfo.annotation) is typing.Literal:
        return {str(a): "" for a in typing.get_args(fieldinfo.annotation)}
    if fieldinfo is not None and fieldinfo.annotation is bool:
        return {"true": "", "false": ""}
    return {}


def config_call_fields(name: str) -> list[tuple[str, str, str | None]] | None:
    """The parameters of a recipe call such as `adam(...)`, `cosine(...)`, `builtin(...)`."""
    t = _training()
    for table in (t.OPTIMIZERS, t.SCHEDULES, t.LOSSES, t.DATASETS, t.CLIPS, t.DIRECTIVES):
        if name in table:
            return fields_of(table[name], ("type",))
    return None


def builtin_datasets() -> tuple[str, ...]:
    return tuple(_training().BUILTIN_DATASETS)
