"""keras-attn: how attention changes the training of CNNs, on images and video.

Importing the package registers every custom layer, so saved models load with
`keras.saving.load_model(path)` (safe mode on) after `import keras_attn`.

The layers and models use `keras.ops` only and also run on the JAX and PyTorch
backends (`KERAS_BACKEND`); the data pipelines and training plumbing need TensorFlow.
"""

import os

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    from keras_attn import _quiet_tensorflow  # noqa: F401, I001  (first: hides TF start-up noise)
    from keras_attn.training import stability  # noqa: F401  (registers StabilityModel: best.keras)
from keras_attn import layers  # noqa: F401  (registers serializable layers)
from keras_attn.models import batch_norm  # noqa: F401  (registers the backbones' BatchNormalization)

__version__ = "0.1.0"
