"""Golden files: the generated PyTorch and Keras source of example specs, and the IR after each
optimization pass, compared byte for byte with files under `tests/fixtures/golden/`.

* `codegen/<spec>.<target>.py`: what `dlspec compile --target <target> specs/<spec>.dls` prints
  (opt-level 1, the command's default) for the specs in `CODEGEN_SPECS`.
* `passes/<pass>/<case>.dls` → `<case>.ir.txt`: the changes the pass reports and the IR after it
  runs alone on the case's model, in the readable form of `ir_text`. Every pass of
  `dlspec.passes.PASSES` has at least one case, and every case must change something.

The only normalization: the repository's absolute path is written relative to it, so the files
are the same in every checkout. (`tests/fixtures/golden/ruff.toml` keeps linters and formatters
off the generated files.) After an intended change of output, regenerate every golden file
with `python -m pytest tests/test_golden.py --update-golden` and review the diff before committing.

Generating source imports no framework, so this module is part of the fast tier."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dlspec.api import Spec
from dlspec.ir.graph import Graph
from dlspec.passes import PASSES, Reports, optimize, run_passes
from dlspec.program import compile_file
from dlspec.source import Span

from .helpers import ROOT, SPEC_DIR

GOLDEN_DIR = ROOT / "tests" / "fixtures" / "golden"
CODEGEN_DIR = GOLDEN_DIR / "codegen"
PASSES_DIR = GOLDEN_DIR / "passes"

# One spec of each kind of network: an MLP, convnets, recurrent models, residual and U-Net
# graphs, attention.
CODEGEN_SPECS = (
    "iris_mlp",
    "lenet5",
    "digits_cnn",
    "sentiment_bilstm",
    "sunspots_gru",
    "digits_resnet",
    "unet",
    "transformer_classifier",
    "seq2seq_attention",
)
TARGETS = ("torch", "keras")
CODEGEN_OPT_LEVEL = 1


def relative(text: str) -> str:
    """`text` with the repository's absolute path written relative to the repository."""
    return text.replace(ROOT.as_posix() + "/", "")


# ---- what the golden files hold -----------------------------------------------------------------


def codegen_source(spec: str, target: str) -> str:
    """The source `dlspec compile --target <target>` writes for `specs/<spec>.dls`."""
    path = SPEC_DIR / f"{spec}.dls"
    graph = Spec(path, compile_file(path)).graph()
    graph, _, _ = optimize(graph, CODEGEN_OPT_LEVEL)
    if target == "keras":
        from dlspec.backends.keras import generate as keras_generate

        return relative(keras_generate(graph))
    from dlspec.backends.torch import generate as torch_generate

    return relative(torch_generate(graph))


def _where(span: Span | None, case: Path) -> str:
    if span is None:
        return ""
    file = "" if Path(span.file) == case else relative(Path(span.file).resolve().as_posix()) + ":"
    return f"  @{file}{span.line}:{span.column}"


def _attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# The Graph fields `ir_text` prints; a new field must be added to the text (and this set).
IR_TEXT_FIELDS = frozenset({"name", "source", "args", "inputs", "outputs", "nodes", "values", "frozen",
                            "base_weights", "replaced", "span", "blocks"})


def ir_text(graph: Graph, case: Path) -> str:
    """A readable, complete text of an IR graph: one line per input, node, output and parameter."""
    lines = [f"model {graph.name}{_where(graph.span, case)}"]
    if graph.source is not None:
        lines.append(f"  source {relative(Path(graph.source).resolve().as_posix())}")
    for key in ("args", "frozen", "base_weights", "replaced"):
        value = getattr(graph, key)
        if value:
            lines.append(f"  {key} {_attr(value)}")
    for path, use in graph.blocks.items():
        lines.append(f"  block {path}: {use.block}({', '.join(f'{k}={_attr(v)}' for k, v in use.args.items())})")
    for gi in graph.inputs:
        lines.append(f"  input {gi.name}: {gi.type}{_where(gi.span, case)}")
    produced = {gi.name for gi in graph.inputs}
    for node in graph.nodes:
        outs = ", ".join(f"{v}: {graph.values[v]}" for v in node.outputs)
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in sorted(node.attrs.items()))
        lines.append(f"  {outs} = {node.op}[{node.name}]({', '.join(node.inputs)}"
                     f"{'; ' + attrs if attrs else ''}){_where(node.span, case)}")
        produced.update(node.outputs)
    for name in sorted(set(graph.values) - produced):
        lines.append(f"  value {name}: {graph.values[name]} (no producer)")
    for go in graph.outputs:
        lines.append(f"  output {go.name} = {go.value}{_where(go.span, case)}")
    for p in graph.params():
        kind = "buffer" if p.buffer else "param" if p.trainable else "frozen param"
        lines.append(f"  {kind} {p.path} [{', '.join(str(d) for d in p.shape)}]")
    return "\n".join(lines) + "\n"


