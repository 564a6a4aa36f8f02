"""`dlspec.load(...).build(target)` and `.source(target)` for every backend, from one weights file."""

import numpy as np
import pytest

import dlspec
from dlspec.backends.torch import save_weights

from .helpers import spec_path

SPEC = spec_path("digits_cnn.dls")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    spec = dlspec.load(SPEC)
    module = spec.build("torch")
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    save_weights(module, spec.graph(), path)
    return path


def test_every_target_builds_the_same_function(weights):
    import torch

    from dlspec.backends.onnx import make_session

    spec = dlspec.load(SPEC)
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    ref = spec.build("torch", weights=weights).eval()(torch.from_numpy(x)).detach().numpy()
    session = make_session(spec.build("onnx", weights=weights))
    got_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
    got_keras = np.asarray(spec.build("keras", weights=weights)(x))
    scale = np.abs(ref).max()
    assert np.abs(got_onnx - ref).max() / scale < 1e-5
    assert np.abs(got_keras - ref).max() / scale < 1e-4


def test_sources_name_their_framework():
    spec = dlspec.load(SPEC)
    assert "import torch" in spec.source("torch")
    assert "keras" in spec.source("keras")
    assert 'producer_name: "dlspec"' in spec.source("onnx")
