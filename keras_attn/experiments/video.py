"""The video experiment: its spec, from a WLASL index to frozen features, its model, a run.

`VideoExperiment` declares every setting of a video run; `train_video.py`,
`python -m tuning video` and the video study build one and call `train`. The frozen
encoder's features are computed once per clip and cached on disk
(`prepare_video_inputs`), so every later epoch, trial and seed trains only the
temporal head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_attn.data.features import DETERMINISTIC_MODES, FeatureCache, feature_dataset
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.video import SAMPLING_MODES, clip_dataset, read_clip_frames, scan_clips
from keras_attn.data.wlasl import CLASS_ORDERS, SPLIT_MODES, WlaslIndex, load_wlasl
from keras_attn.errors import UserError
from keras_attn.files import atomic_write_json, atomic_write_text
from keras_attn.layers import temporal_names
from keras_attn.models.backbones import PRETRAINABLE
from keras_attn.models.video import (
    FRAME_ATTENTION,
    build_frame_encoder,
    build_video_head,
    build_video_model,
    calibrate_batchnorm,
)
from keras_attn.spec import at_least, fraction, like, non_negative, setting
from keras_attn.training import acceleration
from keras_attn.training.callbacks import (
    TopKMetrics,
    predict_logits,
    top_k_scores,
    top_k_values,
)
from keras_attn.training.config import TrainingSpec
from keras_attn.training.run import run_training

log = logging.getLogger(__name__)

CALIBRATION_CLIPS = 16
FRAME_RANGES = ("sign", "clip")
TEMPORAL_POOLS = ("attention", "avg", "max", "last")
MAX_CONFUSION_CLASSES = 100  # a larger confusion matrix is unreadable as one picture
VAL_ON_TEST_WARNING = (
    "warning: --val-split test chooses the best epoch (and early stopping) on the test split, "
    "as the original study and WLASL's own I3D training did: its test figures are optimistic"
)


@dataclasses.dataclass(frozen=True)
class VideoExperiment(TrainingSpec):
    """Every setting of a video run. The defaults are the original study's video
    settings: 8 frames, 10 glosses, batch 4, AdamW 1e-3, 20 epochs; except that it
    validates on the val split and scores the test split once at the end, where the
    original validated on test (`val_split="test"` reproduces that)."""

    NAME_FIELDS = ("data_name", "temporal")
    # bf16 does not pay here on a CPU with bfloat16 units: with AMX the default video run took
    # 0.97x the time of float32 (the head is too small to gain) and EfficientNet-Lite0
    # encodes frames 0.79x as fast at 224 px (benchmarks/RESULTS.md section 15), with
    # AVX512-BF16 alone 0.76x (section 13), so auto stays float32.
    BF16_PAYS_ON_CPU = False
    # The original study's video run: WLASL100's index, the first 10 glosses alphabetically
    # among available videos, 8 consecutive centre frames, a TCN head, batch 4, AdamW 1e-3,
    # 20 epochs, early stopping patience 5, validated on the test split.
    PRESETS = {
        "seed": dict(
            index="nslt_100.json",
            limit_classes=10,
            class_order="alphabetical",
            num_frames=8,
            sampling="center",
            temporal="tcn",
            batch_size=4,
            optimizer="adamw",
            lr=1e-3,
            epochs=20,
            early_stopping=5,
            val_split="test",
        ),
    }

    preset: str | None = setting(None, "a named set of defaults (flags given override it)")
    data_dir: str | None = setting(
        None, "WLASL folder: index file + videos/ (default: synthetic)", group="data"
    )
    index: str | None = setting(
        None,
        "the index file (nslt_100.json, nslt_300.json, ..., WLASL_v0.3.json), as given or in "
        "--data-dir (default: WLASL_v0.3.json, else the smallest nslt_N.json)",
        metavar="FILE",
        group="data",
    )
    raw_videos: str | None = setting(
        None,
        "cut the clips from WLASL's raw downloads in DIR (YouTube's named by video id, "
        "the others by video_id), annotated frames mapped to each file's frame rate by time; "
        "needs WLASL_v0.3.json",
        metavar="DIR",
        group="data",
    )
    split: str = setting(
        "index",
        "index: the index's splits; signer-independent: re-split so that no signer is in two "
        "splits (needs WLASL_v0.3.json's signer_id)",
        choices=SPLIT_MODES,
        group="data",
    )
    split_seed: int = setting(
        0,
        "--split signer-independent: the seed that deals signers to splits (fixed apart from "
        "--seed, so every run of a study sees the same val and test)",
        group="data",
    )
    synthetic_clips_per_class: int = setting(
        100, "synthetic set size", check=at_least(1), group="data"
    )
    val_split: str = setting(
        "val",
        "validate (best epoch, early stopping) on this split; the test split is scored once at "
        "the end, never used for a choice. test: validate on it as the original study did "
        "(then no separate test split is scored)",
        choices=("val", "test"),
        group="data",
    )
    limit_classes: int = setting(
        10, "keep N glosses (0: all)", metavar="N", check=non_negative, group="data"
    )
    class_order: str = setting(
        "frequency",
        "which glosses --limit-classes keeps: most training clips, alphabetical, or the "
        "index's own order (labels then follow it: an nslt index's class ids)",
        choices=CLASS_ORDERS,
        group="data",
    )
    num_frames: int = setting(8, "frames sampled per clip", check=at_least(1), group="data")
    sampling: str = setting(
        "uniform", "where in the sign to sample", choices=SAMPLING_MODES, group="data"
    )
    frame_range: str = setting(
        "sign",
        "sample within the annotated sign, or over the whole clip (lead-in and tail too)",
        choices=FRAME_RANGES,
        group="data",
    )
    crop_bbox: bool = setting(False, "crop each frame to the signer's box", group="data")
    image_size: int | None = setting(
        None, "frame side (default 96 synthetic, 224)", check=at_least(8), group="data"
    )
    backbone: str = setting(
        "efficientnet_lite0", "frozen frame encoder", choices=PRETRAINABLE, group="model"
    )
    backbone_weights: str = setting(
        "auto",
        "the encoder's weights; auto: ImageNet (offline for efficientnet_lite0; for the "
        "MobileNets where Keras has them cached), else random with a warning",
        metavar="auto|imagenet|none|PATH",
        group="model",
    )
    feature_cache: str = setting(
        "on", "off: run the frozen encoder on every batch", choices=("on", "off"), group="model"
    )
    cache_dir: str | None = setting(
        None, "feature cache folder (default data/cache/features)", group="model", in_config=False
    )
    temporal: str = setting("tcn", "temporal module", choices=temporal_names, group="model")
    temporal_pool: str = setting(
        "attention", "how tcn pools frames", choices=TEMPORAL_POOLS, group="model"
    )
    frame_attention: str = setting(
        "none",
        "spatial attention on each frame's feature map",
        choices=FRAME_ATTENTION,
        group="model",
    )
    width: int = setting(
        128, "per-frame projection and TCN width", check=at_least(1), group="model"
    )
    tcn_kernel: int = setting(3, "TCN kernel size", check=at_least(1), group="model")
    tcn_levels: int = setting(
        3, "TCN blocks, dilations 1, 2, ..., 2^(levels-1)", check=at_least(1), group="model"
    )
    dropout: float = setting(0.5, "dropout before the classifier", check=fraction, group="model")

    batch_size: int = like(TrainingSpec, "batch_size", 4)
    epochs: int = like(TrainingSpec, "epochs", 20)
    lr: float = like(TrainingSpec, "lr", 1e-3)
    label_smoothing: float = like(TrainingSpec, "label_smoothing", 0.0)
    strategy: str = like(TrainingSpec, "strategy", "auto")
    # The head on cached features is tiny: per-step Python overhead would dominate.
    steps_per_execution: int = like(TrainingSpec, "steps_per_execution", 32)

    @property
    def data_name(self) -> str:
        return os.path.basename(str(self.data_dir)) if self.data_dir else "synthetic"

    def resolved_image_size(self) -> int:
        return self.image_size or (224 if self.data_dir else 96)


@dataclasses.dataclass
class VideoData:
    """The selected clips (`index`, with the annotated sign ranges) and what runs train on."""

    index: WlaslIndex
    inputs: VideoInputs
    data_dir: str
    image_size: int


def load_video_data(spec: VideoExperiment) -> VideoData:
    """The index (the synthetic set unless `data_dir`), scanned clips and frozen features.

    With `frame_range` "clip" the frames are sampled over whole files; the returned
    index keeps the annotated ranges.
    """
    data_dir = spec.data_dir or ensure_synthetic_videos(
        clips_per_class=spec.synthetic_clips_per_class
    )
    image_size = spec.resolved_image_size()
    index = load_index(spec, data_dir)
    print(index.summary_line())
    if spec.val_split == "test":
        print(VAL_ON_TEST_WARNING, file=sys.stderr)
    inputs = prepare_video_inputs(
        index.over_whole_clips() if spec.frame_range == "clip" else index,
        spec.num_frames,
        spec.sampling,
        image_size,
        spec.backbone,
        spec.backbone_weights,
        feature_maps=spec.frame_attention != "none",
        crop_bbox=spec.crop_bbox,
        feature_cache=spec.feature_cache == "on",
        cache_dir=spec.cache_dir,
        batch_size=spec.batch_size,
        seed=spec.seed,
        precision=spec.mixed_precision,
    )
    return VideoData(index, inputs, str(data_dir), image_size)


def load_index(spec: VideoExperiment, data_dir) -> WlaslIndex:
    """The spec's clip index in `data_dir`: index file, splits, classes, clip layouts."""
    return load_wlasl(
        data_dir,
        spec.val_split,
        spec.limit_classes or None,
        spec.class_order,
        index_file=spec.index,
        split=spec.split,
        split_seed=spec.split_seed,
        raw_videos=spec.raw_videos,
    )


