"""`dlspec lsp`: the real server process over stdio, driven by a real LSP client (pytest-lsp),
on the specs in specs/ and on small files written here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from dlspec.fmt import format_source

from .helpers import ROOT, spec_path

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "dlspec.cli", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=pytest_lsp.client_capabilities("visual-studio-code"), root_uri=ROOT.as_uri()))
    yield
    await lsp_client.shutdown_session()


def _pos(text: str, needle: str, offset: int = 0) -> lsp.Position:
    """The position of `needle` (plus `offset` characters) in the text."""
    i = text.index(needle) + offset
    line = text.count("\n", 0, i)
    return lsp.Position(line=line, character=i - (text.rfind("\n", 0, i) + 1))


async def _open(client: LanguageClient, path: Path, text: str | None = None) -> tuple[str, str]:
    text = path.read_text(encoding="utf-8") if text is None else text
    uri = path.resolve().as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="dlspec", version=1, text=text)))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return uri, text


BROKEN = """block Head(classes: int) {
    dense(classes)
}

model Broken {
    input x: float32[batch, 3, 32, 32]
    y = x -> conv2d(8, 3) -> Head(10)
    z = x -> conv2 (8, 3)
    output y
}
"""


async def test_diagnostics_with_code_range_hint_and_related_locations(client: LanguageClient, tmp_path_factory):
    path = tmp_path_factory.mktemp("lsp") / "broken.dls"
    path.write_text(BROKEN)
    uri, text = await _open(client, path)
    diags = {d.code: d for d in client.diagnostics[uri]}
    assert set(diags) == {"E302", "E101"}
    shape = diags["E302"]
    assert shape.severity == lsp.DiagnosticSeverity.Error and shape.source == "dlspec"
    assert shape.range.start == _pos(text, "dense(classes)")  # inside the block ...
    assert "hint: did you forget `flatten()`" in shape.message
    [call_site] = [r for r in shape.related_information if "used here" in r.message]
    assert call_site.location.range.start == _pos(text, "Head(10)")  # ... with the call site behind it
    unknown = diags["E101"]
    assert unknown.range.start == _pos(text, "conv2 (8, 3)") and "did you mean `conv2d`?" in unknown.message


async def test_code_actions_apply_mechanical_hints(client: LanguageClient, tmp_path_factory):
    path = tmp_path_factory.mktemp("lsp") / "fixes.dls"
    path.write_text(BROKEN)
    uri, text = await _open(client, path)
    diags = client.diagnostics[uri]
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=diags[0].range,
        context=lsp.CodeActionContext(diagnostics=list(diags))))
    edits = {a.title: a.edit.changes[uri][0] for a in actions}
    rename = edits["Replace `conv2` with `conv2d`"]
    assert rename.new_text == "conv2d" and rename.range.start == _pos(text, "conv2 (8")
    assert rename.range.end == _pos(text, "conv2 (8", 5)
    insert = edits["Insert `flatten() ->`"]
    assert insert.new_text == "flatten() -> " and insert.range.start == _pos(text, "dense(classes)")


async def test_diagnostics_follow_edits(client: LanguageClient, tmp_path_factory):
    path = tmp_path_factory.mktemp("lsp") / "edited.dls"
    path.write_text(BROKEN)
    uri, text = await _open(client, path)
    assert client.diagnostics[uri]
    fixed = text.replace("conv2 (8, 3)", "conv2d(8, 3)").replace("    dense(classes)", "    flatten()\n    dense(classes)")
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=fixed)]))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    # the errors are gone; what stays is the warning that `z` is never used (as `dlspec check` says)
    left = list(client.diagnostics[uri])
    assert [(d.code, d.severity) for d in left] == [("W106", lsp.DiagnosticSeverity.Warning)]
    assert "`z`" in left[0].message


LIB = "# A classifier head.\nblock Head(classes: int) {\n    dense(classes)\n}\n"
MAIN = """from "lib.dls" import Head

