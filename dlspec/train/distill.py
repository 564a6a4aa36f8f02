"""`train distill`: a student learns from a trained teacher's softened outputs and from the labels
(Hinton, Vinyals & Dean, 2015).

For each output, with s and t the student's and teacher's logits and T the temperature:

    loss = alpha · T² · KL(p_t ‖ p_s) + (1 − alpha) · hard loss       p_x = softmax(x / T)

KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s), averaged over the examples (for [N, T, C] outputs,
summed over the time steps); T² keeps its gradients on the scale of the hard loss's. The hard
loss is the recipe's `loss`, against the labels.

The teacher is built from its graph and `teacher_weights` (a safetensors file, or a run folder:
its best.safetensors), kept in eval mode, and never receives gradients. The student is trained
by the supervised trainer, so schedules, checkpoints, --resume and metrics work as for
`train Model {...}`; its validation and test losses are the hard loss alone, so they compare
with the same student trained without a teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..backends import get_backend
from ..backends import torch as tb
from ..errors import error
from ..ir.graph import Graph
from ..ir.training import DistillConfig, TrainConfig
from ..program import distill_pairs
from .torch_loop import Trainer


def student_recipe(cfg: DistillConfig) -> TrainConfig:
    """The supervised recipe that trains the student alone: the distillation recipe without its teacher."""
    shared = {k: getattr(cfg, k) for k in cfg.model_fields_set if k in TrainConfig.model_fields and k != "kind"}
    for k in ("name", "data", "loss", "optimizer", "schedule"):
        shared[k] = getattr(cfg, k)
    return TrainConfig(**shared, model=cfg.student)


def weights_path(given: str, base_dir: Path) -> Path:
    """A weights file named in a recipe: relative to the spec's folder; a run folder means its
    best.safetensors (last.safetensors when the run kept no best)."""
    path = Path(given)
    if not path.is_absolute():
        path = base_dir / path
    if path.is_dir():
        from .run import best_weights

        return best_weights(path, missing_ok=True)
    return path


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the first axis."""
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum()
    return kl * temperature**2 / student.shape[0]


class DistillTrainer(Trainer):
    def __init__(self, graph: Graph, teacher_graph: Graph, cfg: DistillConfig, bundle: Any, run: Path,
                 device: torch.device, spec_dir: Path, progress: bool = True, echo=print):
        # the recipe's rules (E646, E647, a teacher_weights entry) hold: `dlspec check` asked them
        path = weights_path(cfg.teacher_weights, spec_dir)
        if not path.is_file():
            raise error("E648", f"teacher weights {path} do not exist",
                                hint="train the teacher first; its run folder holds best.safetensors")
        from ..data import check_against_model

        check_against_model(bundle, teacher_graph)
        self.pairs, _ = distill_pairs(teacher_graph, graph)
        self.distill = cfg
        super().__init__(graph, student_recipe(cfg), bundle, run, device, cfg.seed, progress=progress, echo=echo)
        self.teacher_graph = teacher_graph
        self.teacher = get_backend("torch").build(teacher_graph).to(device)
        tb.load_weights(self.teacher, teacher_graph, path)
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._teacher_outs: dict[str, torch.Tensor] | None = None
        echo(f"teacher {teacher_graph.name} from {path}; temperature {cfg.temperature}, alpha {cfg.alpha}")

    def _outputs(self, xb: list[torch.Tensor], module: Any = None) -> dict[str, torch.Tensor]:
        outs = super()._outputs(xb, module)
        if self.model.training:
            with torch.no_grad():
                t = self.teacher(*xb)
            self._teacher_outs = t if isinstance(t, dict) else {self.teacher_graph.outputs[0].name: t}
        return outs

    def _loss(self, outs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = super()._loss(outs, ys)
        if not self.model.training or self._teacher_outs is None:
            return total, parts
        teacher, self._teacher_outs = self._teacher_outs, None
        hard = sum(self.weights[k] * f(outs[k].float(), ys[k]) for k, f in self.losses.items())
        penalty = total - hard  # the recipe's l1/l2 terms, which the mix leaves whole
        soft = sum(self.weights[s] * kd_loss(outs[s], teacher[t], self.distill.temperature) for s, t in self.pairs.items())
        a = self.distill.alpha
        return a * soft + (1.0 - a) * hard + penalty, parts
