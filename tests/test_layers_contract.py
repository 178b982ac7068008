"""Every exported layer against the layer contract (tests/layer_harness.py).

Also runs under `KERAS_BACKEND=jax`: nothing here or in the harness imports TensorFlow.
"""

import ast
import functools
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest

pytest.register_assert_rewrite("layer_harness")  # detailed messages from the harness's asserts
from layer_harness import (  # noqa: E402
    LayerCase,
    check_config_round_trip,
    check_docstring,
    check_frame_mask,
    check_keras_file,
    check_mixed_precision,
    check_seed,
    check_shapes,
    check_weights,
    run_doctests,
)

import keras_attn.layers  # noqa: E402
from keras_attn.layers import (  # noqa: E402
    ATTENTION,
    TEMPORAL,
    FramewiseAttention,
    TemporalBlock,
    TransformerBlock,
    get_attention,
    get_temporal,
)

ROOT = Path(__file__).resolve().parents[1]

# Every option goes to every registry entry, as a model builder passes them.
ATTENTION_OPTIONS = dict(reduction=2, min_hidden=2, kernel_size=3, num_heads=2, seed=7)
TEMPORAL_OPTIONS = dict(
    filters=8, units=8, hidden=8, num_heads=2, key_dim=4, ff_dim=8, max_frames=8, seed=5
)
TEMPORAL_OPTIONS["dilations"] = (1, 2)

IMAGES = (2, 4, 5, 8)
FRAMES = (3, 6, 6)  # batch and frames match layer_harness.FRAME_MASK
CLIPS = (2, 3, 4, 4, 8)

# Trainable weights (variables, not parameters) of each entry for 8 channels or 6 features:
# channel: 2 kernels + 2 biases; spatial: conv kernel (no bias before BN) + BN gamma, beta
# (and 2 moving statistics); linear: q, k, v, output kernels, output bias, two feed-forward
# kernels and biases, 2 LayerNorms x 2.
ATTENTION_WEIGHTS = {"none": (0, 0), "channel": (4, 0), "spatial": (3, 2), "cbam": (7, 2)}
ATTENTION_WEIGHTS["linear"] = (13, 0)
# attention pooling: 2 Dense x (kernel, bias); a TCN block: 2 convs + 2 LayerNorms x 2, and a
# skip kernel where the width changes (6 -> 8, first block only); GRU: kernel, recurrent
# kernel, bias; transformer: projection 2, positions 1, block 16 (2 LayerNorms x 2,
# MultiHeadAttention 4 x 2, 2 Dense x 2), final LayerNorm 2, pooling 4.
TEMPORAL_WEIGHTS = {"avg": 0, "max": 0, "last": 0, "attention": 4, "tcn": 9 + 8 + 4}
TEMPORAL_WEIGHTS.update(gru=3, tcn_gru=9 + 8 + 3, transformer=2 + 1 + 16 + 2 + 4)
TEMPORAL_WIDTH = {"tcn": 8, "gru": 8, "tcn_gru": 8, "transformer": 8}  # the others keep 6


def attention_case(name):
    trainable, non_trainable = ATTENTION_WEIGHTS[name]
    attention_shape = (2, 1, 1, 8) if name == "channel" else (2, 4, 5, 1)
    return LayerCase(
        id=f"attention:{name}",
        make=functools.partial(get_attention, name),
        kwargs=ATTENTION_OPTIONS,
        input_shape=IMAGES,
        output_shape=IMAGES,
        attention_shape=attention_shape,
        trainable_weights=trainable,
        non_trainable_weights=non_trainable,
        dynamic_axes=(1, 2),
        other_input_shape=(1, 3, 3, 8),
    )


def temporal_case(name):
    return LayerCase(
        id=f"temporal:{name}",
        make=functools.partial(get_temporal, name),
        kwargs=TEMPORAL_OPTIONS,
        input_shape=FRAMES,
        output_shape=(3, TEMPORAL_WIDTH.get(name, 6)),
        attention_shape=(3, 6),
        trainable_weights=TEMPORAL_WEIGHTS[name],
        mask_arg="mask",
        dynamic_axes=(1,),
        other_input_shape=(3, 4, 6),
    )


def framewise_case(attention, trainable, non_trainable, map_shape):
    options = {"reduction": 2, "min_hidden": 2, "kernel_size": 3, "seed": 2}
    return LayerCase(
        id=f"FramewiseAttention:{attention}",
        make=FramewiseAttention,
        kwargs=dict(attention=attention, options=options),
        input_shape=CLIPS,
        output_shape=(2, 3, 8),
        attention_shape=(2, 3, *map_shape),
        trainable_weights=trainable,
        non_trainable_weights=non_trainable,
        dynamic_axes=(1,),
        other_input_shape=(1, 2, 4, 4, 8),
    )


