"""Training recipes as typed configs: data, loss, optimizer, schedule, metrics, callbacks.

A recipe's calls (`adam(lr=1e-3)`) are looked up in the tables below by name; each entry is a
pydantic model, strict about unknown keys. `recipe_from_entries` turns the evaluated recipe body
into a `TrainConfig`, `GanConfig` or `DistillConfig`, reporting every bad key with a suggestion.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import Diagnostic, did_you_mean
from ..source import Span
from ..values import Arg, ConfigCall, EnumName, ModelRef, ThenChain, describe


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


Optimizer = SGD | Adam | AdamW | RMSprop | Adagrad
OPTIMIZERS: dict[str, type[Config]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}

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


Schedule = Constant | Step | MultiStep | Exponential | Cosine | OneCycle | Plateau | Warmup
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


class TrainConfig(Common):
    kind: Literal["supervised"] = "supervised"
    model: ModelCall
    loss: Loss | dict[str, Loss] = CrossEntropy()
    loss_weights: dict[str, float] = {}
    optimizer: Optimizer = Adam()
    schedule: tuple[Schedule, ...] = ()
    lr_groups: dict[str, float] = Field(default={}, description="layer-path pattern → learning rate")
    unfreeze: dict[int, tuple[str, ...]] = Field(default={}, description="epoch → patterns to unfreeze then")


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

# ---- conversion from evaluated recipe values --------------------------------------------------


class RecipeError(Exception):
    def __init__(self, diag: Diagnostic):
        self.diag = diag


def _fail(code: str, message: str, span: Span | None, hint: str | None = None) -> RecipeError:
    return RecipeError(Diagnostic(code=code, message=message, span=span, hint=hint))


def plain(v: Any, span: Span) -> Any:
    """A recipe value as plain data (names become strings)."""
    if isinstance(v, EnumName):
        return v.name
    if isinstance(v, (list, tuple)):
        return [plain(x, span) for x in v]
    if isinstance(v, dict):
        return {k: plain(x, span) for k, x in v.items()}
    if isinstance(v, (ConfigCall, ModelRef, ThenChain)):
        raise _fail("E403", f"{describe(v)} is not a plain value here", span)
    return v


def _call_to(table: dict[str, type[Config]], what: str, v: Any, span: Span, defaults: dict | None = None) -> Config:
    if isinstance(v, EnumName):
        v = ConfigCall(v.name, [], {}, v.span)
    if isinstance(v, str):
        v = ConfigCall(v, [], {}, span)
    if not isinstance(v, ConfigCall):
        raise _fail("E402", f"`{what}` needs a call such as {next(iter(table))}(...); got {describe(v)}", span)
    if v.name not in table:
        raise _fail("E402", f"unknown {what} `{v.name}`", v.span,
                    hint=did_you_mean(v.name, table) or f"one of {', '.join(table)}")
    model = table[v.name]
    fields = [f for f in model.model_fields if f != "type"]
    values: dict[str, Any] = dict(defaults or {})
    if len(v.args) > len(fields):
        raise _fail("E403", f"{v.name} takes at most {len(fields)} argument(s)", v.args[len(fields)].span)
    for f, a in zip(fields, v.args):
        values[f] = plain(a.value, a.span)
    for k, a in v.kwargs.items():
        if k not in fields:
            raise _fail("E403", f"{v.name} has no option `{k}`", a.span,
                        hint=did_you_mean(k, fields) or (f"its options: {', '.join(fields)}" if fields else f"{v.name} takes no options"))
        values[k] = plain(a.value, a.span)
    try:
        return model(**values)
    except ValidationError as exc:
        raise _fail("E404", _pretty(v.name, exc), v.span) from None


def _pretty(name: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "missing":
            parts.append(f"{name} needs `{loc}`")
        elif e["type"] == "literal_error":
            parts.append(f"`{loc}` of {name}: {e['msg'].lower()} (got {e.get('input')!r})")
        else:
            parts.append(f"`{loc}` of {name}: {e['msg'].lower()} (got {e.get('input')!r})")
    out: list[str] = []
    for p in parts:
        if p.split(":")[0] not in [o.split(":")[0] for o in out]:
            out.append(p)
    return "; ".join(out)


def _metric(v: Any, span: Span) -> Metric:
    if isinstance(v, EnumName):
        v = ConfigCall(v.name, [], {}, v.span)
    if isinstance(v, str):
        v = ConfigCall(v, [], {}, span)
    if not isinstance(v, ConfigCall):
        raise _fail("E402", f"a metric is a name such as `accuracy`; got {describe(v)}", span)
    if v.name not in METRIC_ALIASES:
        raise _fail("E402", f"unknown metric `{v.name}`", v.span,
                    hint=did_you_mean(v.name, METRIC_ALIASES) or f"one of {', '.join(METRIC_ALIASES)}")
    base = METRIC_ALIASES[v.name]
    fields = ["k"] if base["type"] == "top_k" else ["average"] if base["type"] in ("precision", "recall", "f1") else []
    values = dict(base)
    for f, a in zip(fields, v.args):
        values[f] = plain(a.value, a.span)
    for k, a in v.kwargs.items():
        if k not in ("k", "average", "output"):
            raise _fail("E403", f"metric {v.name} has no option `{k}`", a.span, hint=did_you_mean(k, ["k", "average", "output"]))
        values[k] = plain(a.value, a.span)
    try:
        return Metric(**values)
    except ValidationError as exc:
        raise _fail("E404", _pretty(v.name, exc), v.span) from None


def _model_call(v: Any, span: Span, models: dict[str, Any]) -> ModelCall:
    if isinstance(v, EnumName):
        raise _fail("E101", f"unknown model `{v.name}`", v.span, hint=did_you_mean(v.name, models))
    if not isinstance(v, ModelRef):
        raise _fail("E405", f"expected a model, such as Generator(latent=64); got {describe(v)}", span)
    names = [p.name for p in v.model.params]
    args: dict[str, Any] = {}
    for p, a in zip(names, v.args):
        args[p] = plain(a.value, a.span)
    for k, a in v.kwargs.items():
        args[k] = plain(a.value, a.span)
    return ModelCall(name=v.model.name, args=args)


def _schedule(v: Any, span: Span) -> tuple[Config, ...]:
    parts = v.parts if isinstance(v, ThenChain) else [v]
    out = tuple(_call_to(SCHEDULES, "schedule", p, span) for p in parts)
    for s in out[:-1]:
        if not isinstance(s, Warmup):
            raise _fail("E406", "only `warmup(...)` can come before `then`", span,
                        hint="write `schedule = warmup(epochs=5) then cosine()`")
    return out


def _loss(v: Any, span: Span) -> Any:
    if isinstance(v, dict):
        return {k: _call_to(LOSSES, "loss", x, span) for k, x in v.items()}
    return _call_to(LOSSES, "loss", v, span)


CONVERTERS = {
    "data": lambda v, s: _call_to(DATASETS, "data source", v, s),
    "loss": _loss,
    "optimizer": lambda v, s: _call_to(OPTIMIZERS, "optimizer", v, s),
    "g_optimizer": lambda v, s: _call_to(OPTIMIZERS, "optimizer", v, s),
    "d_optimizer": lambda v, s: _call_to(OPTIMIZERS, "optimizer", v, s),
    "schedule": _schedule,
    "clip_grad": lambda v, s: _call_to(CLIPS, "clipping", v, s),
    "metrics": lambda v, s: tuple(_metric(x, s) for x in (v if isinstance(v, (list, tuple)) else [v])),
}


def recipe_from_entries(
    kind: str | None,
    name: str,
    model: Any,
    entries: dict[str, Arg],
    directives: list[ConfigCall],
    models: dict[str, Any],
    span: Span,
) -> tuple[Any, list[Diagnostic]]:
    """Build the config; returns (config or None, diagnostics)."""
    diags: list[Diagnostic] = []
    cls: type[Config] = TrainConfig if kind is None else KINDS[kind]
    values: dict[str, Any] = {"name": name, "span": span}
    if kind is None:
        values["model"] = model
    fields = [f for f in cls.model_fields if f not in ("kind", "name", "span", "model")]
    for key, arg in entries.items():
        try:
            if key not in fields:
                raise _fail("E407", f"unknown recipe key `{key}`", arg.span,
                            hint=did_you_mean(key, fields) or f"keys: {', '.join(sorted(fields))}")
            if key in CONVERTERS and not (key == "loss" and kind == "gan"):  # a GAN's loss is a name: hinge
                values[key] = CONVERTERS[key](arg.value, arg.span)
            elif key in ("generator", "discriminator", "teacher", "student"):
                values[key] = _model_call(arg.value, arg.span, models)
            else:
                values[key] = plain(arg.value, arg.span)
        except RecipeError as exc:
            diags.append(exc.diag)
    for d in directives:
        try:
            if d.name not in DIRECTIVES:
                raise _fail("E408", f"unknown recipe directive `{d.name}`", d.span,
                            hint=did_you_mean(d.name, DIRECTIVES) or "directives: early_stop(...), checkpoint(...)")
            values[d.name] = _call_to(DIRECTIVES, "directive", d, d.span)
        except RecipeError as exc:
            diags.append(exc.diag)
    if "data" not in values and not diags:
        diags.append(Diagnostic(code="E409", message=f"recipe `{name}` has no `data`", span=span,
                                hint='add `data = builtin("digits")` or `data = csv("file.csv", label="y")`'))
    if diags:
        return None, diags
    try:
        return cls(**values), []
    except ValidationError as exc:
        spans = {k: a.span for k, a in entries.items()}
        out = []
        for e in exc.errors():
            key = str(e["loc"][0]) if e["loc"] else ""
            msg = f"needs `{key}`" if e["type"] == "missing" else f"`{key}`: {e['msg'].lower()} (got {e.get('input')!r})"
            out.append(Diagnostic(code="E410", message=f"recipe `{name}` {msg}", span=spans.get(key, span)))
        return None, out


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
