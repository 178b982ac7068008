"""The layer contract, checked in the manner of `keras.src.testing.TestCase.run_layer_test`.

The contract: every layer is registered as serializable, forwards `**kwargs`, keeps one
attribute per `__init__` argument and returns exactly those from `get_config()`, makes
sublayers in `__init__` and weights in `build()`, hands its dtype policy to its
sublayers, predicts its outputs with `compute_output_shape`, and uses `keras.ops` only.

A `LayerCase` is one layer configuration and what the contract expects of it; each
`check_*` function verifies one clause for one case. tests/test_layers_contract.py
holds the cases, at least one per exported layer.
Nothing here imports TensorFlow, so the checks also run under `KERAS_BACKEND=jax`.
"""

import dataclasses
import doctest
import inspect
from collections.abc import Callable

import keras
import numpy as np

BASE_CONFIG = {"name", "trainable", "dtype"}
# Right padding, no padding, and left padding with a gap: masks need not be right-padded.
FRAME_MASK = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 0]], bool)
# A half-precision result may differ from float32 by this share of the output's range.
TOLERANCE = {"mixed_float16": 0.005, "mixed_bfloat16": 0.03}


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer configuration and the contract's expectations of it.

    `make(**kwargs)` builds the layer (a class, or a registry lookup). Shapes include
    the batch. `attention_shape` is the second output's shape with `return_attention=True`
    (None: the layer has no such option). `mask_arg` names the call's mask argument:
    "mask" takes `FRAME_MASK` (B, T), "attention_mask" the (B, T, T) mask made from it.
    `dynamic_axes` may be None in a functional model, whose real inputs then also
    take `other_input_shape`.
    """

    id: str
    make: Callable
    kwargs: dict
    input_shape: tuple
    output_shape: tuple
    trainable_weights: int
    non_trainable_weights: int = 0
    attention_shape: tuple | None = None
    mask_arg: str | None = None
    dynamic_axes: tuple = ()
    other_input_shape: tuple | None = None

    def __str__(self):
        return self.id

    def layer(self, **overrides):
        return self.make(**{**self.kwargs, **overrides})

    def inputs(self, seed=0, shape=None):
        shape = shape or self.input_shape
        return np.random.default_rng(seed).normal(size=shape).astype("float32")

    def mask(self, frame_mask=FRAME_MASK):
        """The call's mask keywords for `frame_mask` (B, T); none when the call takes none."""
        if self.mask_arg is None:
            return {}
        if self.mask_arg == "attention_mask":
            # Every query frame may attend to the valid frames only.
            frame_mask = frame_mask[:, None, :] & np.ones_like(frame_mask)[:, :, None]
        return {self.mask_arg: frame_mask}

    def accepts(self, name):
        return name in init_arguments(type(self.layer()))


def init_arguments(cls):
    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def outputs(result):
    """A call's result as a list of numpy arrays."""
    results = result if isinstance(result, list | tuple) else [result]
    return [keras.ops.convert_to_numpy(r) for r in results]


def shapes(shape_or_shapes):
    """`compute_output_shape`'s answer as a list of shape tuples."""
    if shape_or_shapes and isinstance(shape_or_shapes[0], list | tuple):
        return [tuple(s) for s in shape_or_shapes]
    return [tuple(shape_or_shapes)]


def assert_all_equal(got, want, **tolerance):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if tolerance:
            np.testing.assert_allclose(np.asarray(g, "float32"), w, **tolerance)
        else:
            np.testing.assert_array_equal(g, w)


def expected_shapes(case, return_attention):
    return [case.output_shape, case.attention_shape] if return_attention else [case.output_shape]


def functional_model(case, layer, return_attention):
    """`layer` in a functional model whose dynamic axes (and batch) are None."""
    shape = tuple(
        None if i == 0 or i in case.dynamic_axes else n for i, n in enumerate(case.input_shape)
    )
    inputs = [keras.Input(shape[1:], name="inputs")]
    mask = {}
    if case.mask_arg == "mask":
        inputs.append(keras.Input(shape[1:2], dtype="bool", name="mask"))
        mask = {"mask": inputs[1]}
    elif case.mask_arg == "attention_mask":
        inputs.append(keras.Input((shape[1], shape[1]), dtype="bool", name="mask"))
        mask = {"attention_mask": inputs[1]}
    option = {"return_attention": True} if return_attention else {}
    return keras.Model(inputs, layer(inputs[0], **mask, **option)), shape


def model_inputs(case, seed=0, shape=None):
    x = case.inputs(seed, shape)
    masks = case.mask(FRAME_MASK[: x.shape[0], : x.shape[1]])
    return [x, *masks.values()]