def resolved(spec: VideoExperiment, data: VideoData) -> VideoExperiment:
    """The spec with what the data decided (its folder, the frame size) and the encoder's
    weights as resolved (`auto` -> imagenet or none), as `config.json` records it."""
    used = data.inputs.summary["backbone_weights_used"]
    weights = {"random": "none"}.get(used, "imagenet" if used.startswith("imagenet") else None)
    return spec.replace(
        data_dir=data.data_dir,
        image_size=data.image_size,
        backbone_weights=weights or spec.backbone_weights,
    )


def build_model(spec: VideoExperiment, data: VideoData) -> keras.Model:
    """The model on what `data.inputs` yields: `[x (B,T,...), mask (B,T)] -> logits`."""
    return data.inputs.wrap_head(head(spec, data.inputs.feature_shape, len(data.index.class_names)))


def head(spec: VideoExperiment, feature_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The spec's temporal head: `[features (B,T,*feature_shape), mask (B,T)] -> logits`."""
    return build_video_head(
        feature_shape,
        spec.num_frames,
        num_classes,
        temporal=spec.temporal,
        frame_attention=spec.frame_attention,
        width=spec.width,
        dropout=spec.dropout,
        seed=spec.seed,
        temporal_options=dict(
            filters=spec.width,
            pool=spec.temporal_pool,
            kernel_size=spec.tcn_kernel,
            dilations=tuple(2**i for i in range(spec.tcn_levels)),
        ),
    )


def default_run_dir(spec: VideoExperiment) -> Path:
    return Path(spec.run_dir or Path("runs", "video", spec.run_name()))


def train(
    spec: VideoExperiment,
    data: VideoData | None = None,
    run_dir: str | Path | None = None,
    evaluate_test: bool = True,
    **trainer_options,
) -> dict:
    """Trains (or resumes, or reports) one video run; returns its summary.

    `data` defaults to `load_video_data(spec)` (prepared for another seed, its training
    order follows `spec.seed`). With `evaluate_test` the best-val model is scored once on
    the index's test split at the end (a tuner's trials leave it off: they must not see
    test); there is none with `val_split` "test" or an index without readable test clips.
    `trainer_options` go to `run_training`.
    """
    data = data or load_video_data(spec)
    spec = resolved(spec, data)
    inputs = data.inputs.with_seed(spec.seed)
    if evaluate_test and inputs.test is None:
        print(f"No test metrics: {no_test_reason(data.index)}.")
    run_dir = Path(run_dir) if run_dir else default_run_dir(spec)
    measures = [*(trainer_options.pop("measure_callbacks", None) or []), TopKMetrics(inputs.val)]
    summary = run_training(
        lambda: build_model(spec, data),
        inputs.train,
        inputs.val,
        inputs.steps_per_epoch,
        spec,
        run_dir,
        summary_extra=dict(class_names=data.index.class_names, **data.inputs.summary),
        test_data=inputs.test if evaluate_test else None,
        measure_callbacks=measures,
        **trainer_options,
    )
    if summary.get("status") == "completed" and (run_dir / "best.keras").exists():
        test = inputs.test if evaluate_test else None
        summary.update(report_selected(run_dir, data.index.class_names, inputs.val, test))
        atomic_write_json(run_dir / "summary.json", summary)
    return summary


def report_selected(run_dir: Path, class_names: list[str], val, test) -> dict:
    """Top-k of the selected model (`best.keras`, chosen on val) on val and, once, on test.

    Per instance and per class (`<split>_top<k>_accuracy`, `<split>_class_top<k>_accuracy`,
    k in 1, 5, 10 below the class count) into the returned dict (for summary.json) and
    TensorBoard (`logs/selected`); `per_class.csv` (support, top-1 and top-5 per class and
    split) and `confusion_<split>.png` (up to 100 classes) in `run_dir`. Nothing is chosen
    from these numbers.
    """
    model = keras.saving.load_model(run_dir / "best.keras", compile=False)
    scores: dict = {}
    rows = []
    for split, dataset in (("val", val), ("test", test)):
        if dataset is None:
            continue
        labels, logits = predict_logits(model, dataset)
        scores.update(top_k_scores(labels, logits, prefix=f"{split}_"))
        rows += _per_class_rows(split, class_names, labels, logits)
        if len(class_names) <= MAX_CONFUSION_CLASSES:
            _confusion_png(run_dir / f"confusion_{split}.png", split, class_names, labels, logits)
    _write_per_class(run_dir / "per_class.csv", rows, len(class_names))
    writer = tf.summary.create_file_writer(str(run_dir / "logs" / "selected"))
    with writer.as_default():
        for name, value in scores.items():
            tf.summary.scalar(name, value, step=0)
    writer.close()
    print(
        "Selected model (best val): "
        + ", ".join(f"{name.removesuffix('_accuracy')} {v:.4f}" for name, v in scores.items())
    )
    return scores


def _per_class_rows(split, class_names, labels, logits) -> list[dict]:
    top = np.argsort(-logits, axis=-1, kind="stable")
    rows = []
    for c, name in enumerate(class_names):
        chosen = labels == c
        row = dict(split=split, class_index=c, gloss=name, support=int(chosen.sum()))
        for k in (1, 5):
            if k in top_k_values(len(class_names)):
                hit = (top[chosen, :k] == c).any(-1)
                row[f"top{k}_accuracy"] = float(hit.mean()) if chosen.any() else ""
        rows.append(row)
    return rows


def _write_per_class(path: Path, rows: list[dict], num_classes: int) -> None:
    columns = ["split", "class_index", "gloss", "support", "top1_accuracy"]
    if 5 in top_k_values(num_classes):
        columns.append("top5_accuracy")
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_csv_cell(row.get(c, "")) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value) -> str:
    text = f"{value:.6f}" if isinstance(value, float) else str(value)
    return f'"{text}"' if any(ch in text for ch in ',"\n') else text


