"""Frames per second of the feature cache's frame encoding, float32 against bfloat16, by batch
size, and the projected time to cache WLASL100 and WLASL2000 (issue 16 part 5).

    python benchmarks/frame_encoding.py [--models efficientnet_lite0,mobilenet_v2]
        [--sizes 224,96] [--precisions off,bf16] [--batches 8,16,32,64] [--repeats 3]
        [--seconds 2]

    short check: python benchmarks/frame_encoding.py --repeats 1 --batches 8 --sizes 96

Encoders: `keras_attn.experiments.video.frame_encoder(name, size, "none", precision=p)`, the
builder `prepare_video_inputs` encodes a run's clips with: `build_frame_encoder` under the
dtype policy of `--mixed-precision p` (off: float32; bf16: mixed_bfloat16, float32
variables), preprocessing included, pooled 1280-d float32 features out. Random weights (speed
does not depend on them), BatchNorm calibrated on 16 random frames as a random run's encoder
is (`calibrate_batchnorm`), so activations are O(1) as with ImageNet weights. Sizes: 224 px is
WLASL's frame side, 96 px the synthetic set's.

Each measurement calls the encoder in one `tf.function` (`encoder(x, training=False)`) on an
in-memory batch of `batch` frames of uniform [0, 255] pixels, `calls` times in a row, and
takes frames/s = calls x batch / seconds (the last output is read back to numpy before the
clock stops). Every (model, size, precision, batch) is traced and run once when built, then
once more, untimed, in the timed order once all are built; `calls` is fixed per configuration
from that run so one measurement takes about `--seconds`. Repeats are interleaved (every
configuration once, then again); the tables give the median over `--repeats`, with the
spread (min..max) of the repeats. TensorFlow's default threads.

Then: the best batch per model, size and precision; bf16 / float32 at each batch and at each
precision's best batch; the projected time to cache WLASL100 (2,038 clips) and WLASL2000
(21,083 clips) at 8, 16 and 32 frames per clip, at each best batch: clips x frames / (frames
per second). ENCODING ONLY: decoding and resizing the MP4s (`benchmarks/video_decode.py`),
which `FeatureCache` runs in threads on the same cores beside the encoder, and writing the
cache files are not included. `FeatureCache` encodes whole clips, `ENCODE_BATCH_FRAMES //
frames per clip` of them per call (at least one), so a batch below the clip length runs as
one clip per call. The last line says which batch `keras_attn.data.features.ENCODE_BATCH_FRAMES`
should be (EfficientNet-Lite0, the default encoder, at 224 px).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from image_step import machine_line

from keras_attn.data.features import ENCODE_BATCH_FRAMES
from keras_attn.experiments.video import frame_encoder
from keras_attn.models.backbones import PRETRAINABLE
from keras_attn.models.video import calibrate_batchnorm
from keras_attn.training import acceleration

DATASETS = {"WLASL100": 2038, "WLASL2000": 21083}  # clips (WLASL's nslt_100 / nslt_2000)
FRAMES_PER_CLIP = (8, 16, 32)
CALIBRATION_FRAMES = 16
DEFAULT_ENCODER, DEFAULT_SIZE = "efficientnet_lite0", 224  # what ENCODE_BATCH_FRAMES is for
NAMES = {"off": "float32", "bf16": "bf16"}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return "unknown"
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "unknown"


class Encoding:
    """One encoder (model, size, precision) and its compiled call on in-memory batches."""

    def __init__(self, model: str, size: int, precision: str, batches: list[int]):
        rng = np.random.default_rng(0)
        self.encoder, _ = frame_encoder(model, size, "none", precision=precision)
        calibration = rng.uniform(0, 255, (CALIBRATION_FRAMES, size, size, 3))
        calibrate_batchnorm(self.encoder, calibration.astype(np.float32))
        frames = rng.uniform(0, 255, (max(batches), size, size, 3)).astype(np.float32)
        self.x = {b: tf.constant(frames[:b]) for b in batches}
        self.call = tf.function(lambda x: self.encoder(x, training=False))
        self.seconds_per_call, self.calls = {}, {}
        for b in batches:  # trace each batch shape and run it once
            self.call(self.x[b]).numpy()
            start = time.perf_counter()
            self.call(self.x[b]).numpy()
            self.seconds_per_call[b] = time.perf_counter() - start
            self.calls[b] = 1

    def fix_calls(self, batch: int, seconds: float) -> None:
        """Calls per measurement, from the last untimed one: about `seconds`, at least 2."""
        self.calls[batch] = max(2, math.ceil(seconds / self.seconds_per_call[batch]))

    def rate(self, batch: int) -> float:
        calls = self.calls[batch]
        start = time.perf_counter()
        for _ in range(calls):
            out = self.call(self.x[batch])
        out.numpy()
        return calls * batch / (time.perf_counter() - start)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    parser.add_argument("--sizes", default="224,96", help="frame sides in px")
    parser.add_argument("--precisions", default="off,bf16", help="of off,bf16 (--mixed-precision)")
    parser.add_argument("--batches", default="8,16,32,64", help="frames per encoder call")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many")
    parser.add_argument("--seconds", type=float, default=2.0, help="about this long a measurement")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        batches = sorted({int(b) for b in args.batches.split(",") if b})
    except ValueError:
        parser.error("--sizes and --batches are comma-separated integers")
    for m in models:
        if m not in PRETRAINABLE:
            parser.error(f"unknown model {m!r}; choose from {', '.join(PRETRAINABLE)}")
    for p in precisions:
        if p not in NAMES:
            parser.error(f"unknown precision {p!r}; choose from {', '.join(NAMES)}")
    if min(sizes + batches) < 1 or args.repeats < 1 or args.seconds <= 0:
        parser.error("--sizes, --batches, --repeats and --seconds must be positive")

    print(machine_line())
    units = acceleration.cpu_bfloat16_units()
    print(f"cpu: {cpu_model()}; bfloat16 units: {', '.join(units) or 'none (bf16 is emulated)'}")
    t0 = time.perf_counter()
    keys = [(m, s, p) for m in models for s in sizes for p in precisions]
    built = {key: Encoding(*key, batches) for key in keys}
    for item in built.values():  # once more, untimed, in the timed order
        for b in batches:
            item.seconds_per_call[b] = 1 / item.rate(b) * b
            item.fix_calls(b, args.seconds)
    print(
        f"built, calibrated, traced and warmed up {len(built)} encoders x {len(batches)} "
        f"batches in {time.perf_counter() - t0:.0f} s; random weights, pooled features"
    )
    runs = {(key, b): [] for key in keys for b in batches}
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        for key, item in built.items():  # interleaved: A B C, A B C, ...
            for b in batches:
                runs[key, b].append(item.rate(b))
    print(f"{args.repeats} repeats in {time.perf_counter() - t0:.0f} s")
    fps = {k: statistics.median(v) for k, v in runs.items()}
    best = {key: max(batches, key=lambda b: fps[key, b]) for key in keys}

    print()
    print("frames/s, median (min..max over repeats), by frames per call")
    cells = [f"{f'batch {b}':>22}" for b in batches]
    print(f"{'model':<19}{'px':>4}{'prec':>8}{''.join(cells)}{'best':>6}")
    for key in keys:
        m, s, p = key
        row = ""
        for b in batches:
            r = runs[key, b]
            row += f"{fps[key, b]:>9.1f} ({min(r):.1f}..{max(r):.1f})".rjust(22)
        print(f"{m:<19}{s:>4}{NAMES[p]:>8}{row}{best[key]:>6}")

    if "off" in precisions and "bf16" in precisions:
        print()
        print("bf16 / float32 frames/s (medians; per-repeat ratios min..max)")
        cells = [f"{f'batch {b}':>21}" for b in batches]
        print(f"{'model':<19}{'px':>4}{''.join(cells)}{'best/best':>11}")
        for m in models:
            for s in sizes:
                a, c = (m, s, "off"), (m, s, "bf16")
                row = ""
                for b in batches:
                    each = [y / x for x, y in zip(runs[a, b], runs[c, b], strict=True)]
                    cell = f"{fps[c, b] / fps[a, b]:.2f}x ({min(each):.2f}..{max(each):.2f})"
                    row += cell.rjust(21)
                ratio = fps[c, best[c]] / fps[a, best[a]]
                print(f"{m:<19}{s:>4}{row}{f'{ratio:.2f}x':>11}")

    print()
    print(
        "projected time to cache, at each best batch: clips x frames per clip / frames/s "
        "(ENCODING ONLY: no MP4 decoding, resizing or cache writes)"
    )
    heads = [f"{name} x{t}".rjust(15) for name in DATASETS for t in FRAMES_PER_CLIP]
    print(f"{'model':<19}{'px':>4}{'prec':>8}{'batch':>6}{'frames/s':>10}{''.join(heads)}")
    for key in keys:
        m, s, p = key
        rate = fps[key, best[key]]
        times = [
            duration(n * t / rate).rjust(15) for n in DATASETS.values() for t in FRAMES_PER_CLIP
        ]
        print(f"{m:<19}{s:>4}{NAMES[p]:>8}{best[key]:>6}{rate:>10.1f}{''.join(times)}")

    print()
    chosen = [key for key in keys if key[:2] == (DEFAULT_ENCODER, DEFAULT_SIZE)]
    if not chosen:
        print(
            f"ENCODE_BATCH_FRAMES (now {ENCODE_BATCH_FRAMES}): not measured here "
            f"({DEFAULT_ENCODER} at {DEFAULT_SIZE} px is what it is chosen on)"
        )
        return
    now = ENCODE_BATCH_FRAMES
    for key in chosen:
        share = ""
        if (key, now) in fps:
            share = f"; batch {now} reaches {fps[key, now] / fps[key, best[key]]:.0%} of that"
        print(
            f"ENCODE_BATCH_FRAMES (keras_attn/data/features.py, now {now}): {DEFAULT_ENCODER} "
            f"at {DEFAULT_SIZE} px, {NAMES[key[2]]}, is fastest at batch {best[key]}{share}"
        )


if __name__ == "__main__":
    main()
