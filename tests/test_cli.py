"""`dlspec` end to end: exit codes (0 ok, 1 user error, 2 usage error), JSON output, model
selection, the IR round trip, and that check/summary never import a framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.cli.options import MODEL_HELP, SET_HELP
from dlspec.cli.output import EXIT_USER, Command
from dlspec.errors import error
from dlspec.ir.graph import Graph
from dlspec.program import compile_file
from dlspec.source import Span

from .helpers import ROOT

RESNET = str(ROOT / "specs" / "resnet18.dls")

TWO_MODELS = """
model Small(classes: int = 10) {
    input x: float32[batch, 16]
    output x -> dense(32) -> relu() -> dense(classes)
}

model Wide {
    input x: float32[batch, 16]
    output x -> dense(64) -> batchnorm1d() -> dense(4)
}
"""

BROKEN = """
model Broken {
    input x: float32[batch, 3, 32, 32]
    y = x -> dense(10) -> conv2d(8, 3)
    z = x -> conv2 (8, 3)
    output y
}
"""


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_check_ok_exits_0():
    r = invoke("check", RESNET)
    assert r.exit_code == 0, r.output
    assert "ok (ResNet18" in r.output


def test_check_error_exits_1_and_reports_every_error(tmp_path):
    r = invoke("check", write(tmp_path, "broken.dls", BROKEN))
    assert r.exit_code == 1
    assert "error[E" in r.output
    assert "2 errors" in r.output


def test_check_json_lists_diagnostics_with_fields(tmp_path):
    path = write(tmp_path, "broken.dls", BROKEN)
    r = invoke("check", "--json", path)
    assert r.exit_code == 1
    diags = json.loads(r.output)
    assert len(diags) == 2
    for d in diags:
        assert {"file", "line", "column", "code", "message", "hint"} <= set(d)
        assert d["file"] == path and d["code"].startswith("E")
    assert [d["line"] for d in diags] == [4, 5]


def test_check_json_ok_is_an_empty_list():
    r = invoke("check", "--json", RESNET)
    assert r.exit_code == 0
    assert json.loads(r.output) == []


def test_check_several_files_fails_if_any_fails(tmp_path):
    good = write(tmp_path, "good.dls", TWO_MODELS)
    bad = write(tmp_path, "bad.dls", BROKEN)
    r = invoke("check", good, bad)
    assert r.exit_code == 1
    assert f"{good}: ok" in r.output
    assert "bad.dls:4:" in r.output
    assert invoke("check", good, RESNET).exit_code == 0


def test_check_nonexistent_file_is_a_user_error_without_traceback(tmp_path):
    missing = str(tmp_path / "nope.dls")
    r = invoke("check", missing)
    assert r.exit_code == 1
    assert "no such file" in r.output and "nope.dls" in r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_usage_errors_exit_2():
    assert invoke("check").exit_code == 2  # missing argument
    assert invoke("check", "--no-such-option", RESNET).exit_code == 2
    assert invoke("summary").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


def test_summary_text_has_totals():
    r = invoke("summary", RESNET)
    assert r.exit_code == 0, r.output
    assert "Total params:         11,689,512" in r.output
    assert "Trainable params:     11,689,512" in r.output
    assert "Non-trainable params: 0" in r.output
    assert "layer1.0.conv_bn.conv" in r.output


def test_summary_json_keys_and_counts(tmp_path):
    r = invoke("summary", "--json", write(tmp_path, "two.dls", TWO_MODELS), "--model", "Small")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["total_params"] == 16 * 32 + 32 + 32 * 10 + 10
    assert s["trainable_params"] == s["total_params"]
    assert [row["op"] for row in s["layers"]] == ["dense", "relu", "dense"]


def test_summary_batchnorm_running_stats_are_buffers_not_params(tmp_path):
    s = json.loads(invoke("summary", "--json", "--model", "Wide", write(tmp_path, "two.dls", TWO_MODELS)).output)
    assert s["total_params"] == (16 * 64 + 64) + 2 * 64 + (64 * 4 + 4)
    assert s["buffers"] == 2 * 64


def test_summary_set_binds_symbolic_dims():
    symbolic = json.loads(invoke("summary", "--json", RESNET).output)
    assert symbolic["layers"][-1]["output_shape"] == "[batch, 1000]"
    concrete = json.loads(invoke("summary", "--json", "--set", "batch=32", RESNET).output)
    assert concrete["layers"][-1]["output_shape"] == "[32, 1000]"
    assert all("batch" not in row["output_shape"] for row in concrete["layers"])


def test_summary_set_binds_a_model_parameter():
    s = json.loads(invoke("summary", "--json", "--set", "classes=10", RESNET).output)
    assert s["layers"][-1]["output_shape"] == "[batch, 10]"


def test_summary_model_selection(tmp_path):
    path = write(tmp_path, "two.dls", TWO_MODELS)
    assert json.loads(invoke("summary", "--json", path, "--model", "Small").output)["model"] == "Small"
    assert json.loads(invoke("summary", "--json", path, "--model", "Wide").output)["model"] == "Wide"


def test_summary_unknown_model_suggests_a_name(tmp_path):
    r = invoke("summary", write(tmp_path, "two.dls", TWO_MODELS), "--model", "Smal")
    assert r.exit_code == 1
    assert "has no model `Smal`" in r.output
    assert "did you mean `Small`?" in r.output


def test_ir_json_round_trips_to_the_lowered_graph():
    r = invoke("ir", "--json", RESNET)
    assert r.exit_code == 0
    loaded = Graph.model_validate_json(r.output)
    lowered = compile_file(RESNET).models["ResNet18"]
    assert loaded == lowered
    assert loaded.values["fc"].shape[0] == lowered.values["fc"].shape[0]  # the symbol `batch` parses back
    assert str(loaded.inputs[0].type) == "float32[batch, 3, 224, 224]"


def test_ir_schema_is_json_schema():
    r = invoke("ir", "--schema", RESNET)
    assert r.exit_code == 0
    schema = json.loads(r.output)
    assert schema["title"] == "Graph" and "nodes" in schema["properties"]


NO_FRAMEWORKS = """
import sys
from dlspec.cli import main
for argv in (["check", {spec!r}], ["summary", {spec!r}], ["summary", "--json", {spec!r}]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), (argv, exc.code)
loaded = sorted(m for m in ("torch", "tensorflow", "keras", "jax") if m in sys.modules)
print("FRAMEWORKS:" + ",".join(loaded))
"""


def test_check_and_summary_import_no_framework():
    code = NO_FRAMEWORKS.format(spec=RESNET)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("FRAMEWORKS:")


def test_installed_command_exit_codes(tmp_path):
    bad = write(tmp_path, "bad.dls", BROKEN)
    ok = subprocess.run([sys.executable, "-m", "dlspec.cli", "check", RESNET], capture_output=True, text=True, timeout=60)
    fail = subprocess.run([sys.executable, "-m", "dlspec.cli", "check", bad], capture_output=True, text=True, timeout=60)
    usage = subprocess.run([sys.executable, "-m", "dlspec.cli", "check", "--bogus"], capture_output=True, text=True, timeout=60)
    assert (ok.returncode, fail.returncode, usage.returncode) == (0, 1, 2)
    assert "Traceback" not in fail.stderr and "error[E" in fail.stderr


# --- one CLI: shared options declared once, one wrapper from DlspecError to exit 1 ---------------

CLI_DIR = ROOT / "dlspec" / "cli"


def _options(flag: str) -> dict[str, click.Option]:
    found = {}
    for name, cmd in main.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option) and flag in p.opts:
                found[name] = p
    return found


def test_every_command_is_a_dlspec_command():
    assert main.commands
    for name, cmd in main.commands.items():
        assert isinstance(cmd, Command), f"`dlspec {name}` is not a dlspec.cli.output.Command"


@pytest.mark.parametrize("flag", ["--model", "--json", "--set"])
def test_shared_options_are_declared_once_in_options_py(flag):
    declared = {p.name: p.read_text(encoding="utf-8").count(f'"{flag}"') for p in CLI_DIR.glob("*.py")}
    assert {k: v for k, v in declared.items() if v} == {"options.py": 1}


def test_model_option_means_the_same_in_every_command():
    found = _options("--model")
    assert {"summary", "ir", "compile", "explain", "verify", "train", "features"} <= set(found)
    for name, opt in found.items():
        assert (opt.name, opt.metavar, opt.multiple, opt.required, opt.is_flag) == ("model_name", "NAME", False, False, False), name
        assert "(default: the last" in opt.help, name
    plain = {n for n, o in found.items() if o.help == MODEL_HELP}
    assert plain == {"summary", "ir", "compile", "explain", "verify", "draw", "import-weights"}


def test_json_and_set_options_mean_the_same_in_every_command():
    json_opts = _options("--json")
    assert {"check", "summary", "ir", "evaluate", "explain", "verify"} <= set(json_opts)
    for name, opt in json_opts.items():
        assert (opt.name, opt.is_flag, opt.default) == ("as_json", True, False), name
        assert opt.help.startswith("Print"), name
    set_opts = _options("--set")
    assert {"summary", "ir", "compile", "explain", "verify"} <= set(set_opts)
    for name, opt in set_opts.items():
        assert (opt.name, opt.multiple, opt.metavar, opt.help) == ("sets", True, "KEY=VALUE", SET_HELP), name


def test_help_shows_each_shared_option_with_its_meaning():
    for name, opt in _options("--model").items():
        r = invoke(name, "--help")
        assert r.exit_code == 0
        assert "--model NAME" in r.output and opt.help.split()[0] in r.output, name


LOCATED = Span(file="spec.dls", line=3, column=5, end_line=3, end_column=9)


@pytest.mark.parametrize("name", sorted(main.commands))
@pytest.mark.parametrize("as_json", [False, True])
def test_a_user_error_in_any_command_is_exit_1_with_its_location(name, as_json, monkeypatch, capsys):
    cmd = main.commands[name]
    takes_json = any(p.name == "as_json" for p in cmd.params)

    def fails(**_):
        raise error("E999", "something the user can fix", span=LOCATED, hint="fix it")

    monkeypatch.setattr(cmd, "callback", fails)
    ctx = click.Context(cmd, info_name=name, parent=click.Context(main, info_name="dlspec"))
    ctx.params = {"as_json": True} if as_json and takes_json else {}
    with ctx, pytest.raises(SystemExit) as exit_:
        cmd.invoke(ctx)
    assert exit_.value.code == EXIT_USER
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    if as_json and takes_json:
        [diag] = json.loads(captured.out)
        assert (diag["file"], diag["line"], diag["column"], diag["code"]) == ("spec.dls", 3, 5, "E999")
    else:
        assert "spec.dls:3:5: error[E999]: something the user can fix" in captured.err
        assert "= hint: fix it" in captured.err


def _failing_invocations(tmp_path: Path) -> dict[str, list[str]]:
    """Each command run on something broken: a spec with errors, a missing run folder or file."""
    broken = write(tmp_path, "broken.dls", BROKEN)
    missing_run = str(tmp_path / "no_run")
    return {
        "check": [broken],
        "summary": [broken],
        "ir": [broken],
        "compile": [broken],
        "explain": [broken],
        "verify": [broken],
        "train": [broken, "--out", str(tmp_path / "run")],
        "evaluate": [missing_run],
        "predict": [missing_run, "--input", str(tmp_path / "x.npy")],
        "export": [missing_run, "--target", "onnx", "-o", str(tmp_path / "m.onnx")],
        "sample": [missing_run, "-o", str(tmp_path / "samples")],
        "features": [missing_run, "-o", str(tmp_path / "f.npz")],
        "import": [str(tmp_path / "missing.onnx")],
        "import-weights": [broken, str(tmp_path / "w.pt"), "-o", str(tmp_path / "w.safetensors")],
        "fmt": [write(tmp_path, "unparsable.dls", "model M {\n    input x: float32[batch, 4]\n    output x ->\n")],
        "lsp": ["--log-file", str(tmp_path / "no_folder" / "lsp.log")],
        "draw": [broken, "-o", str(tmp_path / "broken.svg")],
        "search": [broken, "-o", str(tmp_path / "search")],
        "bench": [broken],
    }


def test_every_command_has_a_failing_invocation(tmp_path):
    assert set(_failing_invocations(tmp_path)) == set(main.commands)


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_reports_a_real_user_error_as_exit_1(name, tmp_path):
    args = _failing_invocations(tmp_path)[name]
    r = invoke(name, *args)
    assert r.exit_code == EXIT_USER, r.output
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output and "error[E" in r.output
    if args[0].endswith("broken.dls"):
        assert "broken.dls:4:" in r.output
    else:
        assert str(Path(args[0]).name) in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(n for n, c in main.commands.items() if any(p.name == "as_json" for p in c.params)))
def test_json_commands_print_a_real_user_error_as_json_diagnostics(name, tmp_path):
    args = _failing_invocations(tmp_path)[name]
    r = CliRunner().invoke(main, [name, "--json", *args])
    assert r.exit_code == EXIT_USER, r.output
    diags = json.loads(r.stdout)
    assert diags and all(d["code"].startswith("E") and d["severity"] == "error" for d in diags)
    if args[0].endswith("broken.dls"):
        assert (diags[0]["file"], diags[0]["line"]) == (args[0], 4)