def _confusion_png(path: Path, split, class_names, labels, logits) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (labels, logits.argmax(-1)), 1)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # per true class
    side = min(4 + 0.16 * n, 20)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(n)
    size = max(3, 9 - n // 15)
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=size)
    ax.set_yticks(ticks, class_names, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{split}: confusion of the selected model (rows: share of each true class)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def no_test_reason(index: WlaslIndex) -> str:
    """Why a run on `index` has no test split to score."""
    if index.val_split == "test":
        return "--val-split test validates on the test split, so no separate test split is left"
    if not index.test:
        return "the index has no test clip of the selected classes"
    return "no test clip is readable"


@dataclasses.dataclass
class VideoInputs:
    """What a video run trains on.

    `train(start_epoch, epochs)`, `val` and `test` yield `((x, mask), label)` batches,
    where x is cached features `(B,T,*feature_shape)` or, without the cache,
    frames `(B,T,S,S,3)`; `wrap_head(head)` turns a head on features into the
    model that takes x. `test` is built exactly like `val` (deterministic sampling,
    record order) from the index's test clips; None when there is no readable one.
    With the feature cache, `val_clips` holds the validation
    set as arrays: `features (N,T,...)`, `mask (N,T)`, `labels (N,)`,
    `frame_indices (N,T)` (each sampled frame's number in its file) and `records`.
    """

    train: Callable[[int, int], tf.data.Dataset]
    val: tf.data.Dataset
    steps_per_epoch: int
    feature_shape: tuple[int, ...]
    wrap_head: Callable[[keras.Model], keras.Model]
    summary: dict
    val_clips: dict | None = None
    reseed: Callable[[int], Callable[[int, int], tf.data.Dataset]] | None = None
    test: tf.data.Dataset | None = None

    def with_seed(self, seed: int) -> VideoInputs:
        """The same inputs with the training order of another seed (validation is fixed)."""
        return dataclasses.replace(self, train=self.reseed(seed))


def prepare_video_inputs(
    index: WlaslIndex,
    num_frames: int = 8,
    sampling: str = "uniform",
    image_size: int = 224,
    backbone: str = "mobilenet_v2",
    weights: str = "auto",
    feature_maps: bool = False,
    crop_bbox: bool = False,
    feature_cache: bool = True,
    cache_dir: str | None = None,
    batch_size: int = 4,
    seed: int = 0,
    precision: str = "off",
) -> VideoInputs:
    """Scans the index's clips, builds the frozen encoder and the datasets.

    The encoder computes in `precision` (`--mixed-precision`: `on`, `bf16`, `off`, `auto`),
    the run's, and gives float32 features; any precision but float32 is part of the
    feature cache's encoder key, so features of two precisions never share cache files.

    Features are cached unless `feature_cache` is off or `sampling` is "random"
    (fresh frames every epoch); validation and test always sample deterministically.
    An unreadable clip of any split is skipped, named and counted in
    `summary["skipped_files"]`; `summary["readable_clips"]` counts what each split kept and
    `summary["test_video_ids"]` lists the test clips in the order `test` yields them.
    """
    train_records, train_skipped = scan_clips(index.train, crop_bbox=crop_bbox)
    val_records, val_skipped = scan_clips(index.val, crop_bbox=crop_bbox)
    test_records, test_skipped = scan_clips(index.test, crop_bbox=crop_bbox)
    if not train_records:
        raise UserError(f"{index.index_file}: no readable training clip")
    if not val_records:
        hint = (
            f" (the index has no {index.val_split!r} clip of the selected classes; "
            "--val-split test validates on its test split instead)"
            if not index.val and index.val_split == "val"
            else ""
        )
        raise UserError(f"{index.index_file}: no readable validation clip{hint}")
    precision, _ = acceleration.resolve_precision(precision, VideoExperiment.BF16_PAYS_ON_CPU)
    encoder, weights_used = frame_encoder(backbone, image_size, weights, feature_maps, precision)
    encoder_key = f"{backbone}-{weights_used}-{image_size}-{'map' if feature_maps else 'pooled'}"
    if precision != "off":  # float32 keys stay as they were before precision was in them
        encoder_key += "-" + acceleration.POLICIES[precision]
    if weights_used == "random":
        encoder_key += "-" + _calibrate(encoder, train_records, num_frames, image_size, crop_bbox)
    val_mode = sampling if sampling in DETERMINISTIC_MODES else "uniform"
    summary = dict(
        index=index.to_summary(),
        skipped_files=train_skipped + val_skipped + test_skipped,
        backbone_weights_used=weights_used,
        frozen_backbone_is_random=weights_used == "random",
        frame_encoder=frame_encoder_record(
            backbone, weights_used, encoder_key, acceleration.POLICIES[precision]
        ),
    )

    if feature_cache and sampling in DETERMINISTIC_MODES:
        cache = FeatureCache(cache_dir, encoder, encoder_key)
        train_x, train_m, train_y, train_stats = cache.features_for(
            train_records, num_frames, sampling, image_size, crop_bbox=crop_bbox
        )
        val_x, val_m, val_y, val_stats = cache.features_for(
            val_records, num_frames, val_mode, image_size, crop_bbox=crop_bbox
        )
        # Keyed like every clip (file identity, frames, encoder), so test clips are cached too.
        test_x, test_m, test_y, test_stats = cache.features_for(
            test_records, num_frames, val_mode, image_size, crop_bbox=crop_bbox
        )
        stats = (train_stats, val_stats, test_stats)
        summary["skipped_files"] += [skip for s in stats for skip in s["skipped"]]
        summary["feature_cache"] = {k: sum(s[k] for s in stats) for k in ("hits", "misses")}
        summary["readable_clips"] = {
            "train": len(train_y),
            "val": len(val_y),
            "test": len(test_y),
        }
        summary["test_video_ids"] = [test_records[i].video_id for i in test_stats["kept"]]
        print(
            f"Frozen features: {summary['feature_cache']['hits']} clips from the cache, "
            f"{summary['feature_cache']['misses']} computed ({cache.directory})"
        )

        def cached_train(seed):
            return lambda start, end: feature_dataset(
                train_x, train_m, train_y, batch_size, seed, True, start, end
            )

        return VideoInputs(
            train=cached_train(seed),
            val=feature_dataset(val_x, val_m, val_y, batch_size, seed, False),
            test=(
                feature_dataset(test_x, test_m, test_y, batch_size, seed, False)
                if len(test_y)
                else None
            ),
            steps_per_epoch=-(-len(train_y) // batch_size),
            feature_shape=tuple(train_x.shape[2:]),
            wrap_head=lambda head: head,
            summary=summary,
            val_clips=dict(
                features=val_x,
                mask=val_m,
                labels=val_y,
                frame_indices=val_stats["frame_indices"],
                records=[val_records[i] for i in val_stats["kept"]],
            ),
            reseed=cached_train,
        )

    summary["feature_cache"] = "off"
    summary["readable_clips"] = {
        "train": len(train_records),
        "val": len(val_records),
        "test": len(test_records),
    }
    summary["test_video_ids"] = [r.video_id for r in test_records]

    def decoded_train(seed):
        return lambda start, end: clip_dataset(
            train_records,
            num_frames,
            sampling,
            image_size,
            seed,
            True,
            batch_size,
            crop_bbox,
            start,
            end,
        )

    return VideoInputs(
        train=decoded_train(seed),
        val=clip_dataset(
            val_records, num_frames, val_mode, image_size, seed, False, batch_size, crop_bbox
        ),
        test=(
            clip_dataset(
                test_records, num_frames, val_mode, image_size, seed, False, batch_size, crop_bbox
            )
            if test_records
            else None
        ),
        steps_per_epoch=-(-len(train_records) // batch_size),
        feature_shape=tuple(encoder.output.shape[1:]),
        wrap_head=lambda head: build_video_model(encoder, head, num_frames),
        summary=summary,
        reseed=decoded_train,
    )


def frame_encoder(
    backbone: str,
    image_size: int,
    weights: str = "auto",
    feature_maps: bool = False,
    precision: str = "off",
) -> tuple[keras.Model, str]:
    """`build_frame_encoder` under the dtype policy of `precision` (`on`, `bf16`, `off`), as
    a run encodes its frames: `(encoder, weights used)`, float32 features either way."""
    with acceleration.precision_policy(precision):
        return build_frame_encoder(backbone, image_size, weights, feature_maps)


def frame_encoder_record(
    backbone: str, weights_used: str, encoder_key: str, precision: str = "float32"
) -> dict:
    """What ties a head-only `best.keras` to the frozen encoder its features came from.

    `precision` is the dtype policy the encoder computed in (`float32`, `mixed_bfloat16`,
    `mixed_float16`; its features are stored as float32). `weights_sha256` is the weights'
    sha256 prefix where the weights carry one (EfficientNet-Lite0's ImageNet file, a weights
    file); `key_sha256` hashes the feature cache's encoder key (backbone, weights, frame
    side, pooling, the precision unless float32 and, for a random encoder, its calibration
    clips).
    """
    record = dict(name=backbone, weights=weights_used, key=encoder_key, precision=precision)
    kind, _, digest = weights_used.partition("-")
    if kind in ("imagenet", "file") and digest:
        record["weights_sha256"] = digest
    record["key_sha256"] = hashlib.sha256(encoder_key.encode()).hexdigest()
    return record


def _calibrate(encoder, records, num_frames, image_size, crop_bbox) -> str:
    """Calibrates a random encoder on the first training clips; returns their identity."""
    chosen = records[:CALIBRATION_CLIPS]
    frames = np.concatenate(
        [
            read_clip_frames(r, num_frames, "uniform", image_size, crop_bbox=crop_bbox)[0]
            for r in chosen
        ]
    )
    calibrate_batchnorm(encoder, frames)
    # File identities too: recalibrating on changed clips must not reuse old features.
    ids = "|".join(
        f"{r.path}:{os.stat(r.path).st_size}:{os.stat(r.path).st_mtime_ns}" for r in chosen
    )
    return "calib-" + hashlib.sha256(ids.encode()).hexdigest()[:12]
