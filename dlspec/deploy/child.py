"""The program the self-check and `dlspec bench` run in a fresh Python process: it loads one
artifact with its own runtime alone (no dlspec import, except the Keras format's custom layers;
dlspec/threads.py, whose ONNX Runtime session options every session dlspec opens follows, is
loaded from its file without the package), runs it on the arrays of an .npz file and writes the outputs to another .npz.

    python -P dlspec/deploy/child.py TARGET ARTIFACT INPUTS.npz OUTPUTS.npz [--precision P] [--threads N]
        [--bench REPEATS [--budget SECONDS]]

It is run as a file path with -P (no script folder on sys.path), so `dlspec/__init__.py` is not
imported either; `eager` (dlspec's own PyTorch module, `dlspec bench`'s baseline) is the exception.
INPUTS.npz holds `b<k>__<input name>` for each batch k; OUTPUTS.npz gets `b<k>__<output name>`
(with --bench also `b<k>__times`, seconds per call after warm-up). A failure prints one JSON line
`{"error": ..., "type": ...}` on stderr and exits 3.

Each `load_<target>(path, precision, threads, meta)` returns `run(feed: dict[name, array]) ->
dict[name, array]`: the same few lines docs/deploy.md shows for that runtime. `meta` holds the
spec's input and output names (this program reads them from DLSPEC_CHILD_META); the openvino, pt2
and litert loaders also take None, for `dlspec predict` on an artifact alone: inputs and outputs
are then named as the artifact names them, and `run.inputs` lists [(name, dtype, shape)] as the
runtime sees them (an axis of any size is `?`).
"""

from __future__ import annotations

import json
import os
import sys
import time


def load_onnx(path, precision, threads, meta=None):
    import onnxruntime as ort

    # dlspec's rule for every ONNX Runtime session it opens (dlspec/threads.py): `threads` compute
    # threads (0: the CPUs this process may use), one inter-op thread, no spinning
    opts = _threads_module().ort_session_options(threads or None)
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(feed):
        return dict(zip(names, sess.run(names, feed)))

    run.session = sess
    return run


def load_openvino(path, precision, threads, meta=None):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision or "f32"}  # the CPU plugin picks bf16 by itself otherwise
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(path, "CPU", config)
    # a port can carry several tensor names (an input feeding an Identity): pick the spec's name
    names = [_port_name(o, meta and meta["outputs"]) for o in compiled.outputs]
    inputs = [_port_name(i, meta and meta["inputs"]) for i in compiled.inputs]
    request = compiled.create_infer_request()

    def run(feed):
        res = request.infer([feed[n] for n in inputs])
        return {n: res[o].copy() for n, o in zip(names, compiled.outputs)}

    run.inputs = [(n, i.get_element_type().to_dtype().name,
                   tuple(d.get_length() if d.is_static else "?" for d in i.get_partial_shape()))
                  for n, i in zip(inputs, compiled.inputs)]
    return run


def _threads_module():
    """dlspec/threads.py loaded from its file alone (it needs only the standard library and click),
    so the ONNX Runtime session follows dlspec's thread settings without importing the dlspec package."""
    import importlib.util

    name = "_dlspec_threads_standalone"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "threads.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def _port_name(port, wanted):
    """The name of an OpenVINO port: one of `wanted` (the spec's) that it carries, else the first of
    its names in sorted order (get_any_name() picks one of a set, not the same one on every run)."""
    names = port.get_names()
    return next((n for n in wanted or () if n in names), min(names) if names else port.get_any_name())