def check_shapes(case):
    """Eager and symbolic outputs have the expected shapes, which compute_output_shape predicts."""
    layer = case.layer()
    x, mask = case.inputs(), case.mask()
    for return_attention in (False, True) if case.attention_shape else (False,):
        option = {"return_attention": True} if return_attention else {}
        want = expected_shapes(case, return_attention)
        eager = outputs(layer(x, **mask, **option))
        assert [o.shape for o in eager] == want
        assert shapes(layer.compute_output_shape(case.input_shape, **option)) == want

        # A fresh layer per graph: Keras 3.15 checks a model's outputs against the first
        # symbolic call of each layer, so a second call with another output count fails.
        twin = case.layer()
        model, symbolic_shape = functional_model(case, twin, return_attention)
        twin.set_weights(layer.get_weights())
        predicted = shapes(twin.compute_output_shape(symbolic_shape, **option))
        assert [tuple(o.shape) for o in model.outputs] == predicted
        assert [o.dtype for o in model.outputs] == [str(o.dtype) for o in eager]
        assert_all_equal(outputs(model(model_inputs(case))), eager, atol=1e-6, rtol=1e-6)
        # JAX traces every call with concrete shapes, so a second shape tests nothing new
        # there and would cost a second round of XLA compilations.
        if case.other_input_shape is not None and keras.backend.backend() != "jax":
            other = outputs(model(model_inputs(case, shape=case.other_input_shape)))
            predicted = shapes(layer.compute_output_shape(case.other_input_shape, **option))
            assert [o.shape for o in other] == predicted
        # Last: training=True moves BatchNormalization's statistics.
        trained = outputs(layer(x, training=True, **mask, **option))
        assert [o.shape for o in trained] == want
        assert all(np.isfinite(o).all() for o in eager + trained)


def _call(case, layer, x, mask=None):
    option = {"return_attention": True} if case.attention_shape else {}
    return outputs(layer(x, **(case.mask() if mask is None else mask), **option))


def check_config_round_trip(case):
    """get_config holds exactly the __init__ arguments; from_config rebuilds the same layer."""
    layer = case.layer()
    cls = type(layer)
    config = layer.get_config()
    assert set(config) - BASE_CONFIG == init_arguments(cls)
    assert keras.saving.get_registered_name(cls) == f"keras_attn>{cls.__name__}"
    for name in init_arguments(cls):
        assert hasattr(layer, name), f"{cls.__name__} keeps no attribute for argument {name}"
    assert case.layer(name="probe").name == "probe"  # base keywords reach keras.layers.Layer

    x = case.inputs()
    _call(case, layer, x)
    # Off their (seeded) initial values, so the clone matches only if the weights travel.
    layer.set_weights([w + 0.25 for w in layer.get_weights()])
    want = _call(case, layer, x)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is cls and clone.get_config() == config
    _call(case, clone, x)
    clone.set_weights(layer.get_weights())
    assert_all_equal(_call(case, clone, x), want)


def check_keras_file(case, tmp_path):
    """A functional model around the layer survives a .keras save/load with identical outputs."""
    layer = case.layer()
    model, _ = functional_model(case, layer, return_attention=bool(case.attention_shape))
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    loaded = reloaded.get_layer(layer.name)
    assert type(loaded) is type(layer) and loaded.get_config() == layer.get_config()
    inputs = model_inputs(case, seed=1)
    assert_all_equal(outputs(reloaded(inputs)), outputs(model(inputs)))


def _sublayers(layer):
    return layer._flatten_layers(include_self=False, recursive=True)


def check_dtype_policy(layer, policy):
    """The layer and every sublayer carry `policy`; every variable is float32."""
    assert layer.dtype_policy.name == policy
    wrong = [s.path for s in _sublayers(layer) if s.dtype_policy.name != policy]
    assert not wrong, f"sublayers without {policy}: {wrong}"
    assert {v.dtype for v in layer.weights} <= {"float32"}


_FLOAT32_RESULTS = {}  # case id -> (weights, outputs): shared by the four mixed variants


def _mixed_precision_inputs(case):
    frame_mask = FRAME_MASK.copy()
    if case.mask_arg == "mask":
        frame_mask[0] = False  # a clip without valid frames: 0/0 is NaN unless guarded
    return case.inputs(), case.mask(frame_mask)


def _float32_results(case):
    if case.id not in _FLOAT32_RESULTS:
        reference = case.layer()
        results = _call(case, reference, *_mixed_precision_inputs(case))
        _FLOAT32_RESULTS[case.id] = reference.get_weights(), results
    return _FLOAT32_RESULTS[case.id]


