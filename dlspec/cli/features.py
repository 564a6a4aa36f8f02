"""`dlspec features RUN_OR_SPEC -o feats.npz`: a trained network's embeddings of a data set.

From a run folder the network is the run's (a GAN run's discriminator) with its best weights;
from a spec it is the recipe's model with --weights or the weights it starts from. The data is
the recipe's splits (--data all|train|val|test) or an .npz file. See dlspec/train/features.py.
"""

from __future__ import annotations

from pathlib import Path

import click


def register(main: click.Group) -> None:
    from .options import model_option

    @main.command()
    @click.argument("source", type=click.Path(path_type=Path))
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The .npz to write: features, labels, split.")
    @click.option("--layer", help="Cut after this layer or block (default: the model's penultimate value).")
    @click.option("--data", default="all", show_default=True,
                  help="all, train, val or test (the recipe's splits), or an .npz file with x (and y).")
    @model_option(help="For a spec: which recipe, by its model's name (default: the last).")
    @click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                  help="For a spec: the weights to use (default: the model's `weights = ...`).")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True)
    def features(source: Path, output: Path, layer: str | None, data: str, model_name: str | None,
                 weights: Path | None, device: str) -> None:
        """Write a network's features (a layer's output) for a data set to an .npz, with labels."""
        from ..train.features import features_npz
        from .output import err, out

        shapes = features_npz(source, output, layer, data, model_name, weights, device)
        for k, shape in shapes.items():
            out(f"{k}: {list(shape)}")
        err(f"wrote {output}")
