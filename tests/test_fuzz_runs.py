"""Fuzzing run-folder loading: a run folder is untrusted data (people share them). Every mutation of
a real run folder's files — a JSON value replaced by another type, a huge number, code-like text, a
key deleted, a file truncated or its bytes flipped, a safetensors header changed — ends in a
`DlspecError` with well-formed diagnostics, or in a valid evaluation, within the fuzzers' time
limit; and no payload written into the folder ever runs (a canary file would appear).

The suite runs a bounded, derandomized sample; long runs use the same variables as
tests/test_fuzz.py (DLSPEC_FUZZ_EXAMPLES, DLSPEC_FUZZ_SEED).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlspec.errors import DlspecError

from .fuzz_inputs import assert_well_formed, time_limit
from .helpers import quiet, spec_path
from .test_fuzz import fuzz

CANARY = "dlspec_fuzz_canary"
#: values a mutation puts in place of a JSON value: other types, out-of-range numbers, and text
#: that would run if anything evaluated it
PAYLOADS = [None, True, -1, 0, 2**70, 1e300, -1e-300, "", "x" * 300, [], {}, [[[]]], {"a": {"b": 1}},
            f"__import__('pathlib').Path('{CANARY}').touch() or 8",
            f'a"""\nimport pathlib; pathlib.Path("{CANARY}").touch()\n"""',
            "forward", "../../etc/passwd", "nan", "Infinity"]
FILES = ("config.json", "graph.json", "best.safetensors", "last.safetensors")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A real run folder: the iris MLP trained for one epoch."""
    from dlspec.train.session import train

    out = tmp_path_factory.mktemp("run") / "iris"
    train(spec_path("iris_mlp.dls"), epochs=1, out=out, progress=False, echo=quiet)
    assert (out / "best.safetensors").is_file() or (out / "last.safetensors").is_file()
    return out


def _paths(value, prefix=()):
    """Every path into a JSON value (keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _set(value, path, new, delete: bool):
    if not path:
        return new
    parent = value
    for p in path[:-1]:
        parent = parent[p]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    elif delete and isinstance(parent, list):
        parent.pop(path[-1])
    else:
        parent[path[-1]] = new
    return value


@st.composite
def mutation(draw):
    """(file name, how) — how is a function of the file's bytes giving the mutated bytes."""
    name = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["value", "delete", "truncate", "flip", "header"]))
    seed = draw(st.integers(0, 2**31 - 1))
    payload = draw(st.sampled_from(PAYLOADS))
    frac = draw(st.floats(0.0, 1.0))
    return name, kind, seed, payload, frac


def _mutate(data: bytes, name: str, kind: str, seed: int, payload, frac: float) -> bytes:
    import random

    rng = random.Random(seed)
    if kind == "truncate":
        return data[: int(len(data) * frac)]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(1 + int(frac * 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if name.endswith(".safetensors"):
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        body = data[8 + n:]
        paths = [p for p in _paths(header) if p]
        path = paths[rng.randrange(len(paths))]
        if kind == "header":  # the fields that matter: dtype, shape, offsets
            tensor = rng.choice([k for k in header if k != "__metadata__"])
            field = rng.choice(["dtype", "shape", "data_offsets"])
            header[tensor][field] = rng.choice([payload, "I64", "F64", [2**40], [-1, 3], [0, 2**62]])
        else:
            header = _set(header, path, payload, delete=kind == "delete")
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + body
    doc = json.loads(data)
    paths = list(_paths(doc))
    path = paths[rng.randrange(len(paths))]
    doc = _set(doc, path, payload, delete=kind == "delete" and bool(path))
    return json.dumps(doc).encode()


def test_the_pristine_run_folder_evaluates(pristine):
    from dlspec.train.session import evaluate

    metrics = evaluate(pristine)
    assert 0.0 <= metrics["accuracy"] <= 1.0


@fuzz(25)
@given(mutation())
def test_mutated_run_folders_load_or_raise_dlspec_errors(pristine, tmp_path_factory, monkeypatch, m):
    from dlspec.train.run import read_run
    from dlspec.train.session import evaluate

    name, kind, seed, payload, frac = m
    folder = tmp_path_factory.mktemp("mutated") / "run"
    shutil.copytree(pristine, folder)
    target = folder / name
    if not target.is_file():
        return
    target.write_bytes(_mutate(target.read_bytes(), name, kind, seed, payload, frac))
    monkeypatch.chdir(folder)  # a payload that ran would leave its canary here
    with time_limit():
        try:
            read_run(folder)
            evaluate(folder)
        except DlspecError as exc:
            assert_well_formed(exc, {})
    assert not (folder / CANARY).exists() and not Path(CANARY).exists()


# ---- what the fuzzer found, kept as regressions ------------------------------------------------


def _mutated_folder(pristine: Path, tmp_path: Path, name: str, change) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(pristine, folder)
    doc = json.loads((folder / name).read_text())
    change(doc)
    (folder / name).write_text(json.dumps(doc))
    return folder


def _first_node_with_inputs(doc: dict) -> dict:
    return next(n for n in doc["nodes"] if n["inputs"])


@pytest.mark.parametrize("name,change,expect", [
    # a node without its inputs reached the op's shape rule (IndexError)
    ("graph.json", lambda d: _first_node_with_inputs(d).__setitem__("inputs", []), "takes 1 input; it has 0"),
    # an empty dimension expression (IndexError in the dimension reader)
    ("graph.json", lambda d: d["inputs"][0]["type"]["shape"].__setitem__(0, ""), "ends too early"),
    ("graph.json", lambda d: d["inputs"][0]["type"]["shape"].__setitem__(0, "batch//0"), "divides by zero"),
    # a loss keyed by an output the model does not have (KeyError while evaluating)
    ("config.json", lambda d: d["recipe"].__setitem__("loss", {"type": {}}), "the recipe does not fit graph.json"),
])
def test_fuzzer_findings_are_coded_errors(pristine, tmp_path, name, change, expect):
    from dlspec.train.session import evaluate

    folder = _mutated_folder(pristine, tmp_path, name, change)
    with pytest.raises(DlspecError) as info:
        evaluate(folder)
    assert info.value.code in ("E635", "E719") and expect in info.value.message, info.value.message
