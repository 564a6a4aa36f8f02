"""Warnings for likely mistakes (dlspec/lint.py, W101–W110): each one where the mistake is, at the
layer, recipe entry or name it is about; none for the correct spelling of the same spec, nor for
any spec of specs/; shown by `dlspec check` (text and --json) without changing its exit code, and
errors under --strict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlspec.backends.targets import target_check
from dlspec.cli import main
from dlspec.errors import Diagnostic, DlspecError
from dlspec.program import compile_file, compile_source
from dlspec.source import SourceFile

from .helpers import ROOT


def lint(text: str, targets: list[str] | None = None) -> list[Diagnostic]:
    """The warnings of a spec that compiles, as `dlspec check` gets them."""
    return compile_source(SourceFile("t.dls", text), lint=True, target_check=target_check(targets)).warnings


def codes(text: str, targets: list[str] | None = None) -> list[str]:
    return [d.code for d in lint(text, targets)]


def at(text: str, code: str, targets: list[str] | None = None) -> list[tuple[int, int, int]]:
    """(line, column, end column) of each warning `code`."""
    return [span(d) for d in lint(text, targets) if d.code == code]


def where(text: str, line: int, snippet: str, nth: int = 1) -> tuple[int, int, int]:
    """(line, column, end column) of the `nth` `snippet` on `line` (1-based) of `text`."""
    row, col = text.splitlines()[line - 1], -1
    for _ in range(nth):
        col = row.index(snippet, col + 1)
    return (line, col + 1, col + 1 + len(snippet))


def span(d: Diagnostic) -> tuple[int, int, int]:
    return (d.span.line, d.span.column, d.span.end_column)


def classifier(head: str, loss: str, metrics: str = "[accuracy]") -> str:
    return f"""model Net(classes: int = 3) {{
    input x: float32[batch, 4]
    y = x -> dense(16) -> relu() -> {head}
    output y
}}

train Net {{
    data    = builtin("iris")
    loss    = {loss}
    metrics = {metrics}
}}
"""


# ---- W101, W102, W109, W110: the last layer against the loss --------------------------------------


def test_w101_softmax_into_cross_entropy_at_the_softmax_with_the_loss_in_a_note():
    text = classifier("dense(classes) -> softmax()", "cross_entropy()")
    [w] = lint(text)
    assert w.code == "W101" and w.severity == "warning"
    assert span(w) == where(text, 3, "softmax()")
    assert "`cross_entropy` expects logits" in w.message and "applied twice" in w.message
    assert w.notes == ["the loss `cross_entropy` is at t.dls:9:15"]
    assert w.hint.startswith("drop the softmax: train on the logits")


def test_w101_an_activation_argument_is_at_the_argument():
    text = classifier("dense(classes, activation=softmax)", "cross_entropy()")
    [w] = lint(text)
    assert w.code == "W101" and span(w) == where(text, 3, "activation=softmax")


@pytest.mark.parametrize("head", ["dense(classes)", "dense(classes) -> log_softmax()", "dense(classes) -> tanh()"])
def test_w101_not_for_logits_nor_log_softmax(head):
    # log_softmax is idempotent: cross_entropy of log-probabilities is the loss of the logits
    assert codes(classifier(head, "cross_entropy()")) == []


def test_w101_sigmoid_into_cross_entropy_and_through_reshapes_and_dropout():
    text = classifier("dense(classes) -> sigmoid() -> dropout(0.0) -> flatten()", "cross_entropy()")
    [w] = lint(text)
    assert w.code == "W101" and "reads probabilities in (0, 1) as logits" in w.message
    assert span(w) == where(text, 3, "sigmoid()")


def test_w101_per_output_loss_of_a_dictionary_is_located_at_its_entry():
    text = """model Two {
    input x: float32[batch, 4]
    h = x -> dense(16) -> relu()
    a = h -> dense(3) -> softmax()
    b = h -> dense(2)
    output a, b
}

train Two {
    data = builtin("iris")
    loss = {a: cross_entropy(), b: cross_entropy()}
}
"""
    [w] = lint(text)
    assert w.code == "W101" and "output `a`" in w.message
    assert span(w) == where(text, 4, "softmax()")
    assert w.notes == ["the loss `cross_entropy` is at t.dls:11:16"]


def test_w101_default_loss_is_named_as_the_default():
    text = classifier("dense(classes) -> softmax()", "cross_entropy()").replace("    loss    = cross_entropy()\n", "")
    [w] = lint(text)
    assert w.code == "W101" and w.notes == ["the loss is `cross_entropy`, the default"]


def test_w101_dice_after_sigmoid():
    text = """model Seg {
    input image: float32[batch, 1, 32, 32]
    mask = image -> conv2d(8, 3, padding=1) -> relu() -> conv2d(1, 1) -> sigmoid()
    output mask
}

