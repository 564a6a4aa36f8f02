"""Training recipes as typed configs: data, loss, optimizer, schedule, metrics, callbacks.

A recipe's calls (`adam(lr=1e-3)`) are looked up in the tables below by name; each entry is a
pydantic model, strict about unknown keys. The front end (`dlspec/recipe.py`) turns the evaluated
recipe body into a `TrainConfig`, `GanConfig` or `DistillConfig`; this module imports nothing of
the language.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..source import Span


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# ---- optimizers ------------------------------------------------------------------------------


class SGD(Config):
    type: Literal["sgd"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    weight_decay: float = 0.0


class Adam(Config):
    type: Literal["adam"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


class AdamW(Config):
    type: Literal["adamw"] = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    amsgrad: bool = False


class RMSprop(Config):
    type: Literal["rmsprop"] = "rmsprop"
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    weight_decay: float = 0.0


class Adagrad(Config):
    type: Literal["adagrad"] = "adagrad"
    lr: float = 1e-2
    lr_decay: float = 0.0
    eps: float = 1e-10
    weight_decay: float = 0.0


class Adadelta(Config):
    """Zeiler's AdaDelta (torch.optim.Adadelta; Caffe's AdaDelta solver: rho = momentum, eps = delta)."""

    type: Literal["adadelta"] = "adadelta"
    lr: float = 1.0
    rho: float = Field(default=0.9, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-6, gt=0.0)
    weight_decay: float = 0.0


Optimizer = SGD | Adam | AdamW | RMSprop | Adagrad | Adadelta
OPTIMIZERS: dict[str, type[Config]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
                                       "adadelta": Adadelta}

# ---- schedules -------------------------------------------------------------------------------


class Constant(Config):
    type: Literal["constant"] = "constant"


class Step(Config):
    type: Literal["step"] = "step"
    step_size: int
    gamma: float = 0.1


class MultiStep(Config):
    type: Literal["multistep"] = "multistep"
    milestones: tuple[int, ...]
    gamma: float = 0.1


class Exponential(Config):
    type: Literal["exponential"] = "exponential"
    gamma: float


class Cosine(Config):
    type: Literal["cosine"] = "cosine"
    t_max: int | None = Field(default=None, description="epochs of the cosine; default: the remaining epochs")
    eta_min: float = 0.0


class OneCycle(Config):
    type: Literal["one_cycle"] = "one_cycle"
    max_lr: float
    pct_start: float = 0.3
    anneal: Literal["cos", "linear"] = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4


class Plateau(Config):
    type: Literal["plateau"] = "plateau"
    monitor: str = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"
    factor: float = 0.1
    patience: int = 10
    min_lr: float = 0.0


class Warmup(Config):
    type: Literal["warmup"] = "warmup"
    epochs: int = 5
    start_factor: float = 0.01


class CaffeLR(Config):
    """Caffe's `lr_policy`, per iteration (batch), counted from 0: the rate at iteration `it` is
    lr · factor(it) (docs/caffe.md). `dlspec import --solver` writes it; it follows no warm-up."""

    type: Literal["caffe_lr"] = "caffe_lr"
    policy: Literal["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"] = "fixed"
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = Field(default=0, ge=0)
    stepvalue: tuple[int, ...] = ()
    max_iter: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> CaffeLR:
        need = {"step": ("stepsize", "gamma"), "exp": ("gamma",), "inv": ("gamma", "power"),
                "multistep": ("stepvalue", "gamma"), "poly": ("max_iter", "power"), "sigmoid": ("gamma", "stepsize")}
        missing = [f for f in need.get(self.policy, ()) if f not in self.model_fields_set]
        if missing:
            raise ValueError(f"caffe_lr(policy={self.policy}) needs {', '.join(missing)}")
        if self.policy == "step" and self.stepsize <= 0:
            raise ValueError("caffe_lr(policy=step) needs stepsize > 0")
        if self.policy == "poly" and self.max_iter <= 0:
            raise ValueError("caffe_lr(policy=poly) needs max_iter > 0")
        if list(self.stepvalue) != sorted(self.stepvalue):
            raise ValueError("caffe_lr: stepvalue must increase")
        return self


def caffe_lr_factor(s: CaffeLR, it: int) -> float:
    """Caffe's learning-rate factor at iteration `it` (0-based) for the policy `s`."""
    import math

    p = s.policy
    if p == "step":
        return s.gamma ** (it // s.stepsize)
    if p == "exp":
        return s.gamma ** it
    if p == "inv":
        return (1.0 + s.gamma * it) ** (-s.power)
    if p == "multistep":
        return s.gamma ** sum(1 for v in s.stepvalue if it >= v)
    if p == "poly":
        return max(0.0, 1.0 - it / s.max_iter) ** s.power
    if p == "sigmoid":
        z = -s.gamma * (it - s.stepsize)
        return 0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))
    return 1.0


