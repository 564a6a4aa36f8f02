"""`dlspec draw`: the graph in DOT (blocks as clusters, shapes on edges, skips in colour), and
SVG/PNG through Graphviz, with a coded error when `dot` is missing."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from dlspec.cli import main
from dlspec.draw import SKIP_COLOUR, block_paths, main_attrs, to_dot

from .helpers import spec_path


def _resnet18() -> tuple:
    prog, blocks = block_paths(spec_path("resnet18.dls"))
    return prog.models["ResNet18"], blocks


def test_blocks_are_clusters_named_by_path_and_block():
    g, blocks = _resnet18()
    assert blocks["layer1.0"] == "Basic" and blocks["stem"] == "ConvBN" and blocks["basic.downsample"] == "ConvBN"
    dot = to_dot(g, blocks)
    assert 'subgraph "cluster_layer1.0"' in dot and "<b>0 · Basic</b>" in dot
    assert 'subgraph "cluster_layer1"' in dot  # the repetition `Basic(64) * 2 as layer1` holds both
    assert dot.count("subgraph ") == 1 + 8 + 8 * 2 + 3 + 1  # layer1, 8 Basic, their ConvBNs, 3 downsamples, stem


def test_nodes_show_op_and_main_attributes_and_edges_shapes():
    g, blocks = _resnet18()
    dot = to_dot(g, blocks)
    assert "<b>conv</b> conv2d<br/><font point-size=\"8\">out 64, k 7, s 2, pad 3, bias false</font>" in dot
    assert re.search(r'"stem\.bn" -> "relu" \[label=" 64×112×112"\]', dot)
    assert '[shape=invhouse' in dot and "float32[batch, 3, 224, 224]" in dot
    assert '"output:logits" [shape=house' in dot and "float32[batch, 1000]" in dot


def test_each_residual_add_has_one_skip_edge_in_colour():
    g, blocks = _resnet18()
    dot = to_dot(g, blocks)
    skips = [ln for ln in dot.splitlines() if SKIP_COLOUR in ln and "->" in ln]
    assert len(skips) == 8 and all(ln.split("->")[1].strip().startswith('"') and ".add" in ln.split("->")[1]
                                   for ln in skips)
    # the identity skip of layer1.0 comes from the max-pool; a downsampling skip from its ConvBN
    assert any(ln.strip().startswith('"maxpool2d" -> "layer1.0.add"') for ln in skips)
    assert any(ln.strip().startswith('"basic.downsample.bn" -> "basic.add"') for ln in skips)


def test_depth_collapses_blocks_into_one_node():
    g, blocks = _resnet18()
    top = to_dot(g, blocks, depth=0)
    assert "subgraph" in top and top.count("shape=box3d") == 1 + 8  # stem and eight Basic blocks
    assert "<b>0</b> · Basic<br/><font point-size=\"8\">7 layers, 74k params</font>" in top
    assert '"layer1.0" -> "layer1.1" [label=" 64×56×56"]' in top
    one = to_dot(g, blocks, depth=1)
    assert one.count("shape=box3d") == 8 * 2 + 3  # every ConvBN inside a Basic


def test_main_attrs_skip_defaults():
    assert main_attrs("conv2d", {"out_channels": 8, "kernel": 3, "stride": 1, "padding": 0, "dilation": 1,
                                 "groups": 1, "bias": True}) == "out 8, k 3"
    assert main_attrs("dropout", {"p": 0.5}) in ("", "p 0.5")


def test_cli_writes_dot_svg_and_png(tmp_path: Path):
    for name in ("unet.dls", "seq2seq_attention.dls"):
        r = CliRunner().invoke(main, ["draw", str(spec_path(name)), "-o", str(tmp_path / "g.dot")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "g.dot").read_text().startswith("digraph G {")
    r = CliRunner().invoke(main, ["draw", str(spec_path("seq2seq_attention.dls")), "-o", str(tmp_path / "g.svg")])
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "multihead_attention" in svg
    r = CliRunner().invoke(main, ["draw", str(spec_path("resnet18.dls")), "--depth", "0", "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_graphviz_svg_is_a_coded_error_and_dot_still_works(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("dlspec.draw.shutil.which", lambda _: None)
    out = tmp_path / "g.svg"
    r = CliRunner().invoke(main, ["draw", str(spec_path("lenet5.dls")), "-o", str(out)])
    assert r.exit_code == 1 and "error[E923]" in r.output and "apt-get install graphviz" in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []
    r = CliRunner().invoke(main, ["draw", str(spec_path("lenet5.dls")), "--format", "dot", "-o", str(tmp_path / "g.gv")])
    assert r.exit_code == 0 and (tmp_path / "g.gv").read_text().startswith("digraph")


def test_unknown_picture_format(tmp_path: Path):
    r = CliRunner().invoke(main, ["draw", str(spec_path("lenet5.dls")), "-o", str(tmp_path / "g.jpeg")])
    assert r.exit_code == 1 and "error[E908]" in r.output