train Seg {
    data = builtin("segmentation")
    loss = dice()
}
"""
    assert at(text, "W101") == [where(text, 3, "sigmoid()")]
    assert codes(text.replace(" -> sigmoid()", "")) == []


def test_w101_distillation_teacher_ending_in_softmax():
    text = """model Teacher {
    input x: float32[batch, 4]
    y = x -> dense(32) -> relu() -> dense(3) -> softmax()
    output y
}

model Student {
    input x: float32[batch, 4]
    y = x -> dense(3)
    output y
}

train distill KD {
    teacher         = Teacher()
    student         = Student()
    teacher_weights = "teacher.safetensors"
    data            = builtin("iris")
    loss            = cross_entropy()
}
"""
    ws = [w for w in lint(text) if w.code == "W101"]
    assert [span(w) for w in ws] == [where(text, 3, "softmax()")]
    assert "the teacher `Teacher`" in ws[0].message and "distillation expects logits" in ws[0].message
    # a student ending in softmax: once, by its loss
    both = text.replace("y = x -> dense(3)\n", "y = x -> dense(3) -> softmax()\n")
    ws = [w for w in lint(both) if w.code == "W101"]
    assert [span(w) for w in ws] == [where(both, 9, "softmax()"), where(both, 3, "softmax()")]
    assert "`cross_entropy` expects logits" in ws[0].message and "the teacher" in ws[1].message


def test_w102_sigmoid_into_bce_with_logits():
    text = classifier("dense(1) -> sigmoid()", "bce_with_logits()", "[]")
    [w] = lint(text)
    assert w.code == "W102" and "the sigmoid is applied twice" in w.message
    assert span(w) == where(text, 3, "sigmoid()")
    assert codes(text.replace(" -> sigmoid()", "")) == []


def test_w102_logits_into_bce_at_the_loss():
    text = classifier("dense(1)", "bce()", "[]")
    [w] = lint(text)
    assert w.code == "W102" and "`bce` expects probabilities" in w.message
    assert span(w) == where(text, 9, "bce()")
    assert w.notes == [f"dense `dense_1` is at t.dls:3:{where(text, 3, 'dense(1)')[1]}"]
    assert "bce_with_logits()" in w.hint
    assert codes(classifier("dense(1) -> sigmoid()", "bce()", "[]")) == []


def test_w109_nll_needs_log_softmax():
    text = classifier("dense(classes)", "nll()")
    [w] = lint(text)
    assert w.code == "W109" and "logits" in w.message and span(w) == where(text, 9, "nll()")
    [w] = lint(classifier("dense(classes) -> softmax()", "nll()"))
    assert w.code == "W109" and "probabilities" in w.message
    assert codes(classifier("dense(classes) -> log_softmax()", "nll()")) == []


def test_w110_relu_logits():
    text = classifier("dense(classes) -> relu()", "cross_entropy()")
    [w] = lint(text)
    assert w.code == "W110" and "never negative" in w.message and span(w) == where(text, 3, "relu()", 2)
    # a regression output may well be non-negative
    assert "W110" not in codes(classifier("dense(1) -> relu()", "mse()", "[mse]"))


# ---- W103: the GAN discriminator ------------------------------------------------------------------

GAN = """model G {
    input z: float32[batch, 8]
    image = z -> dense(64) -> reshape([1, 8, 8]) -> sigmoid()
    output image
}

model D {
    input image: float32[batch, 1, 8, 8]
    score = image -> flatten() -> dense(1)HEAD
    output score
}