def check_mixed_precision(case, policy, scope):
    """Under a global or per-layer mixed policy: finite, float32 variables, close to float32."""
    x, mask = _mixed_precision_inputs(case)
    weights, want = _float32_results(case)

    if scope == "global":
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            layer = case.layer()
        finally:
            keras.config.set_dtype_policy(previous)
    else:
        layer = case.layer(dtype=policy)
    layer.build(case.input_shape)
    layer.set_weights(weights)
    got = _call(case, layer, x, mask)

    check_dtype_policy(layer, policy)
    compute_dtype = policy.removeprefix("mixed_")
    assert [str(g.dtype) for g in got] == [compute_dtype] * len(want)
    for g, w in zip(got, want, strict=True):
        g = g.astype("float32")
        assert np.isfinite(g).all()
        scale = max(float(np.abs(w).max()), 1.0)
        np.testing.assert_allclose(g, w, atol=TOLERANCE[policy] * scale, rtol=0)
    if case.mask_arg == "mask" and case.attention_shape:
        np.testing.assert_array_equal(got[1][0], 0.0)
    # The policy is part of the config, so a reloaded model keeps it down to the sublayers.
    check_dtype_policy(type(layer).from_config(layer.get_config()), policy)


def check_frame_mask(case):
    """Padded frames never change the output; frame weights live on the valid frames only."""
    layer = case.layer()
    x = case.inputs()
    valid = FRAME_MASK[..., None]
    noisy = np.where(valid, x, 100.0 * case.inputs(seed=9))
    clean, padded = _call(case, layer, x), _call(case, layer, noisy)
    if case.mask_arg == "attention_mask":
        # A padded query frame still sees its own (changed) residual: compare valid frames.
        clean, padded = ([np.where(valid, o, 0.0) for o in r] for r in (clean, padded))
    assert_all_equal(padded, clean, atol=1e-5, rtol=0)
    # The check can fail: without the mask the noise does change the output.
    assert not np.allclose(outputs(layer(noisy))[0], outputs(layer(x))[0], atol=1e-3)
    if case.mask_arg != "mask":
        return

    everything = np.ones(FRAME_MASK.shape, "float32")  # 0/1 masks work as well as bool
    assert_all_equal(_call(case, layer, x, {}), _call(case, layer, x, {"mask": everything}))
    weights = clean[1]
    assert weights.shape == FRAME_MASK.shape
    assert weights.min() >= 0.0 and weights.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(weights[~FRAME_MASK], 0.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)

    empty = FRAME_MASK.copy()
    empty[0] = False
    vector, weights = _call(case, layer, x, {"mask": empty})
    assert np.isfinite(vector).all()
    np.testing.assert_array_equal(weights[0], 0.0)


def check_weights(case):
    """Exact weight counts, all made by build() (none by call), all frozen by trainable=False."""
    layer = case.layer()
    sublayers = [s.name for s in layer._flatten_layers(include_self=False, recursive=False)]
    layer.build(case.input_shape)
    after = [s.name for s in layer._flatten_layers(include_self=False, recursive=False)]
    assert after == sublayers, "build() made sublayers"
    assert len(layer.trainable_weights) == case.trainable_weights
    assert len(layer.non_trainable_weights) == case.non_trainable_weights
    built = [v.path for v in layer.weights]
    _call(case, layer, case.inputs())
    assert [v.path for v in layer.weights] == built, "call() made weights"

    frozen = case.layer(trainable=False)
    _call(case, frozen, case.inputs())
    assert not frozen.trainable_weights
    assert len(frozen.weights) == case.trainable_weights + case.non_trainable_weights


def check_seed(case):
    """The same seed gives the same initial weights, another seed other ones."""

    def weights(seed):
        layer = case.layer(seed=seed)
        layer.build(case.input_shape)
        return layer.get_weights()

    same, again, other = weights(3), weights(3), weights(4)
    assert same, "a seeded layer without weights"
    assert_all_equal(again, same)
    assert any(not np.array_equal(a, b) for a, b in zip(same, other, strict=True))


def check_docstring(cls):
    """The class docstring has the contract's sections and a runnable example."""
    doc = inspect.getdoc(cls) or ""
    for section in ("Args:", "Input shape:", "Output shape:", "Example:", ">>> "):
        assert section in doc, f"{cls.__name__}'s docstring lacks {section!r}"


def run_doctests(module):
    """Runs every `>>>` example in `module`; returns how many examples ran."""
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
    return results.attempted
