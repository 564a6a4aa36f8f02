"""The language server keeping up with typing: re-checking a spec after an edit.

    python bench/bench_lsp.py [--rounds N] [--json]

Each round edits the document (a number in it alternates, so no compilation is reused for the
text itself) and measures, in this process:

  * baseline — a cold check as `dlspec check` does it in-process: `compile_file` on the saved
    file (parse, imports, lowering, no reuse);
  * server   — what the server runs on `didChange`: `Workspace.analyze` on the edited text,
    which also records every layer's type for hovers and inlay hints, and reuses the parsed
    imports of earlier edits.

and, through the real server process over stdio (`dlspec lsp`, driven by pygls' client), the
time from sending `didChange` to receiving its `publishDiagnostics` (round trip, JSON included).

Specs: ResNet-50 (no imports, 175 layers) and digits_multitask.dls (imports digits_cnn.dls).
Ratios are server / baseline per round (paired); the median and IQR over rounds are printed.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlspec.lsp.analysis import Workspace  # noqa: E402
from dlspec.program import compile_file  # noqa: E402

#: (spec, the text edited, its two alternating replacements)
CASES = [
    ("specs/resnet50.dls", "classes: int = 1000", ("classes: int = 1001", "classes: int = 1000")),
    ("specs/digits_multitask.dls", "ConvStage(64) as stage2", ("ConvStage(48) as stage2", "ConvStage(64) as stage2")),
]


def _iqr(xs: list[float]) -> float:
    if len(xs) < 4:
        return 0.0
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def in_process(spec: str, needle: str, edits: tuple[str, str], rounds: int) -> dict:
    path = str(ROOT / spec)
    text = Path(path).read_text(encoding="utf-8")
    assert needle in text, needle
    ws = Workspace()
    ws.analyze(path, text)  # the document as opened
    compile_file(path)  # warm: the grammar and the op catalogue are loaded once per process
    base, server, ratios = [], [], []
    for i in range(rounds):
        edited = text.replace(needle, edits[i % 2])
        t0 = time.perf_counter()
        compile_file(path)
        t1 = time.perf_counter()
        a = ws.analyze(path, edited)
        t2 = time.perf_counter()
        assert not [d for d in a.diagnostics if d.severity == "error"], a.diagnostics
        base.append((t1 - t0) * 1e3)
        server.append((t2 - t1) * 1e3)
        ratios.append((t2 - t1) / (t1 - t0))
    return {"spec": spec, "baseline_ms": statistics.median(base), "server_ms": statistics.median(server),
            "server_ms_iqr": _iqr(server), "ratio": statistics.median(ratios), "ratio_iqr": _iqr(ratios)}


async def round_trip(spec: str, needle: str, edits: tuple[str, str], rounds: int) -> dict:
    from lsprotocol import types as lsp
    from pygls.lsp.client import LanguageClient

    path = ROOT / spec
    text = path.read_text(encoding="utf-8")
    uri = path.resolve().as_uri()
    client = LanguageClient("bench", "1")
    got: asyncio.Queue = asyncio.Queue()

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def _diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
        got.put_nowait(time.perf_counter())

    await client.start_io(sys.executable, "-m", "dlspec.cli", "lsp")
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    client.initialized(lsp.InitializedParams())
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="dlspec", version=1, text=text)))
    await got.get()
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=i + 2),
            content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text.replace(needle, edits[i % 2]))]))
        t1 = await got.get()
        times.append((t1 - t0) * 1e3)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"spec": spec, "round_trip_ms": statistics.median(times), "round_trip_ms_iqr": _iqr(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    results = []
    for spec, needle, edits in CASES:
        r = in_process(spec, needle, edits, args.rounds)
        r.update(asyncio.run(round_trip(spec, needle, edits, args.rounds)))
        results.append(r)
        if not args.json:
            print(f"{spec}: re-check in the server {r['server_ms']:.1f} ms (IQR {r['server_ms_iqr']:.1f}); "
                  f"cold check {r['baseline_ms']:.1f} ms; server/cold {r['ratio']:.2f} (IQR {r['ratio_iqr']:.2f}); "
                  f"didChange → publishDiagnostics over stdio {r['round_trip_ms']:.1f} ms "
                  f"(IQR {r['round_trip_ms_iqr']:.1f})")
    print(json.dumps({"rounds": args.rounds, "results": results}))


if __name__ == "__main__":
    main()
