"""Data never runs as code: hostile run folders, spec file names and layer names.

Every payload here would create a canary file if it ran; each test asserts the canary is absent
and that the command ends in a coded error (or, where the payload is only text, works normally)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from dlspec.backends import keras as kb  # noqa: E402
from dlspec.backends import pysource  # noqa: E402
from dlspec.backends import torch as tb  # noqa: E402
from dlspec.cli import main  # noqa: E402
from dlspec.errors import DlspecError  # noqa: E402
from dlspec.importers.onnx import Names  # noqa: E402
from dlspec.ir.check import MODULE_ATTRIBUTES, layer_name_problem  # noqa: E402
from dlspec.program import compile_file, compile_source  # noqa: E402
from dlspec.source import SourceFile  # noqa: E402
from dlspec.train.run import atomic_write_json, atomic_write_text, read_state, recipe_json  # noqa: E402
from dlspec.weights import save_numpy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

MLP = """model Mlp {
    input x: float32[batch, 4]
    y = x -> dense(8) -> relu() -> dense(3)
    output y
}
train Mlp {
    data = builtin("iris")
    loss = cross_entropy()
    optimizer = adam(lr=0.01)
    epochs = 1
    batch = 16
}
"""


def _payload(canary: Path) -> str:
    return f"__import__('os').system('touch {canary}') or 8"


def _run_folder(tmp: Path, mutate=None) -> Path:
    """A run folder as `dlspec train` leaves it, with its graph.json passed through `mutate`."""
    spec = tmp / "mlp.dls"
    spec.write_text(MLP)
    prog = compile_file(spec)
    cfg = prog.recipes[-1]
    graph = prog.recipe_graphs[cfg.name]
    module = tb.build_module(graph)
    run = tmp / "run"
    run.mkdir()
    data = json.loads(graph.model_dump_json())
    if mutate is not None:
        mutate(data)
    atomic_write_text(run / "graph.json", json.dumps(data))
    atomic_write_json(run / "config.json", {"spec": str(spec), "backend": "torch", "kind": "supervised",
                                            "recipe": recipe_json(cfg)})
    save_numpy(tb.canonical_state(module, graph), run / "best.safetensors")
    return run


def _commands(run: Path, tmp: Path) -> list[list[str]]:
    x = tmp / "x.npy"
    np.save(x, np.zeros((2, 4), dtype=np.float32))
    return [["evaluate", str(run)], ["predict", str(run), "--input", str(x)],
            ["export", str(run), "--target", "torchscript", "-o", str(tmp / "m.pt")]]


@pytest.mark.parametrize("where", ["attr", "output_value", "node_name"])
def test_hostile_graph_json_is_a_coded_error_and_runs_nothing(tmp_path: Path, where: str):
    canary = tmp_path / "CANARY"

    def mutate(g: dict) -> None:
        if where == "attr":
            g["nodes"][0]["attrs"]["units"] = _payload(canary)
        elif where == "output_value":
            g["outputs"][0]["value"] = _payload(canary)
        else:
            g["nodes"][0]["name"] = f"a')\nimport os; os.system('touch {canary}')\n#"

    run = _run_folder(tmp_path, mutate)
    for args in _commands(run, tmp_path):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, (args, res.output)
        assert "E635" in res.output and "graph.json" in res.output, res.output
        assert "Traceback" not in res.output
    assert not canary.exists()


def test_text_fields_of_a_run_folder_stay_text(tmp_path: Path):
    """An output name and a `source` holding triple quotes and code: the model builds and runs,
    the generated source keeps them inside the docstring, nothing runs."""
    canary = tmp_path / "CANARY"
    code = f'"""\nimport os; os.system("touch {canary}")\n"""'

    def mutate(g: dict) -> None:
        g["source"] = code
        g["outputs"][0]["name"] = f'y""" + __import__("os").system("touch {canary}") + """'

    run = _run_folder(tmp_path, mutate)
    for args in _commands(run, tmp_path):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, (args, res.output)
    assert not canary.exists()


def test_spec_file_name_with_triple_quotes_never_runs(tmp_path: Path):
    canary = tmp_path / "CANARY"
    name = f'a"""if exec("open(\'{canary.name}\', \'w\')") else """.dls'
    spec = tmp_path / name
    spec.write_text(MLP)
    prog = compile_file(spec)
    graph = prog.models["Mlp"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for src in (tb.generate(graph), kb.generate(graph)):
            namespace: dict = {"__name__": "generated"}
            exec(compile(src, "<generated>", "exec"), namespace)  # what importing the compiled file does
        module = tb.build_module(graph)
        assert module(torch.zeros(2, 4)).shape == (2, 3)
    finally:
        os.chdir(cwd)
    assert not canary.exists()


def test_reserved_and_shadowing_names_build():
    """A model named like a helper of the generated module, a value named like a builtin, an
    infinite epsilon: the module builds and computes."""
    src = """model _same_pad {
        input print: float32[batch, 2, 8, 8]
        y = print -> conv2d(4, 3, stride=2, padding=same) -> batchnorm2d(eps=1e999) -> flatten() -> dense(3)
        output y
    }"""
    graph = compile_source(SourceFile("m.dls", src)).models["_same_pad"]
    code = tb.generate(graph)
    assert 'float("inf")' in code
    module = tb.build_module(graph).eval()
    assert module(torch.ones(2, 2, 8, 8)).shape == (2, 3)
    namespace: dict = {}
    exec(compile(kb.generate(graph), "<keras>", "exec"), namespace)


def test_layer_name_rule_matches_torch_and_the_importer_follows_it():
    public = {n for n in dir(torch.nn.ModuleDict()) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES
    assert all(layer_name_problem(n) for n in public)
    assert layer_name_problem("conv1") is None and layer_name_problem("class") is None
    assert layer_name_problem("_hidden") and layer_name_problem("a-b")
    names = Names(layers=True)
    assert names.take("forward", "layer") == "forward_layer"
    assert names.take("state_dict", "layer") == "state_dict_layer"


@pytest.mark.parametrize("source, why", [
    ("import os\n", "import of os"),
    ("x = __import__('os')\n", "'__import__'"),
    ("import torch\nx = torch.load('w.pt')\n", "call of torch.load"),
    ("import torch\nx = torch.relu.__globals__\n", "attribute '__globals__'"),
    ("import torch\ny = torch.ones(1)\nz = y.numpy()\n", "method 'numpy'"),
    ("x = (lambda: 1)()\n", "a call of an expression"),
    ("def f():\n    return lambda: 1\n", "Lambda"),
])
def test_source_gate_refuses_what_the_generator_never_writes(source: str, why: str):
    with pytest.raises(pysource.UnsafeSourceError, match=why.replace("(", r"\(")):
        pysource.check_module_source(source, tb.CALLS, tb.METHODS, tb.GENERATED_NAMES)


@pytest.mark.parametrize("spec", sorted(p.name for p in (ROOT / "specs").glob("*.dls")))
def test_every_spec_passes_the_source_gate(spec: str):
    prog = compile_file(ROOT / "specs" / spec)
    for graph in [*prog.models.values(), *prog.recipe_graphs.values()]:
        for inplace in (True, False):
            pysource.check_module_source(tb.generate(graph, inplace=inplace), tb.CALLS, tb.METHODS, tb.GENERATED_NAMES)


@pytest.mark.parametrize("value, expected", [
    (float("inf"), 'float("inf")'), (float("-inf"), '-float("inf")'), (1e-5, "1e-05"), ((3,), "(3,)"),
    ("a'\"\n", '"a\'\\"\\n"'), ({"k": [1, None, True]}, '{"k": [1, None, True]}'),
])
def test_literal_evaluates_back(value, expected):
    text = pysource.literal(value)
    assert text == expected
    assert eval(text, {"__builtins__": {"float": float}}) == value  # noqa: S307  (our literal, tested)


def test_doc_text_cannot_end_a_docstring():
    hostile = 'x"""\nimport os\n\'\'\'\\'
    src = f'"""{pysource.doc_text(hostile)}"""\nRESULT = 1\n'
    namespace: dict = {}
    exec(compile(src, "<doc>", "exec"), namespace)
    assert namespace["RESULT"] == 1 and "import os" in namespace.get("__doc__", "")
    assert "\n" not in pysource.doc_text(hostile)


def test_checkpoint_state_fields_are_validated(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"epoch": 3.5, "bad_epochs": 0}))
    with pytest.raises(DlspecError) as e:
        read_state(path)
    d = e.value.diagnostics[0]
    assert d.code == "E632" and "epoch" in d.message and str(path) in d.message
    path.write_text("{ not json")
    with pytest.raises(DlspecError) as e:
        read_state(path)
    assert e.value.diagnostics[0].code == "E632" and "not JSON" in e.value.diagnostics[0].message
    path.write_text(json.dumps({"epoch": 2, "bad_epochs": 1, "schedule": {}}))
    assert read_state(path)["epoch"] == 2


def test_damaged_config_names_the_file_and_field(tmp_path: Path):
    run = _run_folder(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["recipe"]["epochs"] = "many"
    (run / "config.json").write_text(json.dumps(config))
    res = CliRunner().invoke(main, ["evaluate", str(run)])
    assert res.exit_code == 1 and "E635" in res.output and "config.json" in res.output and "epochs" in res.output
    shutil.rmtree(run)
