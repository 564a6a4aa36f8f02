"""Data-parallel training: `dlspec train FILE --nproc N [--nnodes M --node-rank R --master ADDR:PORT]`.

The launcher (this process) checks the options, writes the run folder's description files, then
starts `N` workers per node through PyTorch's elastic agent (the machinery behind `torchrun`),
each running `python -m dlspec.train.distributed JOB.json`. The job folder holds what the
launcher compiled and loaded (`write_job`: the lowered graph, the recipe, the data's arrays), so
workers neither compile the spec nor load the data again. A worker joins the process group
(`gloo` on CPU, `nccl` on CUDA), wraps the model in DistributedDataParallel and runs the same
`Trainer` as single-process training, with a `DataParallel` object that supplies the hooks:

* batches: `batch` is the GLOBAL batch. Every rank draws the same seeded permutation of the
  training split and takes its own contiguous part of each global batch (sizes differ by at most
  one; rank 0 gets the larger parts). Each rank's loss is scaled by `world * local / global`, so
  DDP's gradient average equals the gradient of the mean over the whole global batch, also for a
  short last batch. A rank left without an example in a short last batch still steps (DDP needs
  every rank) with a zero-weighted copy of one example.
* metrics: losses are summed (loss × examples) and counted across ranks; predictions and targets
  are gathered, so accuracy, F1, R², IoU… are those single-process training reports. Validation
  and test splits are sharded across ranks the same way.
* writes: only rank 0 writes logs, plots, weights and checkpoints. Checkpoints hold the model and
  optimizer state, which DDP keeps identical on every rank, so a run resumes with any number of
  processes.
* randomness: in a data-parallel run every rank reseeds its generator at each epoch from
  (seed, epoch, rank), so dropout draws differ between ranks and resume is exact.

Errors (E660–E667) are raised before anything is written: bad counts, a bad or busy master
address, a device that cannot host the processes, more processes than examples per step. A worker
that fails or dies stops the others (the agent terminates them); collectives time out after
`--dist-timeout` seconds so that no process waits forever for a dead peer on another node.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DlspecError, error
from .loop import Outcome
from .run import ReadOnlyLog, RunLog, atomic_write_json

DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Launch:
    """How many processes to train with, and where they meet."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master: str | None = None
    sync_bn: bool = False
    timeout: float = DEFAULT_TIMEOUT_S

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes

    @property
    def parallel(self) -> bool:
        """Whether to go through the launcher (any option other than one local process)."""
        return (self.nproc, self.nnodes, self.node_rank, self.master, self.sync_bn) != (1, 1, 0, None, False)


