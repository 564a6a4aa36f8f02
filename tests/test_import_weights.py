"""`dlspec import-weights`: a state dict written by a program that knows nothing of dlspec (here a
plain PyTorch ResNet written in torchvision's layout) loads into a spec whose layers carry the
same names, and the spec then computes what that program computes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlspec.cli import main

from .helpers import spec_path

torch = pytest.importorskip("torch")
nn = torch.nn


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (the stride on the 3x3), with its attribute names."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != width * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, blocks=(3, 4, 6, 3), classes=1000, base=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, (n, stride) in enumerate(zip(blocks, (1, 2, 2, 2)), start=1):
            width = base * 2 ** (i - 1)
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, width, stride if j == 0 else 1))
                cin = width * 4
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


SMALL_SPEC = """
block Bottleneck(width: int, stride: int = 1) {
    input x
    main = x -> conv2d(width, kernel=1, bias=false) as conv1 -> batchnorm2d() as bn1 -> relu()
        -> conv2d(width, kernel=3, stride=stride, padding=1, bias=false) as conv2 -> batchnorm2d() as bn2 -> relu()
        -> conv2d(width * 4, kernel=1, bias=false) as conv3 -> batchnorm2d() as bn3
    skip = x if stride == 1 and x.channels == width * 4
        else x -> conv2d(width * 4, kernel=1, stride=stride, bias=false) as downsample.0 -> batchnorm2d() as downsample.1
    output relu(main + skip)
}

