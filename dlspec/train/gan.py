"""`train gan`: a generator and a discriminator trained against each other, each with its own
optimizer, `d_steps` discriminator steps per generator step.

Losses (D(x) is the discriminator's logit or critic score, z ~ N(0, 1)):

    standard  D: BCE(D(x), 1 − label_smoothing) + BCE(D(G(z)), 0)    G: BCE(D(G(z)), 1)   (non-saturating)
    hinge     D: mean relu(1 − D(x)) + mean relu(1 + D(G(z)))          G: −mean D(G(z))
    wgan_gp   D: mean D(G(z)) − mean D(x) + gp_weight · mean (‖∇D(x̂)‖ − 1)²   G: −mean D(G(z))
              with x̂ a random mix of a real and a generated example (Gulrajani et al., 2017)

One-sided label smoothing (Salimans et al., 2016) only softens the real targets of `standard`.

Every epoch the generator (in eval mode) draws a fixed, seeded noise batch into
`samples/epoch_NNN.png`, and the spread of those samples is compared with the data's:

    sample_diversity = mean pairwise L2 distance of the samples / the same for as many real images

A generator that has collapsed onto a few modes draws nearly the same picture for every z, so
the ratio falls towards 0; when it is under `COLLAPSE_RATIO` the epoch is flagged
(`mode_collapse = 1` in metrics.jsonl and a warning line).

Run folder: generator.safetensors and discriminator.safetensors (weights after the last finished
epoch, canonical layout), generator.json / discriminator.json (their graphs; graph.json is the
generator's, so `dlspec predict` maps noise to samples), metrics.jsonl/csv, curves.png, samples/,
and checkpoints/epoch-NNNN/ with both networks, both optimizers and the RNG state for --resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import error
from ..ir.graph import Graph
from .loop import Outcome, Stepper
from .run import (  # the run folder's rule (the sample command imports it from here)
    TEST_METRICS,
    atomic_write_json,
    role_weights,
)

#: an epoch whose fixed-noise samples spread less than this share of the data's is flagged
COLLAPSE_RATIO = 0.3



# ---- sample diversity (numpy only) ------------------------------------------------------------


def mean_pairwise_distance(batch: np.ndarray) -> float:
    """Mean L2 distance between the distinct pairs of a batch of examples (any shape per example)."""
    flat = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
    n = len(flat)
    if n < 2:
        return 0.0
    sq = (flat * flat).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    return float(np.sqrt(d2)[np.triu_indices(n, k=1)].mean())


def diversity_ratio(samples: np.ndarray, reference: np.ndarray) -> float:
    """How much the samples vary relative to real data: 1 ≈ as varied as the data, 0 = all alike."""
    ref = mean_pairwise_distance(reference)
    return mean_pairwise_distance(samples) / ref if ref > 0 else 0.0


def is_mode_collapse(ratio: float, threshold: float = COLLAPSE_RATIO) -> bool:
    return not math.isfinite(ratio) or ratio < threshold


# ---- pictures ---------------------------------------------------------------------------------


def drawable(shape: tuple[int, ...]) -> bool:
    """Whether a batch of this shape ([N, C, H, W] with C = 1 or 3, or [N, H, W]) draws as images."""
    return len(shape) == 3 or (len(shape) == 4 and shape[1] in (1, 3))


def to_pixels(batch: np.ndarray) -> np.ndarray:
    """Floats [N, C, H, W] or [N, H, W] → uint8 [N, H, W] (grey) or [N, H, W, 3] (RGB).

    Values in [0, 1] are drawn as they are; a batch with negative values is taken to lie in
    [-1, 1] (a tanh generator) and mapped onto [0, 1]; everything is clipped to that range."""
    a = np.asarray(batch, dtype=np.float32)
    if a.ndim == 4:
        a = a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)
    if a.size and float(a.min()) < 0.0:
        a = (a + 1.0) / 2.0
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def tile(pixels: np.ndarray, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 images [N, H, W(, 3)] side by side, `cols` a row (default: as square as possible)."""
    n = len(pixels)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    h, w = pixels.shape[1:3]
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *pixels.shape[3:]), 255, dtype=np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = img
    return out


def save_png(pixels: np.ndarray, path: Path, scale: int = 1) -> None:
    """Write one uint8 picture, enlarged `scale` times (nearest neighbour), atomically."""
    from PIL import Image

    from ..io import atomic_write

    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"), suffix=".png")


