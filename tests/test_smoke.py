from dlspec import compile_file

from .helpers import spec_path


def test_resnet18_parameter_count_matches_torchvision():
    prog = compile_file(spec_path("resnet18.dls"))
    g = prog.models["ResNet18"]
    assert sum(p.numel for p in g.params() if not p.buffer) == 11_689_512