def parse_master(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise error("E661", f"--master {text!r}: expected ADDR:PORT, e.g. 10.0.0.1:29500",
                         hint="the address of the node with --node-rank 0 and a free TCP port on it")
    return host, int(port)


def port_available(port: int) -> bool:
    """Whether this machine can listen on `port` (on every interface, as the rendezvous store does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_launch(launch: Launch, device: str, batch: int, n_train: int) -> tuple[str, int]:
    """Validate the options before anything starts or is written; returns the master (host, port)."""
    if launch.nproc < 1 or launch.nnodes < 1:
        raise error("E660", f"--nproc and --nnodes must be at least 1; got --nproc {launch.nproc} "
                                 f"--nnodes {launch.nnodes}")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise error("E660", f"--node-rank {launch.node_rank} is not in 0..{launch.nnodes - 1} "
                                 f"(--nnodes {launch.nnodes})",
                         hint="number the machines 0, 1, … and give --node-rank 0 to the one at --master")
    if launch.timeout <= 0:
        raise error("E660", f"--dist-timeout must be positive; got {launch.timeout}")
    if launch.nnodes > 1 and launch.master is None:
        raise error("E662", f"--nnodes {launch.nnodes} needs --master ADDR:PORT, the address every node "
                                 "can reach node 0 at",
                         hint="e.g. --nnodes 2 --node-rank 0 --master 10.0.0.1:29500 on the first machine, "
                              "--node-rank 1 with the same --master on the second")
    world = launch.world
    if world > batch:
        raise error("E665", f"{world} processes cannot share a batch of {batch}: each process needs at least one "
                                 "example per step (`batch` is the global batch, split across processes)",
                         hint=f"use --nproc {max(1, batch // launch.nnodes)} or fewer, or a larger --batch")
    if world > n_train:
        raise error("E665", f"{world} processes for {n_train} training examples: some processes would never "
                                 "get an example", hint=f"use at most {n_train} processes")
    if device == "mps":
        raise error("E664", "data-parallel training on Apple's Metal backend is not supported by PyTorch",
                         hint="use --device cpu with --nproc, or train with one process on mps")
    if device == "cuda":
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have == 0:
            raise error("E906", "--device cuda: no CUDA device is available on this machine",
                             hint="use --device cpu, or --device auto to pick what is there")
        if launch.nproc > have:
            raise error("E664", f"--nproc {launch.nproc} needs one GPU per process; this machine has {have}",
                             hint=f"use --nproc {have}, or --device cpu")
    if launch.sync_bn and device != "cuda":
        raise error("E667", "--sync-bn synchronizes batch statistics across GPUs; PyTorch's SyncBatchNorm "
                                 "does not run on CPU", hint="drop --sync-bn, or train on CUDA devices")
    if launch.master is None:
        return "127.0.0.1", free_port()
    host, port = parse_master(launch.master)
    if launch.node_rank == 0 and not port_available(port):
        raise error("E663", f"--master {launch.master}: port {port} is already in use on this machine",
                         hint="pick another port (any free one above 1024), or stop the program holding it")
    return host, port


# ---- the launcher --------------------------------------------------------------------------------


def launch(launch: Launch, job: dict[str, Any], master: tuple[str, int], run: Path, device: str,
           echo: Callable[[str], None] = print, graph: Any = None, cfg: Any = None, bundle: Any = None):
    """Start the workers of this node and wait for them. Returns the Outcome of rank 0 (on node 0).
    The workers train `graph` with the recipe `cfg` on the data `bundle` as this process compiled
    and loaded them (written into the job folder; they neither compile the spec nor load the data)."""
    import logging

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    jobdir = Path(tempfile.mkdtemp(prefix="dlspec-ddp-"))
    job = {**job, "jobdir": str(jobdir), "sync_bn": launch.sync_bn, "timeout": launch.timeout, "device": device}
    try:
        write_job(jobdir, job, graph, cfg, bundle)
    except BaseException:
        shutil.rmtree(jobdir, ignore_errors=True)
        raise
    host, port = master
    config = LaunchConfig(
        min_nodes=launch.nnodes, max_nodes=launch.nnodes, nproc_per_node=launch.nproc,
        run_id=f"dlspec-{host}-{port}", rdzv_backend="static", rdzv_endpoint=f"{host}:{port}",
        rdzv_configs={"rank": launch.node_rank, "timeout": int(launch.timeout)},
        max_restarts=0, monitor_interval=0.2, start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=str(jobdir / "logs")),
    )
    # the agent logs every start and failure itself; the launcher reports them as diagnostics
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    env_threads = "OMP_NUM_THREADS" not in os.environ
    if env_threads:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.nproc))
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _worker_path(old_path)
    echo(f"data-parallel: {launch.nproc} process{'es' if launch.nproc > 1 else ''} on node {launch.node_rank} "
         f"of {launch.nnodes} ({launch.world} in all, backend {'nccl' if device == 'cuda' else 'gloo'}); "
         f"master {host}:{port}")
    try:
        elastic_launch(config, sys.executable)("-m", "dlspec.train.distributed", str(jobdir / "job.json"))
        if launch.node_rank != 0:
            echo(f"node {launch.node_rank} finished; rank 0 on node 0 wrote the run folder")
            return Outcome(run, 0, False, {}, {})
        result = json.loads((jobdir / "result.json").read_text())
        return Outcome(run, result["epochs_run"], result["stopped_early"], result["test"], result["best"])
    except ChildFailedError as exc:
        raise _failure(exc, jobdir, run) from None
    except (KeyboardInterrupt, SignalException):  # the agent turns SIGINT/SIGTERM into SignalException
        raise error("E634", "interrupted; the checkpoints written so far are intact",
                         hint=f"continue with --out {run} --resume (with any --nproc)") from None
    except Exception as exc:  # rendezvous errors: a node never joined, the store is unreachable
        raise error("E666", f"the distributed launch failed: {type(exc).__name__}: {exc}",
                         hint="check that every node runs the same command with the same --master and that "
                              "the port is reachable from every node") from None
    finally:
        for lg, level in zip(loggers, old_levels):
            lg.setLevel(level)
        if env_threads:
            os.environ.pop("OMP_NUM_THREADS", None)
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path
        shutil.rmtree(jobdir, ignore_errors=True)


#: the data set fields a worker needs besides the arrays (data.npz)
_BUNDLE_FIELDS = ("task", "num_classes", "description", "source", "name", "input_names", "classes", "vocab")


def write_job(jobdir: Path, job: dict[str, Any], graph: Any, cfg: Any, bundle: Any) -> None:
    """The job folder the workers read: job.json (options, the recipe as config.json stores it,
    the data set's fields), graph.json (the lowered model) and data.npz (every split's arrays)."""
    import numpy as np

    from .run import recipe_json

    arrays: dict[str, Any] = {}
    for name, split in bundle.splits.items():
        for i, x in enumerate(split.x):
            arrays[f"{name}.x.{i}"] = x
        ys = split.y if isinstance(split.y, dict) else {"": split.y}
        for k, y in ys.items():
            arrays[f"{name}.y.{k}"] = y
    for k, v in (bundle.normalization or {}).items():
        arrays[f"normalization.{k}"] = v
    np.savez(jobdir / "data.npz", **arrays)
    (jobdir / "graph.json").write_text(graph.model_dump_json())
    data = {k: getattr(bundle, k) for k in _BUNDLE_FIELDS}
    data["multi_output"] = isinstance(bundle.train.y, dict)
    data["inputs"] = len(bundle.train.x)
    data["normalized"] = bundle.normalization is not None
    (jobdir / "job.json").write_text(json.dumps({**job, "kind": cfg.kind, "recipe": recipe_json(cfg), "data": data}))


def read_job(jobdir: Path, job: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(graph, recipe, data bundle) of a job folder, as the launcher wrote them."""
    import numpy as np

    from ..data import Split
    from ..data.core import DataBundle
    from ..ir.graph import Graph
    from ..ir.training import KINDS, TrainConfig

    graph = Graph.model_validate_json((jobdir / "graph.json").read_text())
    cfg = KINDS.get(job["kind"], TrainConfig).model_validate(job["recipe"])
    data = job["data"]
    with np.load(jobdir / "data.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def split(name: str) -> Split:
        xs = [arrays[f"{name}.x.{i}"] for i in range(data["inputs"])]
        prefix = f"{name}.y."
        ys = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        return Split(xs, ys if data["multi_output"] else ys[""])

    norm = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("normalization.")}
    bundle = DataBundle(split("train"), split("val"), split("test"), **{k: data[k] for k in _BUNDLE_FIELDS},
                        normalization=norm if data["normalized"] else None)
    return graph, cfg, bundle


def _worker_path(current: str | None) -> str:
    """PYTHONPATH for the workers: they import this very dlspec, also when it is a source checkout
    that is not installed (an installed one is found anyway, and its folder is left out so that
    site-packages never comes before the standard library)."""
    import site

    root = str(Path(__file__).resolve().parents[2])
    installed = {str(Path(p).resolve()) for p in site.getsitepackages() + [site.getusersitepackages()]}
    parts = [p for p in (current or "").split(os.pathsep) if p]
    if root not in installed and root not in parts:
        parts.insert(0, root)
    return os.pathsep.join(parts)


def _failure(exc, jobdir: Path, run: Path) -> DlspecError:
    """The root cause of failed workers: a user error one of them reported; else a worker that died
    without a word (killed, out of memory, crashed); else the first worker's own message. Workers
    whose peer vanished fail too (connection reset) and are not the cause."""
    import signal

    said: dict[int, dict] = {}
    for path in jobdir.glob("error-*.json"):
        said[int(path.stem.split("-")[1])] = json.loads(path.read_text())
    for rank in sorted(said):
        if said[rank].get("code"):
            d = said[rank]
            return error(d["code"], d["message"], hint=d.get("hint"))
    failures = sorted(exc.failures.items())
    stopped = -signal.SIGTERM  # how the agent stops the survivors
    died = [(rank, f) for rank, f in failures if rank not in said and f.exitcode != stopped]
    spoke = [(rank, f) for rank, f in failures if rank in said]
    rank, failure = (died or spoke or failures)[0]
    code = failure.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    detail = f" ({said[rank]['message']})" if rank in said else ""
    return error("E666", f"worker rank {rank} {how}{detail}; the other workers were stopped",
                      hint=f"the checkpoints in {run} are intact; continue with --out {run} --resume")


# ---- the worker ----------------------------------------------------------------------------------


class DataParallel:
    """The hooks `Trainer` calls in a data-parallel run (this rank's view of the process group)."""

    def __init__(self, rank: int, world: int, device: Any, sync_bn: bool = False):
        self.rank, self.world, self.device, self.sync_bn = rank, world, device, sync_bn

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        """The DDP module the training steps call (the plain module stays the Trainer's `model`)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def prepare(self, model):
        if self.sync_bn:
            import torch

            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def part(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's part of n examples: sizes differ by at most one, larger first."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def shard(self, batch):
        """This rank's part of a global batch: (tensors, examples, loss scale)."""
        import torch

        n = len(batch)
        start, stop = self.part(n)
        if stop == start:  # a short last batch: step with a zero-weighted example
            return batch.take(torch.arange(0, min(2, n))), 0, 0.0
        return batch.take(torch.arange(start, stop)), stop - start, self.world * (stop - start) / n

    def eval_part(self, data):
        import torch

        start, stop = self.part(len(data))
        return data.take(torch.arange(start, stop))

    def gather(self, total: float, count: int, parts_sum: dict[str, float], outs: dict[str, list],
               targets: dict[str, list]):
        """Every rank's sums and predictions, combined on every rank."""
        import numpy as np
        import torch.distributed as dist

        mine = (total, count, parts_sum,
                {k: [np.concatenate(v)] if v else [] for k, v in outs.items()},
                {k: [np.concatenate(v)] if v else [] for k, v in targets.items()})
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, mine)
        total = math.fsum(e[0] for e in everyone)
        count = sum(e[1] for e in everyone)
        parts = {k: math.fsum(e[2][k] for e in everyone) for k in parts_sum}
        outs = {k: [a for e in everyone for a in e[3][k]] for k in outs}
        targets = {k: [a for e in everyone for a in e[4][k]] for k in targets}
        return total, count, parts, outs, targets

    def seed_epoch(self, seed: int, epoch: int) -> None:
        import torch

        torch.manual_seed((seed * 1_000_003 + epoch) * 4099 + self.rank)

    def broadcast_model(self, model) -> None:
        import torch.distributed as dist

        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)

    def run_log(self, folder: Path) -> RunLog:
        return RunLog(folder) if self.is_main else ReadOnlyLog(folder)


