"""What the command line prints and how it exits: `out` (stdout), `err` (stderr), diagnostics
rendered like a compiler's, and the exit codes: 0 success, 1 a user error (spec, data, shapes),
2 a usage error (unknown option, missing argument). Commands print through here only.

`Command` is the one place where a `DlspecError` becomes its diagnostics and exit 1: every
command of the `dlspec` group is one (the group's `command_class`), so a command body raises
and never catches. A command with a `--json` flag (`as_json`) gets its diagnostics as JSON."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:  # imported when a diagnostic is printed: `--help` and `--version` need none of it
    from ..errors import Diagnostic, DlspecError

EXIT_OK, EXIT_USER, EXIT_USAGE = 0, 1, 2


def out(text: str = "") -> None:
    click.echo(text)


def err(text: str) -> None:
    click.echo(text, err=True)


def report(exc: DlspecError, as_json: bool = False) -> NoReturn:
    """Print every diagnostic of a failed run and exit 1."""
    if as_json:
        out(json.dumps([d.to_json() for d in exc.diagnostics], indent=2))
    else:
        print_diagnostics(exc.diagnostics)
    sys.exit(EXIT_USER)


#: top-level module → (what it is, the extra that installs it): a command that needs one of them
#: and finds it missing answers E910 with the install line, never a traceback
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch", "torch"),
    "tensorflow": ("TensorFlow", "tf"),
    "keras": ("Keras", "tf"),
    "tf_keras": ("Keras", "tf"),
    "onnx": ("ONNX", "onnx"),
    "onnxruntime": ("ONNX Runtime", "onnx"),
    "tensorboard": ("TensorBoard", "tensorboard"),
    "sklearn": ("scikit-learn", "torch"),
    "statsmodels": ("statsmodels", "torch"),
    "matplotlib": ("matplotlib", "torch"),
    "tqdm": ("tqdm", "torch"),
    "cv2": ("OpenCV", "caffe"),
    "google.protobuf": ("protobuf", "caffe"),
    "openvino": ("OpenVINO", "deploy"),
    "pygls": ("pygls", "lsp"),
    "optuna": ("Optuna", "search"),
    "mkdocs": ("MkDocs", "docs"),
}


def missing_framework(exc: ImportError, command: str | None) -> DlspecError | None:
    """E910 for an ImportError of a framework a command needs (None: some other import failed,
    a bug that keeps its traceback)."""
    name = getattr(exc, "name", None) or ""
    root = name.split(".")[0]
    key = "google.protobuf" if name.startswith("google.protobuf") else root
    if key not in FRAMEWORKS:
        return None
    what, extra = FRAMEWORKS[key]
    from ..errors import error

    cmd = f"`dlspec {command}`" if command else "this command"
    return error("E910", f"{cmd} needs {what} (the Python module `{key}`), which is not installed",
                 hint=f"pip install 'dlspec[{extra}]'")


class Command(click.Command):
    """A click command whose user errors end as located diagnostics and exit 1, never a traceback;
    a framework it needs that is not installed is one of them (E910, with the install line)."""

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import DlspecError  # loaded by then: the command is about to compile something

        try:
            return super().invoke(ctx)
        except DlspecError as exc:
            report(exc, as_json=bool(ctx.params.get("as_json")))
        except ImportError as exc:
            coded = missing_framework(exc, ctx.info_name)
            if coded is None:
                raise
            report(coded, as_json=bool(ctx.params.get("as_json")))


class Group(click.Group):
    """The `dlspec` group: `@main.command()` declares a `Command`."""

    command_class = Command


def print_diagnostics(diags: list[Diagnostic]) -> None:
    from ..source import SourceFile

    cache: dict[str, SourceFile] = {}
    for d in diags:
        if d.span and d.span.file not in cache:
            try:
                cache[d.span.file] = SourceFile.read(d.span.file)
            except (OSError, UnicodeDecodeError):
                pass
        err(d.render(cache))
        err("")
    n_err = sum(1 for d in diags if d.severity == "error")
    n_warn = len(diags) - n_err
    if n_err or n_warn:
        parts = [f"{n_err} error{'s' if n_err != 1 else ''}"] if n_err else []
        parts += [f"{n_warn} warning{'s' if n_warn != 1 else ''}"] if n_warn else []
        err(", ".join(parts))
