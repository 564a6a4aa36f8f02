"""What the command line prints and how it exits: `out` (stdout), `err` (stderr), diagnostics
rendered like a compiler's, and the exit codes: 0 success, 1 a user error (spec, data, shapes),
2 a usage error (unknown option, missing argument). Commands print through here only.

`Command` is the one place where a `DlspecError` becomes its diagnostics and exit 1: every
command of the `dlspec` group is one (the group's `command_class`), so a command body raises
and never catches. A command with a `--json` flag (`as_json`) gets its diagnostics as JSON.

A command declared with `quick_exit=True` (`check`, `summary`, `ir`: they read a spec and print,
nothing else) runs without cyclic garbage collection, and when it runs as the program (`dlspec`,
`python -m dlspec.cli`: `run_program`) the process ends as soon as its output is flushed,
without tearing the interpreter down: freeing every module and object one by one took about
40 ms of a 0.25 s check. Called in-process (`main(argv)`, click's test runner) such a command
returns or raises SystemExit as any other."""

from __future__ import annotations

import atexit
import gc
import json
import os
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


#: set when a `quick_exit` command has run: `Group.__call__` may then end the process at once
_quick_exit_ran = False


class Command(click.Command):
    """A click command whose user errors end as located diagnostics and exit 1, never a traceback;
    a framework it needs that is not installed is one of them (E910, with the install line).

    `quick_exit`: the command only reads and prints (no files, threads or child processes left
    to finish), so it runs without cyclic garbage collection and its process may end without
    interpreter teardown (see the module docstring)."""

    def __init__(self, *args: Any, quick_exit: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.quick_exit = quick_exit

    def invoke(self, ctx: click.Context) -> Any:
        if not self.quick_exit:
            return self._invoke(ctx)
        global _quick_exit_ran
        _quick_exit_ran = True
        # what a spec compiles to holds no reference cycles: collections would only walk the
        # growing heap of modules and classes being imported
        was = gc.isenabled()
        gc.disable()
        try:
            return self._invoke(ctx)
        finally:
            if was:
                gc.enable()

    def _invoke(self, ctx: click.Context) -> Any:
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


def run_program(group: click.Group) -> None:
    """Run `group` as the process's program (from `sys.argv`), ending the process without
    teardown once a `quick_exit` command has run and its output is flushed."""
    try:
        group.main()
    except SystemExit as exc:
        if _quick_exit_ran:
            _exit_now(exc)
        raise


def _exit_now(exc: SystemExit) -> None:
    """End the process with `exc`'s status: the `atexit` handlers run and standard output and
    error are flushed, as at an ordinary exit; the modules and objects are not freed. Returns
    (for the ordinary exit) when the output cannot be flushed, so that failure is reported as usual."""
    code = exc.code
    if code is not None and not isinstance(code, int):
        return  # a message to print: the ordinary exit prints it
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code or 0)


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