def caffe_lr_lambda(s: CaffeLR) -> str:
    """The factor as a Python lambda of the iteration (numbers only, no names): the source a
    LambdaLR stepped every batch takes, in the trainer and in standalone scripts."""
    g, pw, ss, mi = repr(float(s.gamma)), repr(float(s.power)), int(s.stepsize), int(s.max_iter)
    body = {
        "fixed": "1.0",
        "step": f"{g} ** (i // {ss})",
        "exp": f"{g} ** i",
        "inv": f"(1.0 + {g} * i) ** (-{pw})",
        "multistep": f"{g} ** sum(1 for v in {tuple(int(v) for v in s.stepvalue)!r} if i >= v)",
        "poly": f"max(0.0, 1.0 - i / {mi}) ** {pw}",
        "sigmoid": f"1.0 / (1.0 + 2.718281828459045 ** min(700.0, -{g} * (i - {ss})))",
    }[s.policy]
    return f"lambda i: {body}"


Schedule = Constant | Step | MultiStep | Exponential | Cosine | OneCycle | Plateau | Warmup | CaffeLR
SCHEDULES: dict[str, type[Config]] = {
    "constant": Constant,
    "step": Step,
    "multistep": MultiStep,
    "exponential": Exponential,
    "cosine": Cosine,
    "one_cycle": OneCycle,
    "plateau": Plateau,
    "reduce_on_plateau": Plateau,
    "warmup": Warmup,
    "caffe_lr": CaffeLR,
}

# ---- losses ----------------------------------------------------------------------------------


class CrossEntropy(Config):
    type: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None
    ignore_index: int = -100


class BCE(Config):
    type: Literal["bce"] = "bce"
    pos_weight: float | None = None


class BCEWithLogits(Config):
    type: Literal["bce_with_logits"] = "bce_with_logits"
    pos_weight: float | None = None


class MSE(Config):
    type: Literal["mse"] = "mse"


class MAE(Config):
    type: Literal["mae"] = "mae"


class Huber(Config):
    type: Literal["huber"] = "huber"
    delta: float = 1.0


class NLL(Config):
    type: Literal["nll"] = "nll"
    class_weights: tuple[float, ...] | None = None


class KLDiv(Config):
    type: Literal["kl_div"] = "kl_div"
    log_target: bool = False


class Dice(Config):
    type: Literal["dice"] = "dice"
    smooth: float = 1.0


Loss = CrossEntropy | BCE | BCEWithLogits | MSE | MAE | Huber | NLL | KLDiv | Dice
LOSSES: dict[str, type[Config]] = {
    "cross_entropy": CrossEntropy,
    "bce": BCE,
    "bce_with_logits": BCEWithLogits,
    "mse": MSE,
    "mae": MAE,
    "huber": Huber,
    "nll": NLL,
    "kl_div": KLDiv,
    "dice": Dice,
}

# ---- metrics ---------------------------------------------------------------------------------


class Metric(Config):
    type: Literal["accuracy", "top_k", "precision", "recall", "f1", "mse", "mae", "r2", "iou", "dice"]
    k: int = 5
    average: Literal["macro", "micro"] = "macro"
    output: str | None = None

    @property
    def key(self) -> str:
        if self.type == "top_k":
            return f"top{self.k}"
        if self.type in ("precision", "recall", "f1"):
            return f"{self.average}_{self.type}"
        return self.type


