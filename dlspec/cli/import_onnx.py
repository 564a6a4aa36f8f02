"""`dlspec import MODEL.onnx -o MODEL.dls` and `dlspec import NET.prototxt [--weights X.caffemodel]
[--solver S.prototxt]`: an ONNX model or a Caffe net as a readable spec plus its weights."""

from __future__ import annotations

from pathlib import Path

import click

from .output import Command


def register(main: click.Group) -> None:
    main.add_command(import_)


def _input_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for v in values:
        name, sep, dims = v.partition("=")
        try:
            shape = [int(d) for d in dims.split(",")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise click.BadParameter(f"{v!r}: write NAME=C,H,W (positive sizes, no batch axis)",
                                     param_hint="--input-shape")
        out[name] = shape
    return out


@click.command("import", cls=Command)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The spec to write (a .dls file; default: MODEL with the .dls suffix). The weights go next to "
                   "it, with the .safetensors suffix.")
@click.option("--name", help="The model's name in the spec (default: from the file name, in CamelCase).")
@click.option("--force", is_flag=True, help="Overwrite the spec and weights files if they exist.")
@click.option("--weights", "caffemodel", type=click.Path(dir_okay=False, path_type=Path),
              help="Caffe: the .caffemodel with the net's trained blobs (default: the prototxt's fillers).")
@click.option("--solver", type=click.Path(dir_okay=False, path_type=Path),
              help="Caffe: a solver.prototxt, written as the spec's train recipe.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME=C,H,W",
              help="Caffe: the shape of a data layer's top that the prototxt does not state (repeatable).")
def import_(model: Path, output: Path | None, name: str | None, force: bool, caffemodel: Path | None,
            solver: Path | None, input_shape: tuple[str, ...]) -> None:
    """Import an ONNX model (.onnx) or a Caffe net (.prototxt): write a spec that `dlspec check`s
    and its weights (safetensors).

    The weights are in the canonical (PyTorch) layout, keyed by the spec's parameter paths; the
    spec's header says how to load them. Exit 1 when the model uses ops dlspec cannot express
    (all of them are listed); nothing is written then."""
    import re

    from ..errors import error
    from ..importers.onnx import check_model_path, check_output_path
    from .output import err

    caffe = model.suffix.lower() in (".prototxt", ".pbtxt") or caffemodel is not None or solver is not None
    if model.suffix.lower() == ".caffemodel":
        raise click.BadParameter("give the net's .prototxt, and the .caffemodel with --weights", param_hint="MODEL")
    if not caffe and input_shape:
        raise click.BadParameter("--input-shape is for Caffe nets (.prototxt)", param_hint="--input-shape")
    model = check_model_path(model, "ONNX model" if not caffe else "Caffe prototxt")
    spec_path = output if output is not None else model.with_suffix(".dls")
    check_output_path(spec_path)
    if spec_path.suffix != ".dls":
        raise click.BadParameter(f"the spec file must end in .dls; got {spec_path.name}", param_hint="-o/--output")
    from ..importers.onnx import KEYWORDS

    if name is not None and (not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in KEYWORDS):
        raise click.BadParameter(f"{name!r} is not a valid model name (letters, digits and _, not a keyword)",
                                 param_hint="--name")
    weights_path = spec_path.with_suffix(".safetensors")
    existing = [p for p in (spec_path, weights_path) if p.exists()]
    if existing and not force:
        raise error("E743", f"{' and '.join(str(p) for p in existing)} already exist{'s' if len(existing) == 1 else ''}",
                    hint="pass --force to overwrite, or choose another -o")
    source_name = model.name
    if caffe:
        from ..caffe.importer import convert as convert_caffe

        result, ci = convert_caffe(model, spec_path, caffemodel, name, _input_shapes(input_shape), solver)
        for w in ci.warnings:
            err(f"warning {w}")
        if caffemodel is not None:
            source_name = f"{model.name} + {caffemodel.name}"
    else:
        from ..importers.spec_writer import convert

        result = convert(model, spec_path, name)
    from ..train.run import atomic_write_text
    from ..weights import save_numpy

    save_numpy(result.weights, weights_path, metadata={"format": "dlspec", "model": result.graph.name,
                                                       "source": source_name})
    atomic_write_text(spec_path, result.text)
    n_params = sum(int(v.size) for v in result.weights.values())
    err(f"wrote {spec_path} ({result.graph.name}: {len(result.graph.nodes)} layers) and {weights_path} "
        f"({len(result.weights)} tensors, {n_params:,} values)")
