"""Image models: each input under every attention block's map and Grad-CAM of the last conv block.

Images are read with the loader folder data trains on (`image_files.load_image`: decode,
EXIF orientation, antialiased resize to the model's side). The maps are the named outputs
of the classifier's own graph (`attention_model`); Grad-CAM is `study.focus.grad_cam` on the
map the `pool` layer takes, for the predicted class.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_attn.data.image_files import IMAGE_EXTENSIONS, _reason, load_image
from keras_attn.explain.figures import Explained, Failed, new_figure, overlay
from keras_attn.explain.inputs import unreadable
from keras_attn.explain.predictions import describe, softmax, top_k
from keras_attn.explain.source import ModelSource
from keras_attn.models import attention_maps, attention_model
from keras_attn.study.focus import grad_cam

PANEL_INCHES = 2.2
TITLE_CLASSES = 3


class ImageExplainer:
    """Explains image inputs with `source.model` (`(B,S,S,3)` pixels in [0, 255] -> logits)."""

    def __init__(self, source: ModelSource):
        self.model = source.model
        self.class_names = source.class_names
        self.size = int(self.model.input_shape[1])
        self.probe = attention_model(self.model)
        # Graph order, shallowest block first (a dict output may come back reordered).
        self.map_names = list(attention_maps(self.model))

    def explain(self, paths: list[str]) -> Iterator[Explained | Failed]:
        """One result per path, in order; an unreadable file is a `Failed`, never an error."""
        for path in paths:
            image = self._read(path)
            if isinstance(image, Failed):
                yield image
            else:
                yield self._explain(path, image)

    def _read(self, path: str) -> np.ndarray | Failed:
        """uint8 (S,S,3) as the model takes it, or why not."""
        problem = unreadable(path, IMAGE_EXTENSIONS, "an image model")
        if problem:
            return Failed(path, problem)
        try:
            return load_image(tf.constant(path), self.size).numpy()
        except tf.errors.OpError:
            return Failed(path, f"cannot decode the image: {_reason(path)}")

    def _explain(self, path: str, image: np.ndarray) -> Explained:
        batch = image[None].astype(np.float32)
        # The compiled graph, as the run's evaluation ran it (mixed precision rounds
        # differently in an eager call).
        outputs = self.probe.predict_on_batch(batch)
        probabilities = softmax(outputs["logits"])[0]
        predicted = int(np.argmax(probabilities))
        maps = {name: np.asarray(outputs[name], np.float32)[0] for name in self.map_names}
        cam = grad_cam(self.model, batch, np.array([predicted]))[0]
        figure = self._figure(path, image, maps, cam, probabilities)
        return Explained(path, probabilities, figure)

    def _figure(self, path, image, maps: dict, cam: np.ndarray, probabilities: np.ndarray):
        """The input, each map in graph order (shallowest first), then Grad-CAM: one row."""
        panels = 2 + len(maps)
        figure = new_figure(PANEL_INCHES * panels, PANEL_INCHES + 0.9)
        axes = figure.subplots(1, panels, squeeze=False)[0]
        overlay(axes[0], image, None, "input")
        for ax, (name, map_) in zip(axes[1:], maps.items(), strict=False):
            if name.startswith("channel_weights_"):
                _channel_bars(ax, map_.reshape(-1), name)
            else:  # spatial_map_<block>: (h, w, 1)
                overlay(ax, image, map_[..., 0], f"{name.removeprefix('spatial_map_')} attention")
        top = top_k(probabilities, 1)[0][0]
        overlay(axes[-1], image, cam, f"Grad-CAM ({self.class_names[top]})")
        ranked = top_k(probabilities, TITLE_CLASSES)
        figure.suptitle(f"{Path(path).name}: {describe(ranked, self.class_names)}", fontsize=9)
        return figure


def _channel_bars(ax, gate: np.ndarray, name: str) -> None:
    """A channel gate (C,) in [0, 1] as bars: it weights channels, so it has no place to show."""
    ax.bar(np.arange(len(gate)), gate, width=1.0, color="tab:blue")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"{name.removeprefix('channel_weights_')}\nchannel gate", fontsize=8)
    ax.set_xlabel("channel", fontsize=7)
    ax.tick_params(labelsize=6)