def scale_for(side: int, target: int = 32) -> int:
    """A nearest-neighbour factor that makes tiny images (8×8 digits) visible."""
    return max(1, target // max(side, 1))


# ---- the roles ---------------------------------------------------------------------------------


def noise_shape(generator: Graph) -> tuple[int, ...]:
    """The shape of one noise example: the generator's only input, minus the batch axis (the
    check-time rule E640 makes it one float input of numbers)."""
    return tuple(int(d) for d in generator.inputs[0].type.shape[1:])


def check_networks(generator: Graph, discriminator: Graph) -> None:
    """The rules `dlspec check` holds a GAN's two networks to (`program.gan_network_problems`),
    asked again of the graphs a run folder holds."""
    from ..program import gan_network_problems

    for code, message, hint, _ in gan_network_problems(generator, discriminator):
        raise error(code, message, hint=hint)


def check_data(discriminator: Graph, data_shape: tuple[int, ...], data_name: str) -> None:
    """The data feeds the discriminator: its examples must be what the discriminator takes."""
    want = discriminator.inputs[0].type
    dims = want.shape[1:]
    if len(dims) != len(data_shape) or any(isinstance(d, int) and d != s for d, s in zip(dims, data_shape)):
        raise error("E641", f"data {data_name} gives examples {list(data_shape)} but discriminator "
                    f"`{discriminator.name}` takes {want}",
                    hint="match the data to the networks (builtin(\"digits\", size=16) gives [1, 16, 16])")


# ---- the GAN's epoch ---------------------------------------------------------------------------


class GanLoop:
    """The GAN program's part of the epoch loop (`loop.EpochLoop`): no validation split to
    monitor; every epoch draws the fixed-noise samples, measures their diversity, and writes both
    networks' weights; the final results are the last epoch's."""

    keeps_best = False
    unfreezes = False
    last_every_epoch = True

    def __init__(self) -> None:
        self.ratio = 0.0

    def after_train(self, stepper: Any, epoch: int, logs: dict[str, Any]) -> None:
        self.ratio = stepper.render(epoch)
        logs["sample_diversity"] = round(self.ratio, 4)
        logs["mode_collapse"] = int(is_mode_collapse(self.ratio))

    def line(self, logs: dict[str, Any], epochs: int) -> str:
        return (f"epoch {logs['epoch']}/{epochs}  d_loss={logs['d_loss']:.4f}  g_loss={logs['g_loss']:.4f}  "
                f"D(x)={logs['d_real']:.3f}  D(G(z))={logs['d_fake']:.3f}  diversity={self.ratio:.3f}  "
                f"({logs['time']:.1f}s)")

    def after_line(self, logs: dict[str, Any], echo: Any) -> None:
        if logs["mode_collapse"]:
            echo(f"warning: possible mode collapse in epoch {logs['epoch']}: the fixed-noise samples vary "
                 f"{self.ratio:.2f}× as much as real images (threshold {COLLAPSE_RATIO})")

    def final(self, loop: Any, epoch: int, stopped: bool) -> Outcome:
        s = loop.stepper
        records = s.log.records
        final = {k: v for k, v in records[-1].items() if k not in ("epoch", "time")} if records else {}
        atomic_write_json(s.run / TEST_METRICS, final)
        return Outcome(s.run, epoch, False, final, {})


# ---- the trainer -------------------------------------------------------------------------------


class GanTrainer(Stepper):
    """The PyTorch stepper of `train gan`; `fit()` runs the one epoch loop (`loop.py`) with the
    GAN program's epoch (fixed-noise samples and their diversity, both networks' weights)."""

    hooks = GanLoop
    writes = True

    def __init__(self, generator: Graph, discriminator: Graph, cfg: Any, bundle: Any, run: Path, device: Any,
                 progress: bool = True, echo=print):
        import torch

        from ..backends import get_backend
        from . import torch_loop as tl
        from .run import RunLog

        self.gen_graph, self.dis_graph, self.cfg, self.run = generator, discriminator, cfg, run
        self.device, self.progress, self.echo = device, progress, echo
        self.real = torch.from_numpy(np.ascontiguousarray(bundle.train.x[0])).float()
        check_data(discriminator, tuple(self.real.shape[1:]), bundle.name)
        self.noise = noise_shape(generator)
        torch.manual_seed(cfg.seed)
        self.gen = get_backend("torch").build(generator).to(device)
        self.dis = get_backend("torch").build(discriminator).to(device)
        self.real = self.real.to(device)
        self.opt_g = tl.make_optimizer(cfg.g_optimizer, [{"params": [p for p in self.gen.parameters() if p.requires_grad],
                                                          "lr": cfg.g_optimizer.lr}])
        self.d_params = [p for p in self.dis.parameters() if p.requires_grad]  # frozen ones stay frozen
        self.opt_d = tl.make_optimizer(cfg.d_optimizer, [{"params": self.d_params, "lr": cfg.d_optimizer.lr}])
        self.g_fwd = torch.compile(self.gen) if cfg.compile else self.gen
        self.d_fwd = torch.compile(self.dis) if cfg.compile else self.dis
        fixed = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
        self.fixed_noise = torch.randn((cfg.sample_grid, *self.noise), generator=fixed).to(device)
        pick = np.random.default_rng(cfg.seed).choice(len(self.real), size=min(cfg.sample_grid, len(self.real)),
                                                      replace=False)
        self.reference = self.real[torch.from_numpy(np.sort(pick))].cpu().numpy()
        self.steps_per_epoch = max(1, math.ceil(len(self.real) / cfg.batch))
        self.log = RunLog(run)
        self.steps_done = 0
        self.title = f"{generator.name} vs {discriminator.name} — {cfg.name}"

    # -- losses
    def _autocast(self):
        import torch

        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _score(self, x):
        return self.d_fwd(x).float().reshape(-1)

    def _gradient_penalty(self, real, fake):
        import torch

        mix = torch.rand((len(real),) + (1,) * (real.ndim - 1), device=real.device)
        x_hat = (mix * real + (1 - mix) * fake).requires_grad_(True)
        score = self._score(x_hat)
        (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
        return ((grad.reshape(len(grad), -1).norm(2, dim=1) - 1.0) ** 2).mean()

    def d_loss(self, real, fake):
        """The discriminator's loss on a real and a (detached) generated batch, with D(x), D(G(z))."""
        import torch
        import torch.nn.functional as F

        s_real, s_fake = self._score(real), self._score(fake)
        kind = self.cfg.loss
        if kind == "standard":
            target = torch.full_like(s_real, 1.0 - self.cfg.label_smoothing)
            loss = F.binary_cross_entropy_with_logits(s_real, target) + \
                F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake))
            return loss, torch.sigmoid(s_real).mean(), torch.sigmoid(s_fake).mean()
        if kind == "hinge":
            loss = F.relu(1.0 - s_real).mean() + F.relu(1.0 + s_fake).mean()
        else:
            loss = s_fake.mean() - s_real.mean() + self.cfg.gp_weight * self._gradient_penalty(real, fake)
        return loss, s_real.mean(), s_fake.mean()

    def g_loss(self, fake):
        import torch
        import torch.nn.functional as F

        s_fake = self._score(fake)
        if self.cfg.loss == "standard":
            return F.binary_cross_entropy_with_logits(s_fake, torch.ones_like(s_fake))
        return -s_fake.mean()

    # -- steps
    def _clip(self, module) -> None:
        import torch

        from ..ir.training import ClipNorm

        clip = self.cfg.clip_grad
        if clip is None:
            return
        params = [p for p in module.parameters() if p.grad is not None]
        if isinstance(clip, ClipNorm):
            torch.nn.utils.clip_grad_norm_(params, clip.max)
        else:
            torch.nn.utils.clip_grad_value_(params, clip.max)

    def _finite(self, value, what: str, epoch: int) -> float:
        v = float(value.detach())
        if not math.isfinite(v):
            raise error("E643", f"the {what} loss became {v} in epoch {epoch}; training stopped",
                            hint="lower the learning rates, add clip_grad = norm(1.0), or try loss = hinge; "
                                 "the checkpoints of the finished epochs are intact")
        return v

    def _sample_noise(self, n: int):
        import torch

        return torch.randn((n, *self.noise), device=self.device)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from . import torch_loop as tl

        self.gen.train()
        self.dis.train()
        sums = {"d_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        g_sum, d_count, g_count = 0.0, 0, 0
        bar = self._bar(epoch)
        data = tl.Tensors([self.real], self.real)
        for b in tl.batches(data, self.cfg.batch, True, self.cfg.seed, epoch):
            real = b.x[0]
            with self._autocast():
                fake = self.g_fwd(self._sample_noise(len(real))).float()
                loss, d_real, d_fake = self.d_loss(real, fake.detach())
            v = self._finite(loss, "discriminator", epoch)
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self._clip(self.dis)
            self.opt_d.step()
            sums["d_loss"] += v
            sums["d_real"] += float(d_real.detach())
            sums["d_fake"] += float(d_fake.detach())
            d_count += 1
            self.steps_done += 1
            if self.steps_done % self.cfg.d_steps == 0:
                for p in self.d_params:  # the generator's step computes no discriminator gradients
                    p.requires_grad_(False)
                with self._autocast():
                    gl = self.g_loss(self.g_fwd(self._sample_noise(len(real))).float())
                g_sum += self._finite(gl, "generator", epoch)
                g_count += 1
                self.opt_g.zero_grad(set_to_none=True)
                gl.backward()
                self._clip(self.gen)
                self.opt_g.step()
                for p in self.d_params:
                    p.requires_grad_(True)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(d=f"{sums['d_loss'] / d_count:.3f}", g=f"{g_sum / max(g_count, 1):.3f}")
        if bar is not None:
            bar.close()
        logs = {k: v / max(d_count, 1) for k, v in sums.items()}
        logs["g_loss"] = g_sum / g_count if g_count else float("nan")
        return {"d_loss": logs["d_loss"], "g_loss": logs["g_loss"], "d_real": logs["d_real"], "d_fake": logs["d_fake"]}

    def _bar(self, epoch: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False, unit="batch")

    def samples(self, noise) -> np.ndarray:
        """The generator's output for `noise`, in eval mode, as a float32 numpy array."""
        import torch

        self.gen.eval()
        with torch.no_grad():
            return self.gen(noise).float().cpu().numpy()

    def render(self, epoch: int) -> float:
        """Draw the fixed-noise samples into samples/epoch_NNN.png; return their diversity ratio."""
        out = self.samples(self.fixed_noise)
        if drawable(out.shape):
            save_png(tile(to_pixels(out)), self.run / "samples" / f"epoch_{epoch:03d}.png", scale_for(out.shape[-1]))
        return diversity_ratio(out, self.reference)

    # -- weights and checkpoints
    def save_weights(self, which: str) -> None:
        from ..backends import torch as tb
        from .run import weights_files

        g_path, d_path = weights_files(self.run, "gan", which)
        tb.save_weights(self.gen, self.gen_graph, g_path)
        tb.save_weights(self.dis, self.dis_graph, d_path)

    def save_checkpoint(self, epoch: int, loop_state: dict[str, Any]) -> None:
        """Both networks, both optimizers and the RNG state (a GAN's loop keeps no best value)."""
        import torch
        from safetensors.torch import save_file

        from .run import commit_checkpoint
        from .torch_loop import _json_default

        def write(tmp: Path) -> None:
            for name, module in (("generator", self.gen), ("discriminator", self.dis)):
                save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                          str(tmp / f"{name}.safetensors"))
            tensors: dict[str, Any] = {"rng.torch": torch.get_rng_state()}
            plain: dict[str, Any] = {}
            for tag, opt in (("g", self.opt_g), ("d", self.opt_d)):
                st = opt.state_dict()
                plain[tag] = {"param_groups": st["param_groups"], "plain_state": {}}
                for idx, entry in st["state"].items():
                    for k, v in entry.items():
                        if torch.is_tensor(v):
                            tensors[f"opt_{tag}.{idx}.{k}"] = v.detach().cpu().contiguous()
                        else:
                            plain[tag]["plain_state"].setdefault(str(idx), {})[k] = v
            if torch.cuda.is_available():
                for i, s in enumerate(torch.cuda.get_rng_state_all()):
                    tensors[f"rng.cuda.{i}"] = s
            save_file(tensors, str(tmp / "state.safetensors"))
            state = {"epoch": epoch, "steps_done": self.steps_done, "optimizers": plain, **loop_state}
            (tmp / "state.json").write_text(json.dumps(state, default=_json_default))

        commit_checkpoint(self.run, epoch, write, self.cfg.checkpoint.keep)

    def load_checkpoint(self, last: Path, state: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        from .torch_loop import set_rng_state

        self.gen.load_state_dict(load_file(str(last / "generator.safetensors"), device=str(self.device)))
        self.dis.load_state_dict(load_file(str(last / "discriminator.safetensors"), device=str(self.device)))
        tensors = load_file(str(last / "state.safetensors"))
        for tag, opt in (("g", self.opt_g), ("d", self.opt_d)):
            saved = state["optimizers"][tag]
            opt_state: dict[str, Any] = {"state": {}, "param_groups": saved["param_groups"]}
            prefix = f"opt_{tag}."
            for key, v in tensors.items():
                if key.startswith(prefix):
                    idx, name = key[len(prefix):].split(".", 1)
                    opt_state["state"].setdefault(int(idx), {})[name] = v.to(self.device) if name != "step" else v
            for idx, st in saved["plain_state"].items():
                opt_state["state"].setdefault(int(idx), {}).update(st)
            opt.load_state_dict(opt_state)
        set_rng_state(tensors)
        self.steps_done = int(state["steps_done"])


# ---- entry points used by dlspec train / evaluate ------------------------------------------------


def role_graphs(program: Any, cfg: Any) -> tuple[Graph, Graph]:
    return program.recipe_graphs[f"{cfg.name}.generator"], program.recipe_graphs[f"{cfg.name}.discriminator"]


def write_run_files(run: Path, generator: Graph, discriminator: Graph) -> None:
    from ..backends.torch import generate
    from .run import GRAPH, MODEL_PY, atomic_write_text

    atomic_write_text(run / GRAPH, generator.model_dump_json(indent=1))
    atomic_write_text(run / "generator.json", generator.model_dump_json(indent=1))
    atomic_write_text(run / "discriminator.json", discriminator.model_dump_json(indent=1))
    atomic_write_text(run / MODEL_PY, generate(generator) + "\n\n" + generate(discriminator, header=False))


def load_gan_run(run: Path) -> tuple[Graph, Graph]:
    """The generator and discriminator graphs of a GAN run folder."""
    from .run import read_graph

    generator, discriminator = read_graph(run / "generator.json"), read_graph(run / "discriminator.json")
    check_networks(generator, discriminator)
    return generator, discriminator


def evaluate_gan(run: Path, cfg: Any, bundle: Any, split: str, device: Any) -> dict[str, float]:
    """D(x) on a data split ("all": every split), D(G(z)) on as many samples, and the samples'
    diversity ratio."""
    import torch

    from ..backends import get_backend
    from ..backends import torch as tb

    generator, discriminator = load_gan_run(run)
    parts = bundle.splits.values() if split == "all" else [bundle.splits[split]]
    real = np.ascontiguousarray(np.concatenate([p.x[0] for p in parts if len(p)]))
    check_data(discriminator, tuple(real.shape[1:]), bundle.name)
    gen = get_backend("torch").build(generator).to(device).eval()
    dis = get_backend("torch").build(discriminator).to(device).eval()
    tb.load_weights(gen, generator, role_weights(run, "generator"))
    tb.load_weights(dis, discriminator, role_weights(run, "discriminator"))
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        x = torch.from_numpy(real).float().to(device)
        fake = gen(torch.randn((len(x), *noise_shape(generator)), device=device)).float()
        s_real, s_fake = dis(x).float().reshape(-1), dis(fake).float().reshape(-1)
    squash = torch.sigmoid if cfg.loss == "standard" else (lambda t: t)
    n = min(len(real), 256)
    return {
        "d_real": float(squash(s_real).mean()),
        "d_fake": float(squash(s_fake).mean()),
        "sample_diversity": diversity_ratio(fake[:n].cpu().numpy(), real[:n]),
    }


def draw_samples(run: Path, n: int, seed: int, device: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(noise, samples): `n` examples from a GAN run's generator (eval mode), noise seeded by `seed`."""
    import torch

    from ..backends import get_backend
    from ..backends import torch as tb

    generator, _ = load_gan_run(run)
    device = device or torch.device("cpu")
    gen = get_backend("torch").build(generator).to(device).eval()
    tb.load_weights(gen, generator, role_weights(run, "generator"))
    noise = torch.randn((n, *noise_shape(generator)), generator=torch.Generator().manual_seed(seed))
    out = []
    with torch.no_grad():
        for start in range(0, n, 256):
            out.append(gen(noise[start : start + 256].to(device)).float().cpu().numpy())
    return noise.numpy(), np.concatenate(out) if out else np.zeros((0,), np.float32)
