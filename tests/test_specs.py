"""The example specs in `specs/`: every one checks cleanly, has the shapes and parameter counts it
claims, and trains on a built-in dataset whose tensors fit its model.

`SPECS` below lists every file in `specs/` with its main model and that model's outputs; a spec
added to the folder without an entry here fails `test_every_spec_is_listed`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlspec import compile_file, compile_source
from dlspec.source import SourceFile
from dlspec.summary import summarize

from .helpers import ROOT, SPEC_DIR, spec_files

SPEC_FILES = spec_files()

# file → (main model, {output name: type}); the main model is the one built with its defaults.
SPECS: dict[str, tuple[str, dict[str, str]]] = {
    "dcgan.dls": ("Generator", {"image": "float32[batch, 1, 16, 16]"}),
    "digits16_cnn.dls": ("Digits16CNN", {"logits": "float32[batch, 10]"}),
    "digits_autoencoder.dls": ("DigitsAutoencoder", {"reconstruction": "float32[batch, 1, 8, 8]"}),
    "digits_cnn.dls": ("DigitsCNN", {"logits": "float32[batch, 10]"}),
    "digits_distill.dls": ("DigitsStudent", {"logits": "float32[batch, 10]"}),
    "digits_finetune.dls": ("DigitsFineTune", {"logits": "float32[batch, 5]"}),
    "digits_multitask.dls": ("DigitsMultiTask", {"digit": "float32[batch, 10]", "parity": "float32[batch, 2]"}),
    "digits_pretrain.dls": ("DigitsCNN", {"logits": "float32[batch, 5]"}),
    "digits_resnet.dls": ("DigitsResNet", {"logits": "float32[batch, 10]"}),
    "iris_mlp.dls": ("IrisMLP", {"logits": "float32[batch, 3]"}),
    "lenet5.dls": ("LeNet5", {"logits": "float32[batch, 10]"}),
    "mnist_cnn.dls": ("MnistCNN", {"logits": "float32[batch, 10]"}),
    "mobilenet_v2.dls": ("MobileNetV2", {"logits": "float32[batch, 1000]"}),
    "resnet18.dls": ("ResNet18", {"logits": "float32[batch, 1000]"}),
    "resnet50.dls": ("ResNet50", {"logits": "float32[batch, 1000]"}),
    "search_digits_cnn.dls": ("DigitsCNN", {"logits": "float32[batch, 10]"}),
    "search_transformer.dls": ("TransformerSearch", {"logits": "float32[batch, 2]"}),
    "sentiment_bilstm.dls": ("SentimentBiLSTM", {"logits": "float32[batch, 2]"}),
    "seq2seq_attention.dls": ("Seq2SeqAttention", {"logits": "float32[batch, 10, 12]"}),
    "sequence_lstm.dls": ("SequenceLSTM", {"logits": "float32[batch, 2]"}),
    "sunspots_gru.dls": ("SunspotsGRU", {"forecast": "float32[batch, 1]"}),
    "tagger_bilstm.dls": ("TaggerBiLSTM", {"tag_logits": "float32[batch, 20, 3]"}),
    "transformer_classifier.dls": ("TransformerClassifier", {"logits": "float32[batch, 2]"}),
    "unet.dls": ("UNet", {"mask_logits": "float32[batch, 1, 32, 32]"}),
    "vgg11.dls": ("VGG11", {"logits": "float32[batch, 1000]"}),
}

# Parameter counts published for the reference implementations (torchvision, pytorch/examples, the paper).
PUBLISHED_PARAMS = {
    ("lenet5.dls", "LeNet5"): 61_706,
    ("mnist_cnn.dls", "MnistCNN"): 1_199_882,
    ("vgg11.dls", "VGG11"): 132_863_336,
    ("resnet18.dls", "ResNet18"): 11_689_512,
    ("resnet50.dls", "ResNet50"): 25_557_032,
    ("mobilenet_v2.dls", "MobileNetV2"): 3_504_872,
}

# Specs without a recipe, and why: no built-in dataset has 3×224×224 images.
NO_RECIPE = {"resnet18.dls", "resnet50.dls", "vgg11.dls", "mobilenet_v2.dls"}

# A missing weights file is only a warning; it exists once the base model has been trained.
ALLOWED_WARNINGS = {"W501"}

# The built-in datasets' tensors (ir/training.py, `Builtin`), as the model types that fit them.
CLASSES = {"digits": 10, "iris": 3, "wine": 3, "breast_cancer": 2, "sequence": 2, "sentiment": 2}
FEATURES = {"iris": 4, "wine": 13, "breast_cancer": 30}


def builtin_inputs(data) -> list[str]:
    name = data.name
    if name in ("digits", "digits_multitask"):
        side = data.size or 8
        return [f"float32[batch, 1, {side}, {side}]"]
    if name in FEATURES:
        return [f"float32[batch, {FEATURES[name]}]"]
    return {
        "sunspots": [f"float32[batch, {data.window}, 1]"],
        "sequence": ["int64[batch, 24]"],
        "sentiment": ["int64[batch, 32]"],
        "tagging": ["int64[batch, 20]"],
        "reverse": ["int64[batch, 10]", "int64[batch, 10]"],
        "segmentation": ["float32[batch, 1, 32, 32]"],
    }[name]


def builtin_outputs(data) -> list[str]:
    """What a supervised model trained on `data` outputs: logits per class, or the target's shape."""
    if data.autoencode:
        return builtin_inputs(data)
    name = data.name
    if name in CLASSES:
        k = len(data.classes) if data.classes else CLASSES[name]
        return [f"float32[batch, {k}]"]
    return {
        "digits_multitask": ["float32[batch, 10]", "float32[batch, 2]"],
        "sunspots": [f"float32[batch, {data.horizon}]"],
        "tagging": ["float32[batch, 20, 3]"],
        "reverse": ["float32[batch, 10, 12]"],
        "segmentation": ["float32[batch, 1, 32, 32]"],
    }[name]


