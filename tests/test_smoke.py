from dlspec import compile_file


def test_resnet18_parameter_count_matches_torchvision():
    prog = compile_file("specs/resnet18.dls")
    g = prog.models["ResNet18"]
    assert sum(p.numel for p in g.params() if not p.buffer) == 11_689_512
