"""`dlspec predict` on the artifacts `dlspec export` writes: OpenVINO IR (.xml + .bin), a
torch.export program (.pt2) and a LiteRT flatbuffer (.tflite), each run by its own runtime with the
loader the export's self-check uses. Each computes what predict on the run folder computes (PyTorch)
at batch 1 (.npy) and batch 17 (.npz by input name) within 1e-4; a damaged artifact, a wrong input
name or shape, an option that chooses how a run folder runs and a missing runtime are coded errors.

One digits CNN is trained for two epochs and exported once to each target (~30 s in all): the
whole file is in the slow tier."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli import main

from .helpers import ROOT, quiet

pytestmark = pytest.mark.slow

#: target -> the artifact's suffix, and the name predict gives its output (the run folder's: `logits`;
#: a torch.export program returning one tensor and TensorFlow's converter leave it unnamed)
TARGETS = {"openvino": (".xml", "logits"), "pt2": (".pt2", "output_0"), "litert": (".tflite", "output_0")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from dlspec.train import session

    out = tmp_path_factory.mktemp("predict_artifacts") / "digits"
    return session.train(ROOT / "specs" / "digits_cnn.dls", epochs=2, out=out, progress=False, echo=quiet).run


@pytest.fixture(scope="module")
def artifacts(trained: Path) -> dict[str, Path]:
    from dlspec.export import export

    folder = trained.parent / "exported"
    folder.mkdir()
    return {t: export(trained, t, folder / f"model{suffix}", echo=quiet) for t, (suffix, _) in TARGETS.items()}


@pytest.fixture(scope="module")
def rows(trained: Path) -> dict[int, Path]:
    """Validation rows of the run: batch 1 as a .npy, batch 17 as an .npz holding `image`."""
    from dlspec.deploy.check import rows_of, run_data
    from dlspec.train.run import read_run

    graph, cfg, config = read_run(trained)
    val = run_data(trained, cfg, config, graph).val
    np.save(trained.parent / "one.npy", rows_of(val, graph, 1)[0])
    np.savez(trained.parent / "many.npz", image=rows_of(val, graph, 17, start=3)[0])
    return {1: trained.parent / "one.npy", 17: trained.parent / "many.npz"}


def _predict(model: Path, inputs: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    res = CliRunner().invoke(main, ["predict", str(model), "--input", str(inputs), "--output", str(out), *extra])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("target", list(TARGETS))
def test_each_artifact_predicts_what_the_run_folder_predicts(trained: Path, artifacts: dict[str, Path],
                                                             rows: dict[int, Path], target: str, tmp_path: Path):
    name = TARGETS[target][1]
    for n, inputs in rows.items():
        want = _predict(trained, inputs, tmp_path / f"run{n}.npz")["logits"]
        got = _predict(artifacts[target], inputs, tmp_path / f"{target}{n}.npz")
        assert list(got) == [name]
        assert got[name].shape == want.shape == (n, 10)
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(want[0], want[1])  # the rows differ, so equal outputs are no accident


def test_pt2_takes_backend_torch(artifacts: dict[str, Path], rows: dict[int, Path], tmp_path: Path):
    got = _predict(artifacts["pt2"], rows[17], tmp_path / "a.npz", "--backend", "torch", "--device", "cpu")
    want = _predict(artifacts["pt2"], rows[17], tmp_path / "b.npz")
    np.testing.assert_array_equal(got["output_0"], want["output_0"])


def _truncated(path: Path, folder: Path, keep: float, part: str = "") -> Path:
    """A copy of the artifact (with OpenVINO's .bin) whose file `part` (default: the artifact)
    keeps only the first `keep` of its bytes."""
    copy = folder / path.name
    shutil.copy(path, copy)
    if path.suffix == ".xml":
        shutil.copy(path.with_suffix(".bin"), copy.with_suffix(".bin"))
    damaged = copy.with_suffix(part) if part else copy
    data = damaged.read_bytes()
    damaged.write_bytes(data[:int(len(data) * keep)])
    return copy


@pytest.mark.parametrize("target, keep, part, says", [
    ("openvino", 0.5, "", "Error parsing"),
    ("openvino", 0.5, ".bin", "weights"),
    ("pt2", 0.5, "", "not a zip archive"),
    ("litert", 0.5, "", "Flatbuffer"),
    ("litert", 0.0, "", "LiteRT cannot load"),
])
def test_a_truncated_artifact_is_a_coded_error(artifacts: dict[str, Path], rows: dict[int, Path], tmp_path: Path,
                                               target: str, keep: float, part: str, says: str):
    damaged = _truncated(artifacts[target], tmp_path, keep, part)
    res = CliRunner().invoke(main, ["predict", str(damaged), "--input", str(rows[1])])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "error[E728]" in res.output and str(damaged) in res.output and says in res.output, res.output
    assert "export it again" in res.output


def test_a_pt2_program_torch_cannot_read_prints_no_traceback(artifacts: dict[str, Path], rows: dict[int, Path],
                                                             tmp_path: Path):
    """The last percent cut off: still a zip archive to Python, one torch.export.load rejects after
    logging a traceback of its own."""
    damaged = _truncated(artifacts["pt2"], tmp_path, 0.99)
    assert zipfile.is_zipfile(damaged)
    res = subprocess.run([sys.executable, "-m", "dlspec.cli", "predict", str(damaged), "--input", str(rows[1])],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1 and "error[E728]" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_an_aoti_package_is_refused(rows: dict[int, Path], tmp_path: Path):
    package = tmp_path / "model.pt2"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("model/data/aotinductor/model/model.so", b"")
    res = CliRunner().invoke(main, ["predict", str(package), "--input", str(rows[1])])
    assert res.exit_code == 1 and "E728" in res.output and "AOTInductor" in res.output, res.output


@pytest.mark.parametrize("target", list(TARGETS))
def test_inputs_are_checked_against_the_artifacts(artifacts: dict[str, Path], tmp_path: Path, target: str):
    x = np.zeros((2, 1, 8, 8), np.float32)
    np.savez(tmp_path / "names.npz", img=x, mask=x)
    res = CliRunner().invoke(main, ["predict", str(artifacts[target]), "--input", str(tmp_path / "names.npz")])
    assert res.exit_code == 1 and "E638" in res.output, res.output
    assert "['image']" in res.output and "'img'" in res.output
    np.save(tmp_path / "shape.npy", np.zeros((2, 1, 8, 9), np.float32))
    res = CliRunner().invoke(main, ["predict", str(artifacts[target]), "--input", str(tmp_path / "shape.npy")])
    assert res.exit_code == 1 and "E639" in res.output and "[2, 1, 8, 9]" in res.output, res.output
    assert "float32[?, 1, 8, 8]" in res.output
    np.save(tmp_path / "ints.npy", np.zeros((2, 1, 8, 8), np.int64))
    res = CliRunner().invoke(main, ["predict", str(artifacts[target]), "--input", str(tmp_path / "ints.npy")])
    assert res.exit_code == 1 and "E639" in res.output and "int64" in res.output, res.output


@pytest.mark.parametrize("args", [["--backend", "onnx"], ["--provider", "cpu"], ["--device", "cuda"]])
@pytest.mark.parametrize("target", list(TARGETS))
def test_run_folder_options_are_refused(artifacts: dict[str, Path], rows: dict[int, Path], target: str,
                                        args: list[str]):
    res = CliRunner().invoke(main, ["predict", str(artifacts[target]), "--input", str(rows[1]), *args])
    assert res.exit_code == 1 and "E717" in res.output, res.output


def test_backend_torch_is_refused_for_openvino_and_litert(artifacts: dict[str, Path], rows: dict[int, Path]):
    for target in ("openvino", "litert"):
        res = CliRunner().invoke(main, ["predict", str(artifacts[target]), "--input", str(rows[1]),
                                        "--backend", "torch"])
        assert res.exit_code == 1 and "E717" in res.output and "--backend torch" in res.output, res.output


def test_a_missing_artifact_is_e715(rows: dict[int, Path], tmp_path: Path):
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "gone.tflite"), "--input", str(rows[1])])
    assert res.exit_code == 1 and "E715" in res.output and "gone.tflite" in res.output, res.output


BLOCK = "import sys; [sys.modules.__setitem__(m, None) for m in sys.argv[1].split(',')]; del sys.argv[1]; " \
        "from dlspec.cli import main; main()"


@pytest.mark.parametrize("target, blocked, package", [("openvino", "openvino", "openvino"),
                                                      ("litert", "ai_edge_litert", "ai-edge-litert")])
def test_a_missing_runtime_is_e720_with_the_install_line(artifacts: dict[str, Path], rows: dict[int, Path],
                                                         target: str, blocked: str, package: str):
    res = subprocess.run([sys.executable, "-c", BLOCK, blocked, "predict", str(artifacts[target]), "--input",
                          str(rows[1])], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "E720" in res.stderr and f"`{package}`" in res.stderr and "pip install 'dlspec[deploy]'" in res.stderr
    assert "Traceback" not in res.stderr