def worker_main(job_path: str) -> int:
    """One rank's training, as the elastic agent starts it. Returns the process exit code."""
    job = json.loads(Path(job_path).read_text())
    jobdir = Path(job["jobdir"])
    rank = int(os.environ["RANK"])
    try:
        outcome = _train_rank(job, rank)
        if rank == 0:
            (jobdir / "result.json").write_text(json.dumps({
                "epochs_run": outcome.epochs_run, "stopped_early": outcome.stopped_early,
                "test": outcome.test, "best": outcome.best}, default=str))
        return 0
    except DlspecError as exc:
        d = exc.diagnostics[0]
        _report(jobdir, rank, {"code": d.code, "message": d.message, "hint": d.hint})
    except KeyboardInterrupt:
        _report(jobdir, rank, {"message": "interrupted"})
    except Exception as exc:  # a peer died mid-collective, or a bug: the launcher names the root cause
        _report(jobdir, rank, {"message": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    return 1


def _report(jobdir: Path, rank: int, data: dict) -> None:
    atomic_write_json(jobdir / f"error-{rank}.json", data)


def _train_rank(job: dict, rank: int):
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from . import torch_loop as tl

    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if job["device"] == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=job["timeout"]))
    try:
        # the launcher compiled the spec and loaded the data: every rank trains the very same
        graph, cfg, bundle = read_job(Path(job["jobdir"]), job)
        run = Path(job["run"])
        hooks = DataParallel(rank, world, device, job["sync_bn"])
        main = rank == 0

        def echo(line: str) -> None:
            if main:
                print(line, file=sys.stderr, flush=True)

        trainer = tl.Trainer(graph, cfg, bundle, run, device, cfg.seed, progress=job["progress"] and main,
                             echo=echo, dist=hooks)
        if job["resume"]:
            done = trainer.restore()
            echo(f"resuming after epoch {done} with {world} processes")
        outcome = trainer.fit()
        dist.barrier()  # rank 0 has written the run folder; no collective follows
        return outcome
    except BaseException:
        dist.destroy_process_group()
        raise


def _exit(code: int) -> None:
    """End the worker. After a successful run every rank has passed the final barrier: the process
    leaves at once, without tearing the process group's threads down one by one (an abort there,
    at interpreter exit, would turn a finished run into a failed one)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code == 0:
        os._exit(0)
    sys.exit(code)


if __name__ == "__main__":
    _exit(worker_main(sys.argv[1]))
