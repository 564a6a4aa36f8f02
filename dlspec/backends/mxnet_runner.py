"""Runs a model that dlspec generated for Gluon, inside the MXNet interpreter (not dlspec's).

    python -I mxnet_runner.py JOB.json

This file needs only MXNet and numpy: the MXNet backend (`dlspec/backends/mxnet.py`) runs it with
the interpreter named by DLSPEC_MXNET_PYTHON. The job names the generated model file, a canonical
safetensors weights file and `.npy` input files (read without pickle), and one action:

    run      load the weights, run the hybridized block in inference mode, write each output as .npy
    weights  load the weights (or keep fresh ones) and write the block's weights back, canonical
    export   load the weights, run once, and write HybridBlock.export's -symbol.json and .params
    train    load the weights, run the file's train() on the inputs and `target` for `epochs`, and
             write the trained weights back, canonical, with each epoch's loss

Results go to the job's `out` folder, listed in `result.json`.
"""

import importlib.util
import json
import os
import sys


def _load_module(path):
    spec = importlib.util.spec_from_file_location("dlspec_generated_gluon_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_class(module):
    import mxnet as mx

    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, mx.gluon.HybridBlock) and value.__module__ == module.__name__ \
                and value.__doc__ and value.__doc__.lstrip().startswith("Inputs:"):
            return value
    raise RuntimeError("the generated file defines no model block")


def main(job_path):
    import mxnet as mx
    import numpy as np

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    module = _load_module(job["model"])
    block = _model_class(module)()
    block.initialize(mx.init.Xavier())
    if job.get("weights"):
        module.load_canonical_weights(block, job["weights"])
    inputs = [mx.nd.array(np.load(p, allow_pickle=False).astype(np.float32)) for p in job.get("inputs", {}).values()]
    out_dir = job["out"]
    result = {"outputs": {}, "files": []}
    action = job["action"]
    if action == "run":
        block.hybridize()
        ys = block(*inputs)
        ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
        for i, (name, y) in enumerate(zip(module.OUTPUTS, ys)):
            fname = f"output{i}.npy"
            np.save(os.path.join(out_dir, fname), y.asnumpy(), allow_pickle=False)
            result["outputs"][name] = fname
    elif action == "weights":
        module.write_safetensors(module.canonical_weights(block), os.path.join(out_dir, "weights.safetensors"))
        result["weights"] = "weights.safetensors"
    elif action == "export":
        block.hybridize()
        block(*inputs)
        target = job["export_dir"]
        os.makedirs(target, exist_ok=True)
        before = set(os.listdir(target))
        block.export(os.path.join(target, job["name"]), epoch=0)
        result["files"] = sorted(set(os.listdir(target)) - before)
    elif action == "train":
        target = np.load(job["target"], allow_pickle=False)
        batch = (tuple(x.asnumpy() for x in inputs), target)
        result["history"] = module.train(block, [batch], epochs=job.get("epochs", 1))
        module.write_safetensors(module.canonical_weights(block), os.path.join(out_dir, "weights.safetensors"))
        result["weights"] = "weights.safetensors"
    else:
        raise ValueError(f"unknown action {action!r}")
    with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