model Small(classes: int = 7) {
    input image: float32[batch, 3, 32, 32]
    h = image -> conv2d(8, kernel=7, stride=2, padding=3, bias=false) as conv1 -> batchnorm2d() as bn1
        -> relu() -> maxpool2d(3, stride=2, padding=1)
    for (i, n) in enumerate([1, 2, 1, 1], start=1) {
        for j in range(n) {
            h = h -> Bottleneck(8 * 2 ** (i - 1), stride=(1 if i == 1 else 2) if j == 0 else 1) as "layer{i}.{j}"
        }
    }
    output logits = h -> global_avgpool2d() -> flatten() -> dense(classes) as fc
}
"""


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics (not the identity a fresh model has), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def _run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _spec_logits(spec: Path, weights: Path, x: np.ndarray, sets: dict | None = None, backend: str = "torch"):
    import dlspec

    s = dlspec.load(spec, **(sets or {}))
    m = s.build(backend, weights=weights)
    if backend == "torch":
        with torch.no_grad():
            return m.eval()(torch.from_numpy(x)).numpy()
    return np.asarray(m(x))


@pytest.fixture()
def small(tmp_path):
    spec = tmp_path / "small.dls"
    spec.write_text(SMALL_SPEC, encoding="utf-8")
    ref = _randomized(ResNet(blocks=(1, 2, 1, 1), classes=7, base=8))
    return spec, ref


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_torchvision_layout_weights_load_by_name_and_compute_the_same(tmp_path, small, fmt):
    spec, ref = small
    src = tmp_path / f"ref.{fmt}"
    if fmt == "pt":
        torch.save(ref.state_dict(), src)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(src))
    out = tmp_path / "imported.safetensors"
    r = _run("import-weights", str(spec), str(src), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):r.output.rindex("}") + 1])
    assert report["matched"] == report["total"] == len([k for k in ref.state_dict() if "num_batches" not in k])
    assert len(report["ignored"]) == sum(1 for k in ref.state_dict() if k.endswith("num_batches_tracked"))
    assert report["unused"] == [] and report["initialized"] == []
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    got = _spec_logits(spec, out, x)
    assert np.abs(got - want).max() < 1e-5 * max(1.0, np.abs(want).max())
    assert np.abs(want).max() > 1e-3  # the comparison is not between two zero outputs


def test_a_prefix_is_renamed_and_a_new_head_is_initialized(tmp_path, small):
    spec, ref = small
    sd = {"module." + k: v for k, v in ref.state_dict().items()}
    src = tmp_path / "dp.pt"
    torch.save({"state_dict": sd, "epoch": 3}, src)  # a training checkpoint: the state dict under a key
    out = tmp_path / "w.safetensors"
    r = _run("import-weights", str(spec), str(src), "-o", str(out))
    assert r.exit_code == 1 and "E513" in r.output and "--rename module.=" in r.output
    assert not out.exists()
    r = _run("import-weights", str(spec), str(src), "-o", str(out), "--rename", "module.=", "--skip", "fc",
             "--set", "classes=3")
    assert r.exit_code == 0, r.output
    assert "initialized (not taken from the file): fc.weight, fc.bias" in r.output
    assert "module.fc.weight" in r.output  # unused, and said so
    from dlspec.weights import load_numpy

    w = load_numpy(out)
    assert w["fc.weight"].shape == (3, 64 * 4)  # layer4: width 8 * 2 ** 3, expansion 4
    np.testing.assert_array_equal(w["layer2.1.conv2.weight"], sd["module.layer2.1.conv2.weight"].numpy())


def test_a_wrong_shape_or_a_missing_tensor_is_listed_and_nothing_is_written(tmp_path, small):
    spec, ref = small
    sd = dict(ref.state_dict())
    sd["layer3.0.conv2.weight"] = torch.zeros(5, 5, 3, 3)
    del sd["fc.bias"]
    src = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(src))
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"a good file")
    r = _run("import-weights", str(spec), str(src), "-o", str(out))
    assert r.exit_code == 1
    assert "E513" in r.output and "`layer3.0.conv2.weight` is [5, 5, 3, 3] in the file, the model needs [32, 32, 3, 3]" \
        in r.output and "missing `fc.bias`" in r.output
    assert out.read_bytes() == b"a good file"  # nothing half-written over it
    del sd["layer3.0.conv2.weight"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(src))
    r = _run("import-weights", str(spec), str(src), "-o", str(out), "--allow-missing")
    assert r.exit_code == 0, r.output
    assert "initialized (not taken from the file): layer3.0.conv2.weight, fc.bias" in r.output


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, small):
    spec, _ = small
    marker = tmp_path / "ran"
    src = tmp_path / "evil.pt"
    torch.save({"conv1.weight": _Hostile(marker)}, src, pickle_module=pickle)
    r = _run("import-weights", str(spec), str(src), "-o", str(tmp_path / "w.safetensors"))
    assert r.exit_code == 1 and "E512" in r.output
    assert not marker.exists()


@pytest.mark.parametrize("args, code", [
    (["--rename", "module."], "E514"),
    (["--rename", "=x"], "E514"),
])
def test_bad_options_are_coded_errors(tmp_path, small, args, code):
    spec, ref = small
    src = tmp_path / "w.pt"
    torch.save(ref.state_dict(), src)
    r = _run("import-weights", str(spec), str(src), "-o", str(tmp_path / "o.safetensors"), *args)
    assert r.exit_code == 1 and code in r.output


@pytest.mark.parametrize("name, data", [("w.pt", b"PK\x03\x04 truncated"), ("w.safetensors", b"\x10\x00\x00"),
                                         ("w.npz", b"x")])
def test_unreadable_files_are_coded_errors(tmp_path, small, name, data):
    spec, _ = small
    src = tmp_path / name
    src.write_bytes(data)
    r = _run("import-weights", str(spec), str(src), "-o", str(tmp_path / "o.safetensors"))
    assert r.exit_code == 1 and "E512" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_resnet50_spec_loads_a_torchvision_layout_resnet50_by_name(tmp_path):
    ref = _randomized(ResNet(), seed=3)
    src = tmp_path / "resnet50.pt"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "resnet50.safetensors"
    r = _run("import-weights", str(spec_path("resnet50.dls")), str(src), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "matched 267 of 267 model tensors" in r.output
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    got = _spec_logits(spec_path("resnet50.dls"), out, x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
