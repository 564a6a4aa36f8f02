"""The run folder has one owner (`dlspec/train/run.py`): one versioned config.json for every
backend and program, one reader, one weights rule, one atomic-write helper (`dlspec/io.py`), and
the job folder data-parallel workers read instead of compiling the spec again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli import main
from dlspec.errors import DlspecError
from dlspec.io import atomic_write, atomic_write_text
from dlspec.train import session
from dlspec.train.run import CONFIG_VERSION, best_weights, read_config, read_run

from .helpers import quiet, spec_path

TINY = '''
model Tiny {
    input x: float32[batch, 4]
    output x -> dense(8) as fc1 -> relu() -> dense(3) as head
}
train Tiny {
    data      = builtin("iris", split=[0.6, 0.2, 0.2])
    optimizer = sgd(lr=0.05)
    epochs    = 2
    batch     = 32
    metrics   = [accuracy]
    seed      = 1
}
'''


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runfolder")
    (root / "tiny.dls").write_text(TINY)
    session.train(root / "tiny.dls", out=root / "run", progress=False, echo=quiet)
    return root / "run"


def test_config_json_is_versioned_and_names_program_and_backend(tiny_run: Path):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["version"] == CONFIG_VERSION == 2
    assert {"version", "spec", "kind", "backend", "recipe", "device", "data", "preprocessing"} <= set(config)
    assert (config["kind"], config["backend"]) == ("supervised", "torch")
    graph, cfg, read = read_run(tiny_run)
    assert graph.name == "Tiny" and cfg.epochs == 2 and read["version"] == 2


def test_a_folder_written_before_versions_still_loads(tiny_run: Path, tmp_path: Path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("graph.json", "best.safetensors"):
        (old / name).write_bytes((tiny_run / name).read_bytes())
    config = json.loads((tiny_run / "config.json").read_text())
    for key in ("version", "kind"):  # as the TensorFlow trainer wrote it before: no kind either
        config.pop(key)
    (old / "config.json").write_text(json.dumps(config))
    cfg, read = read_config(old)
    assert read["version"] == 1 and read["kind"] == "supervised" and cfg.name == "Tiny"
    assert session.evaluate(old) == session.evaluate(tiny_run)


def test_a_newer_version_is_refused_by_name(tiny_run: Path, tmp_path: Path):
    new = tmp_path / "new"
    new.mkdir()
    for name in ("graph.json", "best.safetensors"):
        (new / name).write_bytes((tiny_run / name).read_bytes())
    config = json.loads((tiny_run / "config.json").read_text())
    config["version"] = 7
    (new / "config.json").write_text(json.dumps(config))
    with pytest.raises(DlspecError) as info:
        read_config(new)
    assert info.value.code == "E635" and "version 7" in info.value.message and "upgrade" in info.value.hint
    res = CliRunner().invoke(main, ["evaluate", str(new)])
    assert res.exit_code == 1 and "version 7" in res.output and "Traceback" not in res.output
    config["version"] = "one"
    (new / "config.json").write_text(json.dumps(config))
    with pytest.raises(DlspecError) as info:
        read_config(new)
    assert "field `version`" in info.value.message


def test_the_weights_rule_best_then_last_then_a_generator(tmp_path: Path):
    with pytest.raises(DlspecError) as info:
        best_weights(tmp_path)
    assert info.value.code == "E636"
    assert best_weights(tmp_path, missing_ok=True) == tmp_path / "best.safetensors"
    for name, want in (("generator.safetensors", "generator"), ("last.safetensors", "last"),
                       ("best.safetensors", "best")):
        (tmp_path / name).write_bytes(b"")
        assert best_weights(tmp_path).name == f"{want}.safetensors"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "a" / "file.txt"
    atomic_write_text(target, "good")

    def torn(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, torn)
    assert target.read_text() == "good"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_workers_read_the_graph_recipe_and_data_the_launcher_wrote(tmp_path: Path):
    from dlspec.data import load_data
    from dlspec.program import compile_file
    from dlspec.train.distributed import read_job, write_job

    for spec in ("digits_multitask.dls", "iris_mlp.dls"):
        program = compile_file(spec_path(spec))
        cfg = program.recipes[-1].model_copy(update={"epochs": 2})
        graph = program.recipe_graphs[cfg.name]
        bundle = load_data(cfg.data, cfg.seed, spec_path(spec).parent)
        jobdir = tmp_path / spec
        jobdir.mkdir()
        job = {"run": str(tmp_path / "run")}
        write_job(jobdir, job, graph, cfg, bundle)
        g2, cfg2, b2 = read_job(jobdir, json.loads((jobdir / "job.json").read_text()))
        assert g2 == graph
        assert cfg2.model_dump(exclude={"span"}) == cfg.model_dump(exclude={"span"}) and cfg2.epochs == 2
        for name, part in bundle.splits.items():
            other = b2.splits[name]
            assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(part.x, other.x))
            ys, ys2 = (part.y, other.y) if isinstance(part.y, dict) else ({"": part.y}, {"": other.y})
            assert ys.keys() == ys2.keys() and all(np.array_equal(ys[k], ys2[k]) for k in ys)
        for field in ("task", "num_classes", "description", "name", "input_names", "classes"):
            assert getattr(b2, field) == getattr(bundle, field), field
