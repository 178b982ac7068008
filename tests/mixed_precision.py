"""A layer's mixed_float16 twin with the same weights, for the layers' precision tests."""

import keras


def mixed_float16_copy(layer, *args, **kwargs):
    """Rebuilds `layer` under a global mixed_float16 policy (as the project builds models,
    so sublayers get it too), calls it on `args` to build it, copies `layer`'s weights."""
    config = {k: v for k, v in layer.get_config().items() if k != "dtype"}
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = type(layer).from_config(config)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed(*args, **kwargs)
    mixed.set_weights(layer.get_weights())
    return mixed