def _torch_threads(threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


def _torch_outputs(y, names):
    """{name: array}: a dict's own keys; else `names`, or without them output_0, output_1, ..."""
    if isinstance(y, dict):
        return {k: v.detach().numpy() for k, v in y.items()}
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    return {n: v.detach().numpy() for n, v in zip(names or [f"output_{i}" for i in range(len(ys))], ys)}


def load_pt2(path, precision, threads, meta=None):
    torch = _torch_threads(threads)
    inputs = None
    if _is_aoti(path):
        model = torch._inductor.aoti_load_package(path)
    else:
        program = torch.export.load(path)
        model = program.module()
        inputs = _program_inputs(program)
    order = meta["inputs"] if meta else [n for n, _, _ in inputs]

    def run(feed):
        with torch.no_grad():
            y = model(*[torch.from_numpy(feed[n]) for n in order])
        return _torch_outputs(y, meta and meta["outputs"])

    run.inputs = inputs
    return run


def _program_inputs(program):
    """(name, dtype, shape) of an ExportedProgram's user inputs, from its placeholders' example
    values (a symbolic size is `?`)."""
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out = []
    for name in program.graph_signature.user_inputs:
        val = nodes[name].meta["val"]
        out.append((name, str(val.dtype).removeprefix("torch."),
                    tuple(d if type(d) is int else "?" for d in val.shape)))
    return out


def _is_aoti(path):
    """An AOTInductor package holds compiled code under data/aotinductor/; a plain program does not."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any("/data/aotinductor/" in f"/{n}" for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def load_torchscript(path, precision, threads, meta):
    torch = _torch_threads(threads)
    model = torch.jit.load(path).eval()

    def run(feed):
        with torch.no_grad():
            y = model(*[torch.from_numpy(feed[n]) for n in meta["inputs"]])
        return _torch_outputs(y, meta["outputs"])

    return run


def load_litert(path, precision, threads, meta=None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads or None)
    runner = interpreter.get_signature_runner()  # named inputs and outputs; resizes to the feed's shapes
    details = runner.get_input_details()
    ins = _match(list(details), meta["inputs"]) if meta else {k: k for k in details}
    fixed = int(interpreter.get_input_details()[0]["shape_signature"][0])  # -1: the batch resizes

    def run(feed):
        if fixed > 0:  # a flatbuffer with a static batch: run the rows in slices of that size
            return _in_slices(run_once, feed, fixed)
        return run_once(feed)

    def run_once(feed):
        res = runner(**{k: feed[n] for n, k in ins.items()})
        outs = meta["outputs"] if meta else sorted(res, key=_by_number)
        return {n: res[k] for n, k in _match(sorted(res), outs).items()}

    # any batch: a resizable one, or slices of the static one
    run.inputs = [(n, details[k]["dtype"].__name__, ("?", *(int(d) if d >= 0 else "?"
                                                            for d in details[k]["shape_signature"][1:])))
                  for n, k in ins.items()]
    return run


def _in_slices(run_once, feed, size):
    import numpy as np

    n = len(next(iter(feed.values())))
    parts = []
    for start in range(0, n, size):
        part = {k: v[start:start + size] for k, v in feed.items()}
        short = size - len(next(iter(part.values())))
        if short:  # pad the last slice with its own first row, dropped again below
            part = {k: np.concatenate([v, np.repeat(v[:1], short, axis=0)]) for k, v in part.items()}
        out = run_once(part)
        parts.append({k: v[:size - short] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _match(names, wanted):
    """dlspec's names -> the runtime's: the same name where the runtime kept it, else by order
    (TensorFlow's converter calls a single output `output_0`)."""
    if set(wanted) <= set(names):
        return {n: n for n in wanted}
    return dict(zip(wanted, sorted(names, key=_by_number)))


def _by_number(name):
    """output_2 before output_10."""
    return len(name), name


def _tf_threads(threads):
    """TensorFlow's thread pools, set before it starts them: `threads` compute threads, one inter-op."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def load_keras(path, precision, threads, meta):
    _tf_threads(threads)
    import keras

    import dlspec.backends.keras_layers  # noqa: F401  (the format's custom layers; nothing else of dlspec)

    model = keras.saving.load_model(path)
    return _keras_like(lambda xs: model(xs if len(xs) > 1 else xs[0], training=False), meta)


def load_savedmodel(path, precision, threads, meta):
    _tf_threads(threads)
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    return _keras_like(lambda xs: loaded.serve(*[tf.constant(x) for x in xs]), meta, keep=loaded)


def _keras_like(call, meta, keep=None):
    def run(feed):
        y = call([feed[n] for n in meta["inputs"]])
        if isinstance(y, dict):
            return {k: _np(v) for k, v in y.items()}
        if isinstance(y, (tuple, list)):
            return {n: _np(v) for n, v in zip(meta["outputs"], y)}
        return {meta["outputs"][0]: _np(y)}

    run.keep = keep  # a SavedModel's variables live as long as the loaded object
    return run


def _np(v):
    import numpy as np

    return np.asarray(v)


def _sidecar():
    """The artifact's input and output names (and the eager baseline's weights), written beside it
    by the parent for this program only."""
    with open(os.environ["DLSPEC_CHILD_META"]) as f:
        return json.load(f)


def load_eager(path, precision, threads, meta):
    """`dlspec bench`'s baseline: the PyTorch module dlspec builds for the graph (PATH: graph.json),
    with the weights named in the meta file, run eagerly. The one loader that imports dlspec."""
    torch = _torch_threads(threads)
    from dlspec.backends import get_backend
    from dlspec.ir.graph import Graph
    from dlspec.weights import load_graph_weights

    with open(path) as f:
        graph = Graph.model_validate_json(f.read())
    module = get_backend("torch").build(graph, load_graph_weights(graph, meta["weights"]), inplace=False).eval()

    def run(feed):
        with torch.no_grad():
            y = module(*[torch.from_numpy(feed[n]) for n in meta["inputs"]])
        return _torch_outputs(y, meta["outputs"])

    return run


LOADERS = {"eager": load_eager, "onnx": load_onnx, "openvino": load_openvino, "pt2": load_pt2, "torchscript": load_torchscript,
           "litert": load_litert, "keras": load_keras, "savedmodel": load_savedmodel}


def main(argv):
    import numpy as np

    target, path, inputs, outputs = argv[:4]
    opts = dict(zip(argv[4::2], argv[5::2]))
    threads = int(opts.get("--threads", 0))
    repeats = int(opts.get("--bench", 0))
    budget = float(opts.get("--budget", 0)) or float("inf")
    try:
        run = LOADERS[target](path, opts.get("--precision"), threads, _sidecar())
        with np.load(inputs, allow_pickle=False) as z:
            feeds = {}
            for key in z.files:
                b, name = key.split("__", 1)
                feeds.setdefault(b, {})[name] = z[key]
        result = {}
        for b, feed in sorted(feeds.items()):
            for k, v in run(feed).items():
                result[f"{b}__{k}"] = np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
            if repeats:
                for _ in range(max(3, repeats // 10)):  # warm-up: first calls allocate and specialise
                    run(feed)
                times = []
                started = time.perf_counter()
                for _ in range(repeats):  # `repeats` calls, or fewer (at least 5) within `budget` seconds
                    t = time.perf_counter()
                    run(feed)
                    times.append(time.perf_counter() - t)
                    if len(times) >= 5 and time.perf_counter() - started > budget:
                        break
                result[f"{b}__times"] = np.asarray(times)
        np.savez(outputs, **result)
    except Exception as exc:  # reported to the parent, which turns it into a coded error
        sys.stderr.write("\n" + json.dumps({"error": str(exc)[-4000:], "type": type(exc).__name__}) + "\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