model M {
    input x: float32[batch, 3, 8, 8]
    y = x -> conv2d(4, 3) -> Head(10)
    output y
}
"""


async def test_an_error_in_an_imported_block_and_unsaved_imports(client: LanguageClient, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lsp")
    (folder / "lib.dls").write_text(LIB)
    main_uri, main_text = await _open(client, folder / "main.dls", MAIN)
    [d] = client.diagnostics[main_uri]
    assert d.code == "E302" and d.range.start == _pos(main_text, "Head(10)")  # shown at the call site ...
    lib_uri = (folder / "lib.dls").resolve().as_uri()
    assert d.related_information[0].location.uri == lib_uri  # ... with the place in lib.dls related
    assert d.related_information[0].location.range.start == _pos(LIB, "dense(classes)")
    hover = await _hover(client, main_uri, _pos(main_text, "Head(10)", 1))
    assert "block Head(classes: int)" in hover and "A classifier head." in hover
    await _open(client, folder / "lib.dls")
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)  # main.dls, which imports it
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(  # fixed in the editor, not saved
        text_document=lsp.VersionedTextDocumentIdentifier(uri=lib_uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=LIB.replace("    dense", "    flatten()\n    dense"))]))
    for _ in range(2):  # lib.dls, then main.dls, which imports it
        await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert list(client.diagnostics[main_uri]) == [] and list(client.diagnostics[lib_uri]) == []


async def test_warnings_are_warnings(client: LanguageClient):
    uri, _ = await _open(client, spec_path("digits_finetune.dls"))
    [w] = client.diagnostics[uri]
    assert (w.code, w.severity) == ("W501", lsp.DiagnosticSeverity.Warning)


async def _hover(client: LanguageClient, uri: str, pos: lsp.Position) -> str:
    h = await client.text_document_hover_async(lsp.HoverParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=pos))
    assert h is not None
    return h.contents.value


async def test_hover_shows_the_output_type_parameters_and_flops(client: LanguageClient):
    uri, text = await _open(client, spec_path("resnet18.dls"))
    stem = await _hover(client, uri, _pos(text, "ConvBN(64, k=7", 8))
    # conv 7×7×3×64 = 9,408 weights, batch norm 2×64: the stem's 9,536 parameters
    assert "`float32[batch, 64, 112, 112]`" in stem and "9,536 parameters" in stem and "FLOPs per example" in stem
    fc = await _hover(client, uri, _pos(text, "dense(classes)", 2))
    assert "**dense** → `float32[batch, 1000]`" in fc and "513,000 parameters" in fc
    skip = await _hover(client, uri, _pos(text, "main + skip", 1))  # a block's value: one type per use
    assert "used 8 times" in skip and "`float32[batch, 512, 7, 7]`" in skip and "`float32[batch, 64, 56, 56]`" in skip


async def test_hover_on_a_block_name_shows_its_signature(client: LanguageClient):
    uri, text = await _open(client, spec_path("resnet18.dls"))
    basic = await _hover(client, uri, _pos(text, "Basic(128, stride=2)", 1))
    assert "block Basic(out: int, stride: int = 1)" in basic and "`float32[batch, 128, 28, 28]`" in basic
    model = await _hover(client, uri, _pos(text, "model ResNet18", 7))
    assert "model ResNet18(classes: int = 1000)" in model and "11,689,512 parameters" in model


async def test_inlay_hints_show_each_layer_lines_shape(client: LanguageClient):
    uri, text = await _open(client, spec_path("resnet18.dls"))
    n = text.count("\n")
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri),
        range=lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=n, character=0))))
    by_line = {h.position.line: h.label for h in hints}
    fc_line = _pos(text, "dense(classes) as fc").line
    assert by_line[fc_line] == "float32[batch, 1000]"
    assert by_line[_pos(text, "-> Basic(128, stride=2)").line] == "float32[batch, 128, 28, 28]"
    end = [h for h in hints if h.position.line == fc_line][0].position.character
    assert end == len(text.splitlines()[fc_line])
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"dlspec": {"inlayHints": False}}))
    off = await client.text_document_inlay_hint_async(lsp.InlayHintParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri),
        range=lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=n, character=0))))
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"dlspec": {"inlayHints": True}}))
    assert list(off) == []


async def test_definition_and_references_across_files(client: LanguageClient):
    uri, text = await _open(client, spec_path("digits_multitask.dls"))
    loc = await client.text_document_definition_async(lsp.DefinitionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=_pos(text, "ConvStage(32)", 2)))
    lib = spec_path("digits_cnn.dls")
    assert loc.uri == lib.resolve().as_uri()
    assert loc.range.start == _pos(lib.read_text(), "ConvStage(out", 0)
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=_pos(text, "ConvStage(64)", 1),
        context=lsp.ReferenceContext(include_declaration=True)))
    places = sorted((Path(r.uri).name, r.range.start.line) for r in refs)
    here = [(Path(uri).name, i) for i, ln in enumerate(text.splitlines()) if "ConvStage" in ln]
    there = [("digits_cnn.dls", i) for i, ln in enumerate(lib.read_text().splitlines()) if "ConvStage" in ln]
    assert places == sorted(here + there) and len(places) >= 6


async def test_definition_of_a_local_value(client: LanguageClient):
    uri, text = await _open(client, spec_path("resnet18.dls"))
    loc = await client.text_document_definition_async(lsp.DefinitionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=_pos(text, "main + skip", 8)))
    assert loc.range.start == _pos(text, "skip = x")


async def _complete(client: LanguageClient, uri: str, pos: lsp.Position) -> dict[str, lsp.CompletionItem]:
    r = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=pos))
    items = r.items if isinstance(r, lsp.CompletionList) else r
    return {i.label: i for i in items}


async def test_completion(client: LanguageClient, tmp_path_factory):
    text = ("block Stage(out: int) {\n    conv2d(out, 3, \n}\n\nmodel M {\n    input x: float32[batch, 1, 8, 8]\n"
            "    y = x -> \n    output y\n}\n\ntrain M {\n    optimizer = \n    \n    metrics = [\n}\n")
    path = tmp_path_factory.mktemp("lsp") / "typing.dls"
    uri, _ = await _open(client, path, text)
    attrs = await _complete(client, uri, _pos(text, "conv2d(out, 3, ", 15))
    assert attrs["padding="].detail == 'int | tuple[int, ...] | "same" | "valid" = 0'
    assert attrs["out_channels="].detail == "int (required)" and "units=" not in attrs
    layers = await _complete(client, uri, _pos(text, "y = x -> ", 9))
    assert {"conv2d", "dense", "lstm", "Stage", "x", "input", "output"} <= set(layers)
    assert layers["Stage"].detail == "block Stage(out: int)"
    values = await _complete(client, uri, _pos(text, "optimizer = ", 12))
    assert {"adam", "sgd", "adamw"} <= set(values) and "lr=0.001" in values["adam"].detail
    keys = await _complete(client, uri, _pos(text, "optimizer = \n    ", 17))
    assert {"optimizer", "schedule", "epochs", "loss", "data", "early_stop", "checkpoint"} <= set(keys)
    assert keys["epochs"].detail == "int = 10"
    metrics = await _complete(client, uri, _pos(text, "metrics = [", 11))
    assert {"accuracy", "macro_f1", "iou"} <= set(metrics)


async def test_document_symbols(client: LanguageClient):
    uri, _ = await _open(client, spec_path("resnet18.dls"))
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri)))
    assert [(s.name, s.kind) for s in symbols] == [("ConvBN", lsp.SymbolKind.Function), ("Basic", lsp.SymbolKind.Function),
                                                   ("ResNet18", lsp.SymbolKind.Class)]
    basic = symbols[1]
    assert [c.name for c in basic.children] == ["out", "stride", "x", "main", "skip", "downsample"]
    uri, _ = await _open(client, spec_path("seq2seq_attention.dls"))
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri)))
    assert [(s.name, s.kind) for s in symbols] == [("Seq2SeqAttention", lsp.SymbolKind.Class),
                                                   ("Seq2SeqAttention", lsp.SymbolKind.Event)]


async def test_formatting(client: LanguageClient, tmp_path_factory):
    text = "model M{\ninput x:float32[batch,4]\n  output x->relu()}\n"
    uri, _ = await _open(client, tmp_path_factory.mktemp("lsp") / "fmt.dls", text)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), options=lsp.FormattingOptions(tab_size=4, insert_spaces=True)))
    [edit] = edits
    assert edit.new_text == format_source(text) == "model M {\n    input x: float32[batch, 4]\n    output x -> relu()\n}\n"
    assert edit.range.start == lsp.Position(line=0, character=0) and edit.range.end == lsp.Position(line=3, character=0)
