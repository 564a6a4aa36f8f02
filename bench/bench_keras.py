"""Keras backend benchmark: training-step time of the Keras model dlspec generates vs a hand-written
Keras model of the same architecture.

Models: the digits CNN (`specs/digits_cnn.dls`: two conv-BN-ReLU-maxpool stages, dropout, dense
head; batch 64 of 8×8 images) built with layout nchw (PyTorch's input order: a transpose at the
input and before the flatten) and layout nhwc (channels-last input: only the transpose before the
flatten, which keeps PyTorch's flatten order), and the embedding + bidirectional-LSTM classifier
of `specs/sentiment_bilstm.dls` (batch 64 of 32 tokens). The hand-written models are what a
careful person writes in Keras: channels-last throughout, `padding="same"`, `Flatten` in NHWC
order. Both models of a pair get the same weights (the hand-written CNN's first dense kernel is
permuted to its flatten order) and are checked to give the same outputs first.

One step = `model.train_on_batch(x, y)`: Adam(2e-3), sparse categorical cross-entropy from logits,
both compiled the same way. Timing: warm-up, then rounds that each time the generated and the
hand-written model back to back (`inner` steps each), the order alternating every round.
Reported per pair: median per-step times, and the speed of the generated model relative to the
hand-written one (hand_time / generated_time; 1.0 = equal, goal >= 0.95) as the median of the
per-round paired ratios (the two halves of a round share the machine's load).

Run from the repository root:  python bench/bench_keras.py [--rounds 15] [--inner 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlspec  # noqa: E402
from dlspec.backends import keras as kb  # noqa: E402

BATCH = 64


def hand_digits_cnn() -> keras.Model:
    x = keras.Input(shape=(8, 8, 1), name="image")
    h = x
    for i, filters in enumerate((32, 64), start=1):
        h = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{i}")(h)
        h = layers.ReLU()(h)
        h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dropout(0.3)(h)
    h = layers.Dense(128, activation="relu", name="fc")(h)
    h = layers.Dropout(0.3)(h)
    return keras.Model(x, layers.Dense(10, name="head")(h))


def hand_bilstm() -> keras.Model:
    x = keras.Input(shape=(32,), dtype="int64", name="tokens")
    h = layers.Embedding(50, 32, name="embed")(x)
    h = layers.Dropout(0.1)(h)
    h = layers.Bidirectional(layers.LSTM(64), name="encoder")(h)
    h = layers.Dropout(0.3)(h)
    return keras.Model(x, layers.Dense(2, name="head")(h))


def copy_cnn_weights(gen: keras.Model, hand: keras.Model) -> None:
    """Same numbers in both: conv and BN weights as they are; the first dense kernel's rows go
    from the generated model's NCHW flatten order to the hand-written model's NHWC order."""
    pairs = [("features.stage1.conv", "conv1"), ("features.stage1.bn", "bn1"), ("features.stage2.conv", "conv2"),
             ("features.stage2.bn", "bn2"), ("head", "head")]
    for g, h in pairs:
        hand.get_layer(h).set_weights(gen.get_layer(g).get_weights())
    kernel, bias = gen.get_layer("fc").get_weights()  # rows indexed c*4 + y*2 + x
    nhwc_rows = kernel.reshape(64, 2, 2, 128).transpose(1, 2, 0, 3).reshape(256, 128)
    hand.get_layer("fc").set_weights([nhwc_rows, bias])


def compile_model(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def time_steps(model: keras.Model, x, y, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / n


def compare(name: str, gen: keras.Model, hand: keras.Model, x_gen, x_hand, y, rounds: int, inner: int) -> dict:
    np.testing.assert_allclose(np.asarray(gen(x_gen, training=False)), np.asarray(hand(x_hand, training=False)),
                               atol=1e-4)
    compile_model(gen)
    compile_model(hand)
    for _ in range(3):
        time_steps(gen, x_gen, y, inner)
        time_steps(hand, x_hand, y, inner)
    t_gen, t_hand, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            b = time_steps(hand, x_hand, y, inner)
            a = time_steps(gen, x_gen, y, inner)
        else:
            a = time_steps(gen, x_gen, y, inner)
            b = time_steps(hand, x_hand, y, inner)
        t_gen.append(a)
        t_hand.append(b)
        ratios.append(b / a)
    q = statistics.quantiles(ratios, n=4)
    row = {"model": name, "generated_ms": 1e3 * statistics.median(t_gen), "hand_ms": 1e3 * statistics.median(t_hand),
           "ratio_median_paired": statistics.median(ratios), "ratio_iqr": [q[0], q[2]]}
    print(f"{name:28s} generated {row['generated_ms']:7.2f} ms  hand {row['hand_ms']:7.2f} ms  "
          f"hand/generated {row['ratio_median_paired']:.3f} [IQR {q[0]:.3f}-{q[2]:.3f}]", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    print(f"python {platform.python_version()}, keras {keras.__version__}, tensorflow {tf.__version__}, "
          f"{os.cpu_count()} CPUs; batch {BATCH}, {args.rounds} rounds x {args.inner} steps")
    rows = []
    cnn = dlspec.load(ROOT / "specs" / "digits_cnn.dls").graph("DigitsCNN")
    x = rng.standard_normal((BATCH, 1, 8, 8)).astype("float32")
    y = rng.integers(0, 10, BATCH)
    x_nhwc = x.transpose(0, 2, 3, 1).copy()
    for layout in ("nchw", "nhwc"):
        gen = kb.build_model(cnn, layout=layout)
        hand = hand_digits_cnn()
        copy_cnn_weights(gen, hand)
        rows.append(compare(f"digits CNN (layout {layout})", gen, hand, x if layout == "nchw" else x_nhwc, x_nhwc, y,
                            args.rounds, args.inner))
    lstm = dlspec.load(ROOT / "specs" / "sentiment_bilstm.dls").graph("SentimentBiLSTM")
    tokens = rng.integers(0, 50, (BATCH, 32))
    labels = rng.integers(0, 2, BATCH)
    gen = kb.build_model(lstm)
    hand = hand_bilstm()
    for name in ("embed", "encoder", "head"):
        hand.get_layer(name).set_weights(gen.get_layer(name).get_weights())
    rows.append(compare("sentiment BiLSTM", gen, hand, tokens, tokens, labels, args.rounds, args.inner))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