train gan Pair {
    generator     = G()
    discriminator = D()
    data          = builtin("digits")
LOSS}
"""


def gan(head: str, loss: str | None) -> str:
    return GAN.replace("HEAD", head).replace("LOSS", f"    loss          = {loss}\n" if loss else "")


def test_w103_sigmoid_discriminator_with_the_standard_loss():
    text = gan(" -> sigmoid()", "standard")
    [w] = lint(text)
    assert w.code == "W103" and span(w) == where(text, 9, "sigmoid()")
    assert "applied twice" in w.message and "(0.5, 0.73)" in w.message
    assert w.notes == ["the loss `standard` is at t.dls:17:21"]
    [w] = lint(gan(" -> sigmoid()", None))  # standard is the default
    assert w.code == "W103" and w.notes == ["the loss `standard` is the default"]


def test_w103_hinge_and_wgan_take_raw_scores():
    for loss in ("hinge", "wgan_gp"):
        [w] = lint(gan(" -> sigmoid()", loss))
        assert w.code == "W103" and f"`{loss}` GAN loss takes unbounded scores" in w.message


def test_w103_not_for_a_logit_discriminator_nor_the_generator_sigmoid():
    assert codes(gan("", "standard")) == []


# ---- W104: metrics --------------------------------------------------------------------------------


def test_w104_sigmoid_single_channel_into_accuracy_at_the_metric():
    text = classifier("dense(1) -> sigmoid()", "bce()", "[mse, accuracy]")
    [w] = lint(text)
    assert w.code == "W104" and "every prediction is class 1" in w.message
    assert span(w) == where(text, 10, "accuracy")
    assert w.notes == [f"`sigmoid` is at t.dls:3:{where(text, 3, 'sigmoid()')[1]}"]


def test_w104_not_for_softmax_over_classes_nor_logits():
    # argmax over several classes reads probabilities as well as logits
    assert "W104" not in codes(classifier("dense(classes) -> softmax()", "nll()", "[accuracy, macro_f1]"))
    assert codes(classifier("dense(1)", "bce_with_logits()", "[accuracy, macro_f1]")) == []


# ---- W105: dropout last ---------------------------------------------------------------------------


def test_w105_dropout_as_the_last_layer():
    text = classifier("dense(classes) -> dropout(0.3)", "cross_entropy()")
    assert at(text, "W105") == [where(text, 3, "dropout(0.3)")]
    assert codes(text) == ["W105"]
    assert codes(classifier("dropout(0.3) -> dense(classes)", "cross_entropy()")) == []
    assert codes(classifier("dense(classes) -> dropout(0.0)", "cross_entropy()")) == []


def test_w105_through_a_flatten_and_in_a_model_without_recipe():
    text = """model M {
    input x: float32[batch, 3, 8, 8]
    y = x -> conv2d(4, 3) -> dropout(0.5) -> flatten()
    output y
}
"""
    assert at(text, "W105") == [where(text, 3, "dropout(0.5)")]


# ---- W106, W107: unused names and blocks -----------------------------------------------------------


def test_w106_unused_value_and_input_at_their_names():
    text = """model M {
    input x: float32[batch, 4], mask: float32[batch, 4]
    h = x -> dense(8)
    spare = h -> dense(2)
    y = h -> dense(3)
    output y
}
"""
    ws = [w for w in lint(text) if w.code == "W106"]
    assert [span(w) for w in ws] == [where(text, 2, "mask"), where(text, 4, "spare")]
    assert ws[0].message == "input `mask` of `M` is never used"
    assert ws[1].message == "`spare` is assigned in `M` but never used"


def test_w106_not_for_underscores_partial_unpacking_loops_or_a_derived_models_weights():
    text = """block Pair {
    input x
    a, b = split(x, 2)
    _unused = x -> dense(2)
    output a
}

model M {
    input x: float32[batch, 4]
    y = x
    for i in range(2) {
        y = y -> dense(4)
    }
    output y -> Pair()
}

model Tuned from M {
    weights = "missing.safetensors"
}
"""
    assert "W106" not in codes(text)


def test_w106_in_a_sequential_block():
    text = """block B(c: int) {
    wide = c * 4
    dense(c)
}

model M {
    input x: float32[batch, 4]
    output x -> B(3)
}
"""
    assert at(text, "W106") == [where(text, 2, "wide")]


def test_w107_unused_block_at_its_name():
    text = """block Used(c: int) {
    dense(c)
}

block Inner(c: int) {
    dense(c)
}

block Outer(c: int) {
    Inner(c)
}

block Forgotten(c: int) {
    dense(c)
}