METRIC_ALIASES: dict[str, dict[str, Any]] = {
    "accuracy": {"type": "accuracy"},
    "top_k": {"type": "top_k"},
    "top5": {"type": "top_k", "k": 5},
    "precision": {"type": "precision"},
    "recall": {"type": "recall"},
    "f1": {"type": "f1"},
    "macro_f1": {"type": "f1", "average": "macro"},
    "micro_f1": {"type": "f1", "average": "micro"},
    "macro_precision": {"type": "precision", "average": "macro"},
    "micro_precision": {"type": "precision", "average": "micro"},
    "macro_recall": {"type": "recall", "average": "macro"},
    "micro_recall": {"type": "recall", "average": "micro"},
    "mse": {"type": "mse"},
    "mae": {"type": "mae"},
    "r2": {"type": "r2"},
    "iou": {"type": "iou"},
    "dice": {"type": "dice"},
}

# ---- data ------------------------------------------------------------------------------------

BuiltinName = Literal[
    "digits", "digits_multitask", "iris", "wine", "breast_cancer", "sunspots",
    "sequence", "sentiment", "tagging", "reverse", "segmentation",
]
BUILTIN_DATASETS: tuple[str, ...] = BuiltinName.__args__  # type: ignore[attr-defined]


class Builtin(Config):
    """Datasets that ship offline. Shapes (x → y), N examples:

    digits            float32[N, 1, 8, 8] in [0, 1] (size=16/32 upsamples) → int64[N], 10 classes
    digits_multitask  same x → {"digit": int64[N] (10 classes), "parity": int64[N] (2 classes)}
    iris / wine / breast_cancer   float32[N, 4 / 13 / 30] standardized → int64[N], 3 / 3 / 2 classes
    sunspots          float32[N, window, 1] standardized yearly sunspots → float32[N, horizon]
    sequence          int64[N, 24] tokens in 0..9 → int64[N]: 1 if token 1 outnumbers token 2
    sentiment         int64[N, 32] tokens in 0..49 → int64[N]: 1 if positive words (2..9) outnumber negative (10..17)
    tagging           int64[N, 20] tokens in 0..19 → int64[N, 20] tags in 0..2 that depend on the previous token
    reverse           (int64[N, 10] source, int64[N, 10] decoder input) → int64[N, 10], the source reversed; vocab 12
    segmentation      float32[N, 1, 32, 32] noisy shapes → float32[N, 1, 32, 32] binary mask

    `autoencode=true` makes the target the input itself.
    """

    type: Literal["builtin"] = "builtin"
    name: BuiltinName
    autoencode: bool = False
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    shuffle: bool = True
    classes: tuple[int, ...] | None = Field(default=None, description="keep only these labels (relabelled 0..k-1)")
    per_class: int | None = Field(default=None, description="keep at most this many training examples per class")
    window: int = 24
    horizon: int = 1
    size: int | None = None
    samples: int | None = None


class Csv(Config):
    type: Literal["csv"] = "csv"
    path: str
    features: tuple[str, ...] | None = None
    label: str
    task: Literal["classification", "regression"] = "classification"
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    shuffle: bool = True


class Npz(Config):
    type: Literal["npz"] = "npz"
    path: str
    x: str = "x"
    y: str = "y"
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    shuffle: bool = True


class Images(Config):
    type: Literal["images"] = "images"
    path: str
    size: tuple[int, int] = (32, 32)
    grayscale: bool = False
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    shuffle: bool = True


class Texts(Config):
    type: Literal["texts"] = "texts"
    path: str
    max_len: int = 64
    vocab: int = 10000
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    shuffle: bool = True


Data = Builtin | Csv | Npz | Images | Texts
DATASETS: dict[str, type[Config]] = {"builtin": Builtin, "csv": Csv, "npz": Npz, "images": Images, "texts": Texts}

# ---- callbacks and the rest ------------------------------------------------------------------


class ClipNorm(Config):
    type: Literal["norm"] = "norm"
    max: float


class ClipValue(Config):
    type: Literal["value"] = "value"
    max: float


CLIPS: dict[str, type[Config]] = {"norm": ClipNorm, "value": ClipValue}


class EarlyStop(Config):
    type: Literal["early_stop"] = "early_stop"
    monitor: str = "val_loss"
    patience: int = 10
    mode: Literal["min", "max", "auto"] = "auto"
    min_delta: float = 0.0


class Checkpoint(Config):
    type: Literal["checkpoint"] = "checkpoint"
    every: int = 1
    keep: int = 3
    best: bool = True
    monitor: str = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"


DIRECTIVES: dict[str, type[Config]] = {"early_stop": EarlyStop, "checkpoint": Checkpoint}


class ModelCall(Config):
    """A model named by a recipe, with its arguments."""

    name: str
    args: dict[str, Any] = {}