def run_pass(name: str, case: Path) -> tuple[Graph, Graph, Reports]:
    """The case's model (the last of the file), and the graph after running the pass `name` alone."""
    graph = Spec(case, compile_file(case)).graph()
    after, _, reports = run_passes(graph, (name,))
    return graph, after, reports


def pass_golden(name: str, case: Path) -> str:
    _, after, reports = run_pass(name, case)
    lines = [f"# the IR of {relative(case.as_posix())} after the pass `{name}` alone", "changes:"]
    for item in reports.items:
        lines += [f"  {c.kind} {', '.join(c.nodes)}: {c.detail}" for c in item.changes]
    return "\n".join(lines) + "\n" + ir_text(after, case)


def pass_cases() -> list[tuple[str, Path]]:
    return [(case.parent.name, case) for case in sorted(PASSES_DIR.glob("*/*.dls"))]


def goldens() -> dict[Path, Callable[[], str]]:
    """Every golden file and how its expected text is produced."""
    files: dict[Path, Callable[[], str]] = {}
    for spec in CODEGEN_SPECS:
        for target in TARGETS:
            files[CODEGEN_DIR / f"{spec}.{target}.py"] = lambda s=spec, t=target: codegen_source(s, t)
    for name, case in pass_cases():
        files[case.with_suffix(".ir.txt")] = lambda n=name, c=case: pass_golden(n, c)
    return files


GOLDENS = goldens()


# ---- the comparison -----------------------------------------------------------------------------


def check_golden(path: Path, actual: str, update: bool) -> None:
    """Compare `actual` with the golden file byte for byte (or rewrite it with --update-golden)."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode("utf-8"))
        return
    rel = relative(path.as_posix())
    if not path.exists():
        pytest.fail(f"{rel} is missing; create it with `python -m pytest tests/test_golden.py --update-golden`")
    expected = path.read_bytes().decode("utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                            fromfile=f"{rel} (golden)", tofile=f"{rel} (generated now)"))
        pytest.fail(f"{rel} differs from what is generated now:\n{diff}\nIf the change is intended, run "
                    "`python -m pytest tests/test_golden.py --update-golden` and commit the new files.",
                    pytrace=False)


def _id(path: Path) -> str:
    return path.relative_to(GOLDEN_DIR).as_posix()


@pytest.mark.parametrize("path", sorted(GOLDENS), ids=_id)
def test_golden_file(path: Path, update_golden: bool):
    check_golden(path, GOLDENS[path](), update_golden)


def test_no_stale_golden_files(update_golden: bool):
    on_disk = set(CODEGEN_DIR.glob("*.py")) | set(PASSES_DIR.glob("*/*.ir.txt"))
    stale = on_disk - set(GOLDENS)
    if update_golden:
        for p in stale:
            p.unlink()
        return
    assert not stale, f"golden files nothing generates (remove them): {sorted(map(_id, stale))}"


# ---- invariants of every case -------------------------------------------------------------------


def test_every_pass_has_a_golden_case():
    assert {name for name, _ in pass_cases()} == set(PASSES)


@pytest.mark.parametrize("name, case", pass_cases(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_each_pass_case_changes_the_graph_and_keeps_its_outputs(name: str, case: Path):
    before, after, reports = run_pass(name, case)
    assert reports.items[0].changes, f"{case.name} does not make `{name}` change anything"
    assert after != before
    assert [str(after.values[o.value]) for o in after.outputs] == [str(before.values[o.value]) for o in before.outputs]


def test_ir_text_prints_every_graph_field():
    assert set(Graph.model_fields) == IR_TEXT_FIELDS


def test_a_changed_output_fails_with_a_unified_diff(tmp_path):
    golden = tmp_path / "golden.py"
    golden.write_text("a = 1\nb = 2\n", encoding="utf-8")
    check_golden(golden, "a = 1\nb = 2\n", update=False)
    with pytest.raises(pytest.fail.Exception) as failure:
        check_golden(golden, "a = 1\nb = 3\n", update=False)
    assert "-b = 2\n+b = 3" in str(failure.value) and "--update-golden" in str(failure.value)


NO_FRAMEWORK = """
import sys
from tests.test_golden import GOLDENS
for produce in GOLDENS.values():
    produce()
print("FRAMEWORKS:" + ",".join(sorted(m for m in ("torch", "tensorflow", "keras", "jax") if m in sys.modules)))
"""


def test_golden_outputs_import_no_framework():
    proc = subprocess.run([sys.executable, "-c", NO_FRAMEWORK], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("FRAMEWORKS:")


@pytest.mark.parametrize("target", TARGETS)
def test_codegen_golden_is_what_dlspec_compile_prints(target: str):
    from click.testing import CliRunner

    from dlspec.cli import main

    r = CliRunner().invoke(main, ["compile", "--target", target, str(SPEC_DIR / "digits_resnet.dls")])
    assert r.exit_code == 0, r.output
    assert relative(r.stdout) == codegen_source("digits_resnet", target) + "\n"
