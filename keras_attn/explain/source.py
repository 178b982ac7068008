"""The model to explain: `best.keras` of a run directory, or a `.keras` file of the project.

A run directory also holds `config.json` (the resolved settings: a video model's frame
encoder and sampling are rebuilt from it) and `summary.json` (`class_names`, the encoder's
weights as used). A `.keras` file inside a run directory gets them too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras

from keras_attn.errors import UserError
from keras_attn.models import attention_maps

# The builders' input names tell the three kinds of model apart (keras_attn.models).
KINDS = {
    ("image",): "image",  # build_image_model: images (B,S,S,3) -> logits
    ("features", "mask"): "video_head",  # build_video_head: cached features -> logits
    ("frames", "mask"): "video_frames",  # build_video_model: frames (B,T,S,S,3) -> logits
}


@dataclasses.dataclass
class ModelSource:
    """A loaded model and what its run recorded (`config`, `summary`: {} without a run dir).

    `kind` is "image", "video_head" or "video_frames" (see `KINDS`); `class_names` has one
    name per logit.
    """

    model: keras.Model
    kind: str
    class_names: list[str]
    model_file: Path
    run_dir: Path | None
    config: dict
    summary: dict


def load_source(argument: str) -> ModelSource:
    """The model a RUN_OR_MODEL argument names; a one-line UserError when it names none."""
    path = Path(argument)
    if path.is_dir():
        model_file, run_dir = path / "best.keras", path
        if not model_file.is_file():
            raise UserError(
                f"{argument}: no best.keras in it (not a run directory, or no epoch done)"
            )
    elif path.is_file():
        if path.suffix != ".keras":
            raise UserError(f"{argument}: not a run directory or a .keras model file")
        model_file = path
        run_dir = path.parent if (path.parent / "config.json").is_file() else None
    else:
        raise UserError(f"{argument}: no such run directory or model file")
    config = _read_json(run_dir / "config.json") if run_dir else {}
    summary = _read_json(run_dir / "summary.json") if run_dir else {}
    model = _load_model(model_file)
    kind = _kind(model, model_file)
    num_classes = int(model.outputs[0].shape[-1])
    return ModelSource(
        model, kind, class_names(summary, num_classes), model_file, run_dir, config, summary
    )


def class_names(summary: dict, num_classes: int) -> list[str]:
    """The run's class names (`summary.json`), else "class 0", "class 1", ...

    Every run records them in the data loaders' order (label i is `class_names[i]`); a
    model without its run (a tuner's best.keras) gets numbered names.
    """
    names = summary.get("class_names")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(name) for name in names]
    return [f"class {i}" for i in range(num_classes)]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not readable as JSON ({_one_line(err)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def _load_model(path: Path) -> keras.Model:
    try:
        # compile=False: only inference is needed, and a custom loss need not resolve.
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for a file that is not its own
        raise UserError(
            f"{path}: cannot load it as a keras-attn model ({_one_line(err)})"
        ) from None


def _kind(model: keras.Model, path: Path) -> str:
    names = tuple(tensor.name for tensor in getattr(model, "inputs", None) or ())
    kind = KINDS.get(names)
    if kind is None or len(model.outputs) != 1:
        raise UserError(
            f"{path}: not a model of this project (inputs {', '.join(names) or 'unknown'}; "
            "expected those of build_image_model, build_video_head or build_video_model)"
        )
    try:
        attention_maps(model)
    except ValueError as err:
        raise UserError(f"{path}: {_one_line(err)}") from None
    if kind == "image" and "pool" not in {layer.name for layer in model.layers}:
        raise UserError(f"{path}: an image model without the 'pool' layer Grad-CAM needs")
    return kind


def _one_line(err: Exception, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
