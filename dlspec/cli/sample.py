"""`dlspec sample RUN -n N -o DIR`: draw N examples from the generator of a `train gan` run.

DIR receives `samples.npz` (arrays `z`, the noise, and `samples`, the generator's outputs) and,
when the outputs are images ([N, 1 or 3, H, W]), one PNG per sample (`sample_0000.png`, ...)
and with --grid one `grid.png` of them all. DIR must be new or empty; it is filled in a
temporary folder first and renamed into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import click

from ..errors import error


def gan_run_kind(run: Path) -> str:
    """The kind of the run in `run` ("gan", "supervised", "distill"); errors if it is not a run folder."""
    config = run / "config.json"
    if not config.is_file():
        raise error("E635", f"{run} is not a dlspec run folder (config.json is missing)",
                           hint="pass the folder `dlspec train` printed, e.g. runs/dcgan")
    try:
        data = json.loads(config.read_text())
        return str(data.get("kind", data.get("recipe", {}).get("kind", "supervised")))
    except (ValueError, AttributeError) as exc:
        raise error("E635", f"{run}: damaged run folder ({exc})") from None


def write_samples(run: Path, n: int, folder: Path, seed: int, grid: bool) -> list[str]:
    """Draw the samples and fill `folder`; returns the names of the files written."""
    import numpy as np

    from ..train.gan import draw_samples, drawable, role_weights, save_png, scale_for, tile, to_pixels

    kind = gan_run_kind(run)
    if kind != "gan":
        raise error("E649", f"{run} is a `{kind}` run; `dlspec sample` draws from the generator of a "
                           "`train gan` run", hint="use `dlspec predict RUN --input ...` for other models")
    role_weights(run, "generator")
    if n < 1:
        raise error("E650", f"-n must be at least 1; got {n}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise error("E651", f"{folder} already exists and is not an empty folder",
                           hint="choose a new folder with -o; dlspec never overwrites earlier samples")
    z, samples = draw_samples(run, n, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.savez(tmp / "samples.npz", z=z, samples=samples)
        written = ["samples.npz"]
        if drawable(samples.shape):
            pixels = to_pixels(samples)
            scale = scale_for(samples.shape[-1])
            width = max(4, len(str(n - 1)))
            for i, img in enumerate(pixels):
                save_png(img, tmp / f"sample_{i:0{width}d}.png", scale)
            written.append(f"{n} PNG images")
            if grid:
                save_png(tile(pixels), tmp / "grid.png", scale)
                written.append("grid.png")
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("run", type=click.Path(file_okay=False, path_type=Path))
    @click.option("-n", "count", type=int, default=64, show_default=True, help="How many samples to draw.")
    @click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
                  help="A new (or empty) folder for samples.npz and the PNG images.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise (same seed, same samples).")
    @click.option("--grid", is_flag=True, help="Also draw every sample into one grid.png.")
    def sample(run: Path, count: int, output: Path, seed: int, grid: bool) -> None:
        """Draw samples from the generator of a trained GAN run (PNG images and samples.npz)."""
        from .output import err

        written = write_samples(run, count, output, seed, grid)
        err(f"wrote {output}: {', '.join(written)}")
