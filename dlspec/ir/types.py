"""Tensor types: a dtype and a shape whose dimensions are ints or symbolic (`dlspec.ir.dims`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema

from .dims import Dim, Sym, parse_dim

DType = Literal["float16", "bfloat16", "float32", "float64", "int32", "int64", "int8", "uint8", "bool"]
DTYPES: tuple[str, ...] = DType.__args__  # type: ignore[attr-defined]
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int32", "int64")
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8, "int8": 1, "uint8": 1,
               "bool": 1}


def _validate_dim(v: Any) -> Dim:
    if isinstance(v, (int, Sym)) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        return parse_dim(v)
    raise ValueError(f"a dimension is an integer or a symbolic expression, not {v!r}")


def _serialize_dim(v: Dim) -> int | str:
    return v if isinstance(v, int) else str(v)


DimField = Annotated[
    Any,
    PlainValidator(_validate_dim),
    PlainSerializer(_serialize_dim),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "description": "an int or a symbolic expression"}),
]


class TensorType(BaseModel):
    """The static type of a tensor value."""

    model_config = ConfigDict(frozen=True)

    dtype: DType = "float32"
    shape: tuple[DimField, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape) -> TensorType:
        return TensorType(dtype=self.dtype, shape=tuple(shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def shape_str(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"