CASES = [
    *(attention_case(name) for name in ATTENTION),
    *(temporal_case(name) for name in TEMPORAL),
    LayerCase(
        id="TemporalBlock",
        make=TemporalBlock,
        kwargs=dict(filters=8, kernel_size=3, dilation=2, seed=4),
        input_shape=FRAMES,
        output_shape=(3, 6, 8),
        trainable_weights=9,
        dynamic_axes=(1,),
        other_input_shape=(2, 4, 6),
    ),
    LayerCase(
        id="TemporalBlock:same_width",  # no skip projection
        make=TemporalBlock,
        kwargs=dict(filters=6, kernel_size=2, dilation=1, seed=4),
        input_shape=FRAMES,
        output_shape=FRAMES,
        trainable_weights=8,
    ),
    LayerCase(
        id="TransformerBlock",
        make=TransformerBlock,
        kwargs=dict(num_heads=2, key_dim=3, ff_dim=8, seed=4),
        input_shape=FRAMES,
        output_shape=FRAMES,
        trainable_weights=16,
        mask_arg="attention_mask",
        dynamic_axes=(1,),
        other_input_shape=(3, 4, 6),
    ),
    framewise_case("cbam", 7, 2, (4, 4, 1)),
    framewise_case("channel", 4, 0, (1, 1, 8)),
]
BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"

EXPORTED_LAYERS = [
    obj
    for name in keras_attn.layers.__all__
    if isinstance(obj := getattr(keras_attn.layers, name), type)
    and issubclass(obj, keras.layers.Layer)
]
LAYER_MODULES = [
    f"keras_attn.layers.{m.name}" for m in pkgutil.iter_modules(keras_attn.layers.__path__)
]


def cases(where=lambda case: True):
    return pytest.mark.parametrize("case", [c for c in CASES if where(c)], ids=str)


def test_every_registered_and_exported_layer_has_a_case():
    required = [f"attention:{name}" for name in ATTENTION] + [
        f"temporal:{name}" for name in TEMPORAL
    ]
    assert [name for name in required if name not in BY_ID] == []
    covered = {type(case.layer()) for case in CASES}
    assert [cls.__name__ for cls in EXPORTED_LAYERS if cls not in covered] == []
    # The extras the registries do not list.
    assert {TemporalBlock, TransformerBlock, FramewiseAttention} <= covered


@cases()
def test_output_shapes(case):
    check_shapes(case)


@cases()
def test_config_round_trip(case):
    check_config_round_trip(case)


@cases()
def test_keras_file_round_trip(case, tmp_path):
    check_keras_file(case, tmp_path)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@cases()
def test_mixed_precision(case, policy, scope):
    check_mixed_precision(case, policy, scope)


@cases(lambda case: case.mask_arg is not None)
def test_masked_frames_do_not_change_the_output(case):
    check_frame_mask(case)


def test_every_temporal_module_takes_a_frame_mask():
    assert all(BY_ID[f"temporal:{name}"].mask_arg == "mask" for name in TEMPORAL)


@cases()
def test_weight_counts(case):
    check_weights(case)


@cases(lambda case: case.accepts("seed"))
def test_seed_fixes_initial_weights(case):
    check_seed(case)


@pytest.mark.parametrize("cls", EXPORTED_LAYERS, ids=lambda cls: cls.__name__)
def test_class_docstring_has_args_shapes_and_example(cls):
    check_docstring(cls)


# The examples' shapes are the cases' business on every backend; under JAX each example's
# new shapes would add seconds of XLA compilation (about 80 s for all of them here).
@pytest.mark.skipif(keras.backend.backend() == "jax", reason="slow to compile; run under TF")
@pytest.mark.parametrize("module", LAYER_MODULES)
def test_docstring_examples_run(module):
    module = importlib.import_module(module)
    attempted = run_doctests(module)
    defined = [cls for cls in EXPORTED_LAYERS if cls.__module__ == module.__name__]
    assert attempted >= len(defined)


def test_layer_modules_import_no_backend_library():
    # Layers use keras.ops only, so they run on every backend.
    found = []
    for path in sorted((ROOT / "keras_attn" / "layers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            banned = [n for n in names if n.split(".")[0] in {"tensorflow", "jax", "torch"}]
            found += [f"{path.name}: {n}" for n in banned]
    assert found == []


def test_layers_and_models_import_no_tensorflow_under_jax():
    code = "\n".join(
        [
            "import sys",
            "import keras_attn.layers",
            "import keras",
            "assert keras.backend.backend() == 'jax', keras.backend.backend()",
            "print('layers', 'tensorflow' in sys.modules)",
            "import keras_attn.models, keras_attn.models.attention",
            "print('models', 'tensorflow' in sys.modules)",
        ]
    )
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["layers", "False", "models", "False"]


def test_harness_fails_on_a_wrong_expectation():
    # The checks can fail: one wrong count or shape is caught.
    case = BY_ID["attention:channel"]
    wrong = [
        LayerCase(**{**vars(case), "trainable_weights": 5}),
        LayerCase(**{**vars(case), "attention_shape": (2, 4, 5, 1)}),
    ]
    with pytest.raises(AssertionError):
        check_weights(wrong[0])
    with pytest.raises(AssertionError):
        check_shapes(wrong[1])


def test_call_signatures_take_training():
    # The contract's call(inputs, ..., training=None) lets models pass training through.
    for cls in EXPORTED_LAYERS:
        assert "training" in inspect.signature(cls.call).parameters, cls.__name__
