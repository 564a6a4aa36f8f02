"""The editor-side commands: `dlspec fmt` (the canonical layout), `dlspec lsp` (the language
server over stdio) and `dlspec draw` (a picture of a model's graph)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import DlspecError, error
from .options import model_option, set_option
from .output import EXIT_OK, EXIT_USER, err, out, print_diagnostics


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file would be reformatted (for CI).")
    @click.option("--diff", is_flag=True, help="Write nothing; print a unified diff of the changes instead.")
    def fmt(files: tuple[Path, ...], check: bool, diff: bool) -> None:
        """Format spec FILES in place in the one canonical layout (comments kept, meaning unchanged).

        Exit codes: 0 nothing to do or files written; 1 with --check when a file would change, or when
        a file does not parse (it is left as it is, its errors printed)."""
        import difflib

        from ..fmt import format_source
        from ..io import atomic_write_text
        from ..program import read_source

        changed: list[Path] = []
        failures = 0
        for f in files:
            try:
                src = read_source(f)
                result = format_source(src.text, str(f))
            except DlspecError as exc:
                failures += 1
                print_diagnostics(exc.diagnostics)
                continue
            if result == src.text:
                continue
            changed.append(f)
            if diff:
                out("".join(difflib.unified_diff(src.text.splitlines(keepends=True), result.splitlines(keepends=True),
                                                 fromfile=f"{f} (original)", tofile=f"{f} (formatted)")).rstrip("\n"))
            elif check:
                err(f"would reformat {f}")
            else:
                atomic_write_text(f, result)
                err(f"reformatted {f}")
        verb = "would be reformatted" if (check or diff) else "reformatted"
        plural = "s" if len(changed) != 1 else ""
        err(f"{len(changed)} file{plural} {verb}, {len(files) - len(changed) - failures} unchanged"
            + (f", {failures} not formatted (errors above)" if failures else ""))
        sys.exit(EXIT_USER if failures or (check and changed) else EXIT_OK)

    @main.command()
    @click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Append the server's log here (the protocol owns standard output).")
    def lsp(log_file: Path | None) -> None:
        """Run the language server over standard input and output (for editors: diagnostics, hover
        shapes, inlay hints, definitions, completion, outline, quick fixes, formatting)."""
        import logging

        try:
            from ..lsp.server import serve
        except ImportError as exc:
            raise error("E921", f"the language server needs pygls ({exc.name or exc} is missing)",
                        hint="pip install 'dlspec[lsp]'") from None
        if log_file is not None:
            try:
                handler = logging.FileHandler(log_file, encoding="utf-8")
            except OSError as exc:
                raise error("E922", f"--log-file {log_file}: cannot write it ({exc.strerror})",
                            hint="give --log-file a path in a folder that exists and can be written") from None
            logging.basicConfig(level=logging.INFO, handlers=[handler])
        serve()

    @main.command()
    @click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
    @model_option()
    @set_option
    @click.option("--depth", type=click.IntRange(0, None), default=None,
                  help="Open blocks this many levels deep; deeper ones are drawn as one node each "
                       "(default: all open; 0: every top-level block collapsed).")
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The picture: FILE.svg, FILE.png (need Graphviz's `dot`) or FILE.dot.")
    @click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot"]),
                  help="The output format (default: from the file's extension).")
    def draw(spec: Path, model_name: str | None, sets: tuple[str, ...], depth: int | None, output: Path,
             fmt: str | None) -> None:
        """Draw a model's graph: blocks as clusters, each layer with its op and main attributes,
        edges labelled with tensor shapes, skip connections in colour."""
        from ..draw import FORMATS, block_paths, render, to_dot
        from ..program import parse_overrides
        from .options import pick_model

        fmt = fmt or output.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise error("E908", f"cannot tell the picture's format from {output.name}",
                        hint="name the file .svg, .png or .dot, or give --format")
        prog, blocks = block_paths(spec, parse_overrides(list(sets)))
        g = pick_model(prog, model_name, spec)
        render(to_dot(g, blocks, depth), output, fmt)
        err(f"wrote {output} ({g.name}, {len(g.nodes)} layers)")