def _literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def recipe_model(spec: Path, call):
    """The graph a recipe trains: the named model built with the recipe's arguments."""
    args = ", ".join(f"{k}={_literal(v)}" for k, v in call.args.items())
    text = f'import "{spec.name}"\nmodel RecipeModel from {call.name}({args}) {{}}\n'
    prog = compile_source(SourceFile(str(SPEC_DIR / "_recipe_model.dls"), text), base_dir=SPEC_DIR)
    return prog.models["RecipeModel"]


def types(graph, which: str) -> list[str]:
    if which == "inputs":
        return [str(i.type) for i in graph.inputs]
    return [str(graph.values[o.value]) for o in graph.outputs]


@pytest.fixture(scope="module", params=SPEC_FILES, ids=lambda p: p.name)
def compiled(request):
    return request.param, compile_file(request.param)


def test_every_spec_is_listed():
    assert [p.name for p in SPEC_FILES] == sorted(SPECS)


def test_spec_checks_cleanly(compiled):
    spec, prog = compiled
    assert prog.models, f"{spec.name} builds no model"
    assert {w.code for w in prog.warnings} <= ALLOWED_WARNINGS


def test_main_model_outputs(compiled):
    spec, prog = compiled
    model, outputs = SPECS[spec.name]
    assert summarize(prog.models[model])["outputs"] == outputs


def test_spec_has_a_recipe_unless_no_dataset_fits(compiled):
    spec, prog = compiled
    assert (len(prog.recipes) == 0) == (spec.name in NO_RECIPE)


@pytest.mark.parametrize(("file", "model", "params"), [(f, m, n) for (f, m), n in PUBLISHED_PARAMS.items()])
def test_published_parameter_count(file, model, params):
    graph = compile_file(SPEC_DIR / file).models[model]
    assert summarize(graph)["total_params"] == params


def test_recipe_data_fits_its_models(compiled):
    spec, prog = compiled
    for cfg in prog.recipes:
        data = cfg.data
        if cfg.kind == "supervised":
            graph = recipe_model(spec, cfg.model)
            assert types(graph, "inputs") == builtin_inputs(data)
            assert types(graph, "outputs") == builtin_outputs(data)
        elif cfg.kind == "distill":
            for call in (cfg.teacher, cfg.student):
                graph = recipe_model(spec, call)
                assert types(graph, "inputs") == builtin_inputs(data)
                assert types(graph, "outputs") == builtin_outputs(data)
        else:
            assert cfg.kind == "gan"
            generator = recipe_model(spec, cfg.generator)
            discriminator = recipe_model(spec, cfg.discriminator)
            assert types(generator, "outputs") == builtin_inputs(data)
            assert types(discriminator, "inputs") == builtin_inputs(data)
            assert types(discriminator, "outputs") == ["float32[batch, 1]"]


def test_multitask_recipe_weighs_both_heads():
    (cfg,) = compile_file(SPEC_DIR / "digits_multitask.dls").recipes
    assert set(cfg.loss) == {"digit", "parity"}
    assert all(loss.type == "cross_entropy" for loss in cfg.loss.values())
    assert cfg.loss_weights == {"digit": 1.0, "parity": 0.5}


def test_gan_recipe_takes_a_named_gan_loss():
    (cfg,) = compile_file(SPEC_DIR / "dcgan.dls").recipes
    assert (cfg.kind, cfg.loss, cfg.generator.args) == ("gan", "standard", {"latent": 32})


def test_finetune_freezes_the_features_and_replaces_the_head():
    prog = compile_file(SPEC_DIR / "digits_finetune.dls")
    s = summarize(prog.models["DigitsFineTune"])
    # conv 288 + bn 64 + conv 18,432 + bn 128 are frozen; the dense layers and the new head train
    assert s["non_trainable_params"] == 18_912
    assert s["trainable_params"] == 32_896 + 645
    assert {row["path"]: row["output_shape"] for row in s["layers"]}["head"] == "[batch, 5]"


def test_cli_checks_every_spec_at_once():
    result = subprocess.run(
        [sys.executable, "-m", "dlspec.cli", "check", *map(str, SPEC_FILES)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(SPEC_FILES)


def test_cli_summary_json_reports_lenet5_parameters():
    result = subprocess.run(
        [sys.executable, "-m", "dlspec.cli", "summary", "specs/lenet5.dls", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["model"], summary["total_params"]) == ("LeNet5", 61_706)
