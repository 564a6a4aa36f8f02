"""`dlspec train --tensorboard DIR`: TensorBoard event files beside the run folder's own logs.

Written with the `tensorboard` package's own event writer and protocol buffers, so both trainers
(PyTorch, TensorFlow) write the same thing without going through either framework:

* every number an epoch logs (`loss`, `val_loss`, metrics, `lr`, `time`) as a scalar at its
  epoch, under `train/…`, `val/…` and `lr`;
* the model's graph (the dlspec IR: one node per layer, its op, attributes and output type), in
  TensorBoard's Graphs tab.

A resumed run appends to the same folder; TensorBoard shows the latest value of each epoch.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from ..errors import error


def check_available() -> None:
    """E912 when the `tensorboard` package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise error("E912", "--tensorboard needs the package `tensorboard`, which is not installed",
                    hint="pip install 'dlspec[tensorboard]'")


def _tag(key: str) -> str:
    if key == "lr":
        return "lr"
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    return f"train/{key}"


class TensorBoardLog:
    """A run log (`run.RunLog`) that also writes each epoch's record to TensorBoard; everything
    else is the wrapped log's."""

    def __init__(self, log: Any, folder: Path, graph: Any = None):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._log = log
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(folder))
        if graph is not None:
            self._write_graph(graph)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append(self, record: dict[str, Any]) -> None:
        self._log.append(record)
        from tensorboard.compat.proto import event_pb2, summary_pb2

        epoch = int(record.get("epoch", len(self._log.records)))
        values = [summary_pb2.Summary.Value(tag=_tag(k), simple_value=float(v)) for k, v in record.items()
                  if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=epoch,
                                               summary=summary_pb2.Summary(value=values)))
        self._writer.flush()

    def _write_graph(self, graph: Any) -> None:
        from tensorboard.compat.proto import attr_value_pb2, event_pb2, graph_pb2, node_def_pb2

        producer: dict[str, str] = {}
        nodes = []
        for gi in graph.inputs:
            producer[gi.name] = f"input/{gi.name}"  # an input is the value of its name
            nodes.append(node_def_pb2.NodeDef(name=f"input/{gi.name}", op="Input", attr={
                "type": attr_value_pb2.AttrValue(s=str(gi.type).encode())}))
        for node in graph.nodes:
            for v in node.outputs:
                producer[v] = node.name
        for node in graph.nodes:
            attrs = {"attrs": attr_value_pb2.AttrValue(s=json.dumps(node.attrs, default=str).encode())}
            if node.outputs and node.outputs[0] in graph.values:
                attrs["type"] = attr_value_pb2.AttrValue(s=str(graph.values[node.outputs[0]]).encode())
            nodes.append(node_def_pb2.NodeDef(name=node.name, op=node.op,
                                              input=[producer[v] for v in node.inputs if v in producer], attr=attrs))
        for go in graph.outputs:
            if go.value in producer:
                nodes.append(node_def_pb2.NodeDef(name=f"output/{go.name}", op="Output", input=[producer[go.value]]))
        gd = graph_pb2.GraphDef(node=nodes)
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), graph_def=gd.SerializeToString()))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def attach(stepper: Any, folder: Path | None, graph: Any) -> None:
    """Make `stepper`'s run log also write TensorBoard events into `folder` (None: nothing)."""
    if folder is None:
        return
    check_available()
    stepper.log = TensorBoardLog(stepper.log, folder, graph)