model M {
    input x: float32[batch, 4]
    output x -> Used(3) -> Outer(3)
}
"""
    ws = [w for w in lint(text) if w.code == "W107"]
    assert [span(w) for w in ws] == [where(text, 13, "Forgotten")]
    assert ws[0].message == "block `Forgotten` is defined but never used"


def test_w107_not_for_a_library_of_blocks():
    assert codes("block A(c: int) {\n    dense(c)\n}\n\nblock B(c: int) {\n    dense(c)\n}\n") == []


# ---- W108: backends -------------------------------------------------------------------------------

ADAPTIVE = """model Pooled {{
    input image: float32[batch, 3, {h}, {w}]
    y = image -> conv2d(8, 3) -> adaptive_avgpool2d({size}) -> flatten() -> dense(10)
    output y
}}
"""


def test_w108_adaptive_pooling_after_symbolic_sizes_for_keras_and_onnx():
    text = ADAPTIVE.format(h="h", w="w", size=4)
    ws = [w for w in lint(text) if w.code == "W108"]
    assert [span(w) for w in ws] == [where(text, 3, "adaptive_avgpool2d(4)")] * 2
    assert "cannot be compiled for keras" in ws[0].message and "[E762]" in ws[0].message
    assert "cannot be compiled for onnx" in ws[1].message and "[E711]" in ws[1].message
    assert " at t.dls" not in ws[0].message  # the location is the warning's, not repeated in its text


def test_w108_follows_the_targets_and_the_sizes():
    symbolic = ADAPTIVE.format(h="h", w="w", size=4)
    assert codes(symbolic, targets=["torch"]) == []
    assert ["keras" in w.message for w in lint(symbolic, targets=["tf"])] == [True]  # an alias
    assert codes(ADAPTIVE.format(h=32, w=32, size=4)) == []
    # output size 1 is global pooling, which ONNX has for any size; Keras still needs the sizes
    assert ["keras" in w.message for w in lint(ADAPTIVE.format(h="h", w="w", size=1))] == [True]


def test_w108_an_op_a_named_backend_lacks():
    text = """model Seq {
    input tokens: int64[batch, 12]
    y = tokens -> embedding(20, 8) -> lstm(16) -> select(1, -1) -> dense(2)
    output y
}
"""
    assert codes(text) == []
    ws = lint(text, targets=["caffe"])
    assert ws and {w.code for w in ws} == {"W108"} and all("for caffe" in w.message for w in ws)
    assert {w.span.line for w in ws} == {3}


# ---- the program and the command line ----------------------------------------------------------------


def test_only_asked_for_and_not_beside_errors():
    text = classifier("dense(classes) -> softmax()", "cross_entropy()")
    assert compile_source(SourceFile("t.dls", text)).warnings == []  # summary, train, ...: no lint
    broken = text.replace("output y", "output y\n    z = x -> dense(0)")  # an error beside the mistakes
    with pytest.raises(DlspecError) as exc:
        compile_source(SourceFile("t.dls", broken), lint=True)
    assert [d.severity for d in exc.value.diagnostics] == ["error"]


def test_no_spec_of_ours_gets_a_likely_mistake_warning():
    specs = sorted((ROOT / "specs").glob("*.dls"))
    assert len(specs) > 10
    for spec in specs:
        found = [f"{d.span}: {d.code} {d.message}" for d in compile_file(spec, lint=True).warnings
                 if d.code.startswith("W1")]
        assert found == [], found


@pytest.fixture
def mistaken(tmp_path: Path) -> str:
    p = tmp_path / "net.dls"
    p.write_text(classifier("dense(classes) -> softmax()", "cross_entropy()"))
    return str(p)


def test_check_shows_warnings_and_exits_0(mistaken):
    r = CliRunner().invoke(main, ["check", mistaken])
    assert r.exit_code == 0, r.output
    assert f"{mistaken}: ok (Net; 1 recipe)" in r.output
    column = where(Path(mistaken).read_text(), 3, "softmax()")[1]
    assert f"{mistaken}:3:{column}: warning[W101]: output `y` ends in `softmax`" in r.output
    assert "^^^^^^^^^" in r.output and "1 warning" in r.output


def test_check_json_carries_the_warning_with_its_span(mistaken):
    r = CliRunner().invoke(main, ["check", "--json", mistaken])
    assert r.exit_code == 0
    [d] = json.loads(r.output)
    line, column, end = where(Path(mistaken).read_text(), 3, "softmax()")
    assert (d["code"], d["severity"], d["file"], d["line"], d["column"], d["end_line"], d["end_column"]) == \
        ("W101", "warning", mistaken, line, column, line, end)


def test_check_strict_makes_warnings_errors(mistaken, tmp_path):
    r = CliRunner().invoke(main, ["check", "--strict", mistaken])
    assert r.exit_code == 1
    assert "error[W101]" in r.output and "1 error" in r.output and "warning" not in r.output
    r = CliRunner().invoke(main, ["check", "--strict", "--json", mistaken])
    assert r.exit_code == 1 and [d["severity"] for d in json.loads(r.output)] == ["error"]
    clean = tmp_path / "clean.dls"
    clean.write_text(classifier("dense(classes)", "cross_entropy()"))
    assert CliRunner().invoke(main, ["check", "--strict", str(clean)]).exit_code == 0


def test_check_target_option(tmp_path):
    p = tmp_path / "pooled.dls"
    p.write_text(ADAPTIVE.format(h="h", w="w", size=4))
    r = CliRunner().invoke(main, ["check", "--json", str(p)])
    assert r.exit_code == 0 and [d["code"] for d in json.loads(r.output)] == ["W108", "W108"]
    r = CliRunner().invoke(main, ["check", "--json", "--target", "torch", str(p)])
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = CliRunner().invoke(main, ["check", "--strict", "--target", "onnx", str(p)])
    assert r.exit_code == 1 and "error[W108]" in r.output and "for onnx" in r.output
    assert CliRunner().invoke(main, ["check", "--target", "nosuch", str(p)]).exit_code == 2