class Common(Config):
    """Fields every recipe kind shares."""

    name: str
    data: Data
    epochs: int = 10
    batch: int = 32
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    metrics: tuple[Metric, ...] = ()
    early_stop: EarlyStop | None = None
    checkpoint: Checkpoint = Checkpoint()
    clip_grad: ClipNorm | ClipValue | None = None
    l1: float = 0.0
    l2: float = 0.0
    span: Span | None = None


class Search(Config):
    """A recipe's `search = {...}` entry: how `dlspec search` explores the spec's search values
    (docs/search.md)."""

    objective: str = Field(default="val_loss", description="a metric the run logs each epoch (its best epoch's value), or test_<metric>")
    direction: Literal["minimize", "maximize"] | None = Field(default=None, description="default: minimize losses and errors, maximize the rest")
    trials: int = Field(default=20, ge=1, description="configurations trained (invalid ones are not counted)")
    timeout: float | None = Field(default=None, gt=0, description="seconds after which no new trial starts")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "halving", "hyperband", "none"] = "median"
    seed: int | None = Field(default=None, description="the sampler's seed (default: the recipe's seed)")


class TrainConfig(Common):
    kind: Literal["supervised"] = "supervised"
    model: ModelCall
    loss: Loss | dict[str, Loss] = CrossEntropy()
    loss_weights: dict[str, float] = {}
    optimizer: Optimizer = Adam()
    schedule: tuple[Schedule, ...] = ()
    lr_groups: dict[str, float] = Field(default={}, description="layer-path pattern → learning rate")
    decay_groups: dict[str, float] = Field(default={}, description="layer-path pattern → weight decay (replaces the optimizer's)")
    accumulate: int = Field(default=1, ge=1, le=4096, description="batches whose gradients add up to one optimizer step "
                                                                    "(the schedule counts optimizer steps)")
    unfreeze: dict[int, tuple[str, ...]] = Field(default={}, description="epoch → patterns to unfreeze then")
    search: Search | None = Field(default=None, description="`dlspec search`: the hyper-parameter search of this recipe")

    @model_validator(mode="after")
    def _groups_valid(self) -> TrainConfig:
        bad = [f"{k} = {v}" for k, v in self.decay_groups.items() if not v >= 0.0]
        if bad:
            raise ValueError(f"decay_groups needs weight decays >= 0 ({', '.join(bad)})")
        bad = [f"{k} = {v}" for k, v in self.lr_groups.items() if not v >= 0.0]
        if bad:
            raise ValueError(f"lr_groups needs learning rates >= 0 ({', '.join(bad)})")
        return self


class GanConfig(Common):
    kind: Literal["gan"] = "gan"
    generator: ModelCall
    discriminator: ModelCall
    g_optimizer: Optimizer = Adam(lr=2e-4, betas=(0.5, 0.999))
    d_optimizer: Optimizer = Adam(lr=2e-4, betas=(0.5, 0.999))
    loss: Literal["standard", "hinge", "wgan_gp"] = "standard"
    gp_weight: float = 10.0
    d_steps: int = 1
    label_smoothing: float = 0.0
    sample_grid: int = 64


class DistillConfig(Common):
    kind: Literal["distill"] = "distill"
    teacher: ModelCall
    student: ModelCall
    teacher_weights: str | None = None
    temperature: float = 4.0
    alpha: float = 0.5
    loss: Loss = CrossEntropy()
    optimizer: Optimizer = Adam()
    schedule: tuple[Schedule, ...] = ()


Recipe = TrainConfig | GanConfig | DistillConfig
KINDS: dict[str, type[Config]] = {"gan": GanConfig, "distill": DistillConfig}

def logged_keys(outputs: list[str], metrics: tuple[Metric, ...]) -> list[str]:
    """The keys a supervised run logs each epoch for a model with these outputs: `loss`, one
    loss per output when there are several, each metric (per output), and their `val_` twins.
    The trainers log exactly these; `dlspec check` tests monitors against them."""
    keys = ["loss"]
    multi = len(outputs) > 1
    for o in outputs:
        if multi:
            keys.append(f"{o}_loss")
        for m in metrics:
            if m.output is None or m.output == o:
                keys.append(f"{o}_{m.key}" if multi else m.key)
    return keys + [f"val_{k}" for k in keys]
