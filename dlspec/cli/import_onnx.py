"""`dlspec import MODEL.onnx -o MODEL.dls`: an ONNX model as a readable spec plus its weights."""

from __future__ import annotations

from pathlib import Path

import click

from .output import Command


def register(main: click.Group) -> None:
    main.add_command(import_)


@click.command("import", cls=Command)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The spec to write (a .dls file; default: MODEL with the .dls suffix). The weights go next to "
                   "it, with the .safetensors suffix.")
@click.option("--name", help="The model's name in the spec (default: from the file name, in CamelCase).")
@click.option("--force", is_flag=True, help="Overwrite the spec and weights files if they exist.")
def import_(model: Path, output: Path | None, name: str | None, force: bool) -> None:
    """Import an ONNX model: write a spec that `dlspec check`s and its weights (safetensors).

    The weights are in the canonical (PyTorch) layout, keyed by the spec's parameter paths; the
    spec's header says how to load them. Exit 1 when the model uses ops dlspec cannot express
    (all of them are listed); nothing is written then."""
    import re

    from ..errors import error
    from ..importers.onnx import check_model_path, check_output_path
    from .output import err

    model = check_model_path(model)  # a NUL, a 5,000-character path, a link loop, a FIFO: E740
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
    from ..importers.spec_writer import convert

    result = convert(model, spec_path, name)
    from ..train.run import atomic_write_text
    from ..weights import save_numpy

    save_numpy(result.weights, weights_path, metadata={"format": "dlspec", "model": result.graph.name,
                                                       "source": model.name})
    atomic_write_text(spec_path, result.text)
    n_params = sum(int(v.size) for v in result.weights.values())
    err(f"wrote {spec_path} ({result.graph.name}: {len(result.graph.nodes)} layers) and {weights_path} "
        f"({len(result.weights)} tensors, {n_params:,} values)")
