"""TensorFlow set-up for the TensorFlow trainer: importing it quietly, devices, tf.distribute.

* `import_tf(logical_cpus)` imports TensorFlow (quiet logs) and, before its runtime starts, splits
  the CPU into `logical_cpus` logical devices so that a MirroredStrategy over several replicas
  runs on a machine without GPUs (what `--backend tf --nproc 2` does on a CPU).
* `pick_device(name)` → "/GPU:0" or "/CPU:0"; asking for a GPU that is not there is E906.
* `make_strategy(device, nproc, nnodes, node_rank)` → (strategy or None, replicas, is_chief):
  one replica: no strategy, the model lives on `device`; `nproc > 1`: MirroredStrategy over
  `nproc` GPUs (or logical CPUs); `nnodes > 1` or `TF_CONFIG` set: MultiWorkerMirroredStrategy,
  with the cluster described by `TF_CONFIG`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import error

#: whether TensorFlow's own log lines are kept out of the output (`quiet_tensorflow`)
_QUIET = {"on": False}


def quiet_tensorflow() -> None:
    """Keep TensorFlow's own log lines (absl, oneDNN, CUDA probing) out of the output: its C++
    logging below errors, Python logging at errors, and the lines it writes to the stderr file
    descriptor while it is imported (before absl's logging starts) discarded. `--verbose` skips it."""
    _QUIET["on"] = True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _import_quietly():
    """`import tensorflow` with the process's stderr file descriptor pointed at /dev/null."""
    import sys

    if not _QUIET["on"] or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def import_tf(logical_cpus: int = 1):
    """TensorFlow, imported with its C++ logs quieted; raises E682 when it is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        tf = _import_quietly()
    except ImportError:
        raise error("E682", "--backend tf needs TensorFlow, which is not installed",
                         hint="pip install 'dlspec[tf]' (tensorflow-cpu and keras), or train with --backend torch") from None
    if logical_cpus > 1:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            if len(tf.config.get_logical_device_configuration(cpus[0]) or []) < logical_cpus:
                tf.config.set_logical_device_configuration(
                    cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpus)])
        except RuntimeError:
            pass  # the runtime already started; checked below
        have = len(tf.config.list_logical_devices("CPU"))
        if have < logical_cpus:
            raise error("E681", f"{logical_cpus} CPU replicas need {logical_cpus} logical CPU devices, but TensorFlow "
                             f"already started in this process with {have}",
                             hint="run the training in a fresh process (the `dlspec train` command does)")
    return tf


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def pick_device(name: str | None) -> str:
    """The TensorFlow device for `--device` (auto, cpu, gpu, cuda, mps)."""
    name = name or "auto"
    have_gpu = bool(gpus())
    if name == "auto":
        return "/GPU:0" if have_gpu else "/CPU:0"
    if name == "cpu":
        if have_gpu:  # keep TensorFlow off the GPUs altogether (it would otherwise reserve their memory)
            import tensorflow as tf

            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass  # the runtime already started: tf.device("/CPU:0") still places every op
        return "/CPU:0"
    if name in ("gpu", "cuda", "mps"):
        if not have_gpu:
            what = {"mps": "no Metal GPU (tensorflow-metal) is available", "cuda": "no CUDA GPU is visible to TensorFlow",
                    "gpu": "no GPU is visible to TensorFlow"}[name]
            raise error("E906", f"--device {name}: {what} on this machine",
                             hint="use --device cpu, or --device auto to pick what is there; TensorFlow needs its "
                                  "CUDA build (pip install 'tensorflow[and-cuda]') to see NVIDIA GPUs")
        return "/GPU:0"
    raise error("E906", f"--device {name} is not a TensorFlow device", hint="use cpu, gpu (cuda) or auto")


def tf_config() -> dict[str, Any] | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        if not isinstance(workers, list) or not workers or task["type"] not in ("worker", "chief") \
                or not isinstance(task["index"], int):
            raise ValueError("cluster.worker must be a list of host:port and task {type: worker, index: N}")
    except (ValueError, KeyError, TypeError) as exc:
        raise error("E681", f"TF_CONFIG is not a valid cluster description ({exc})",
                         hint='TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                              '"task": {"type": "worker", "index": 0}}\'') from None
    return cfg


def make_strategy(device: str, nproc: int = 1, nnodes: int = 1, node_rank: int | None = None):
    """(strategy or None, number of replicas, whether this process writes the run folder)."""
    import tensorflow as tf

    cluster = tf_config()
    if nnodes > 1 or cluster is not None:
        if cluster is None:
            raise error("E681", f"--nnodes {nnodes} with --backend tf needs TF_CONFIG describing the cluster",
                             hint='on every machine set TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", ...]}, '
                                  '"task": {"type": "worker", "index": <this machine\'s rank>}}\' (see docs/distributed.md)')
        workers = cluster["cluster"]["worker"] + cluster["cluster"].get("chief", [])
        if nnodes > 1 and len(workers) != nnodes:
            raise error("E681", f"--nnodes {nnodes} but TF_CONFIG lists {len(workers)} machines")
        index = cluster["task"]["index"]
        if node_rank is not None and cluster["task"]["type"] == "worker" and node_rank != index:
            raise error("E681", f"--node-rank {node_rank} but TF_CONFIG says this is worker {index}")
        if device == "/GPU:0" and nproc > 1:
            have = gpus()
            if len(have) < nproc:
                raise error("E906", f"--nproc {nproc}: this machine has {len(have)} GPU(s)")
        comm = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL if device == "/GPU:0"
            else tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
        chief = cluster["task"]["type"] == "chief" or (index == 0 and "chief" not in cluster["cluster"])
        return strategy, strategy.num_replicas_in_sync, chief
    if nproc <= 1:
        return None, 1, True
    if device == "/GPU:0":
        have = gpus()
        if len(have) < nproc:
            raise error("E906", f"--nproc {nproc} on GPUs: this machine has {len(have)}",
                             hint=f"use --nproc {len(have)}, or --device cpu for CPU replicas")
        devices = [f"/GPU:{i}" for i in range(nproc)]
    else:
        devices = [f"/CPU:{i}" for i in range(nproc)]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice()), nproc, True
    return tf.distribute.MirroredStrategy(devices), nproc, True
