"""`dlspec compile SPEC --target caffe -o DIR`: deploy.prototxt, model.caffemodel, solver.prototxt."""

from __future__ import annotations

from pathlib import Path

from ..errors import Diagnostic, DlspecError


def compile_caffe(file: Path, model_name: str | None, sets: tuple[str, ...], output: Path | None,
                  weights: Path | None, opt_level: int) -> list[Path]:
    """Write the Caffe files of the file's model into the folder `output`: deploy.prototxt; with
    `weights` (a safetensors file or a run folder) model.caffemodel; with a recipe for the model,
    solver.prototxt (a recipe Caffe's solver cannot express is warning W851 at the recipe, with
    the reason, and no solver file). Everything is checked before the first file is written."""
    from ..caffe.backend import prototxt_text, write_net
    from ..io import atomic_write_bytes, atomic_write_text
    from ..passes import optimize
    from ..program import compile_file, parse_overrides
    from .options import pick_model
    from .output import err

    if output is None:
        raise DlspecError(Diagnostic(code="E790", message="--target caffe writes a folder: give -o DIR"))
    prog = compile_file(file, parse_overrides(list(sets)))
    g = pick_model(prog, model_name, file)
    arrays = None
    if weights is not None:
        from ..weights import load_graph_weights

        wpath = Path(weights)
        if wpath.is_dir():
            from ..train.run import best_weights  # a run folder: its best (else last) weights

            wpath = best_weights(wpath)
        arrays = load_graph_weights(g, wpath)
    g, arrays, reports = optimize(g, min(opt_level, 1), weights=arrays)
    for line in reports.notes():
        err(line)
    net, model, _ = write_net(g, arrays)
    solver_text = None
    recipe = next((r for r in prog.recipes if getattr(getattr(r, "model", None), "name", None) == g.name), None)
    if recipe is not None:
        from ..caffe.solver import solver_text as make_solver

        try:
            solver_text = make_solver(recipe, g)
        except DlspecError as exc:  # the net is still written; the solver is not, and the reason is told
            d = exc.diagnostics[0]
            where = f"{recipe.span}: " if recipe.span else ""
            err(f"{where}warning[W851]: no solver.prototxt: {d.message}" + (f" ({d.hint})" if d.hint else ""))
    output.mkdir(parents=True, exist_ok=True)
    written = [output / "deploy.prototxt"]
    atomic_write_text(written[0], prototxt_text(net))
    if model is not None:
        written.append(output / "model.caffemodel")
        atomic_write_bytes(written[-1], model.SerializeToString())
    if solver_text is not None:
        written.append(output / "solver.prototxt")
        atomic_write_text(written[-1], solver_text)
    err(f"wrote {', '.join(str(p) for p in written)} ({g.name}, caffe)")
    return written
