"""Training images/s with the project's fused batch normalisation against Keras' own, side by side.

    python benchmarks/batch_norm_step.py [--backbones small_cnn,resnet_small]
        [--attention none,cbam] [--precisions off,bf16] [--steps 10] [--repeats 5]

Each model is the image experiment's classifier (as `image_step.py` builds and compiles it,
64 px, batch 64, random weights), built twice: with `keras_attn.models.batch_norm`'s
`BatchNormalization` (FusedBatchNormV3 on TensorFlow) and with `keras.layers.BatchNormalization`
swapped in while it is built (what the backbones used before). Repeats are interleaved
over every model (A B C D, A B C D, ...); the table gives the median images/s of each and
the ratio fused / Keras per repeat. Before timing, it checks that the two models with the
same weights give the same logits on one batch (inference) and prints the largest
difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
from image_step import SIZES, compiled_image_model, fit_rate, machine_line, repeated_batch, warm_up

from keras_attn.experiments.image import ImageExperiment
from keras_attn.models import batch_norm


def build(spec: ImageExperiment, fused: bool) -> keras.Model:
    fused_class = batch_norm.BatchNormalization
    if not fused:
        batch_norm.BatchNormalization = keras.layers.BatchNormalization
    try:
        return compiled_image_model(spec, steps_per_epoch=10)
    finally:
        batch_norm.BatchNormalization = fused_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="small_cnn,resnet_small")
    parser.add_argument("--attention", default="none,cbam")
    parser.add_argument("--precisions", default="off,bf16", help="of off,bf16")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="median over this many")
    args = parser.parse_args()
    print(machine_line())

    models, data = {}, {}
    start = time.perf_counter()
    for precision in args.precisions.split(","):
        for backbone in args.backbones.split(","):
            size = SIZES[backbone]
            data[backbone] = repeated_batch(64, size, 6)
            images = np.random.default_rng(1).uniform(0, 255, (8, size, size, 3))
            for attention in args.attention.split(","):
                spec = ImageExperiment(
                    backbone=backbone, attention=attention, mixed_precision=precision
                )
                pair = [build(spec, fused) for fused in (True, False)]
                pair[1].set_weights(pair[0].get_weights())
                logits = [m.predict(images, verbose=0) for m in pair]
                difference = float(np.abs(logits[0] - logits[1]).max())
                print(
                    f"{precision:>4} {backbone} {attention}: max |logits fused - Keras| "
                    f"{difference:.2e} (of max |logit| {np.abs(logits[1]).max():.2f})"
                )
                for fused, model in zip((True, False), pair, strict=True):
                    warm_up(model, data[backbone], 3)
                    models[precision, backbone, attention, fused] = model
    print(
        f"built, checked and warmed up {len(models)} models in {time.perf_counter() - start:.0f} s"
    )

    rates = {key: [] for key in models}
    for _ in range(args.repeats):
        for key, model in models.items():
            rates[key].append(fit_rate(model, data[key[1]], args.steps, 64))

    print(f"\nimages/s, median of {args.repeats} interleaved repeats of {args.steps} steps")
    print(f"{'prec':>4}  {'backbone':<13}{'attention':<10}{'Keras BN':>9}{'fused':>9}  fused/Keras")
    for precision, backbone, attention, fused in models:
        if not fused:
            continue
        new, old = (
            rates[precision, backbone, attention, True],
            rates[precision, backbone, attention, False],
        )
        paired = [n / o for n, o in zip(new, old, strict=True)]
        ratio = statistics.median(new) / statistics.median(old)
        print(
            f"{precision:>4}  {backbone:<13}{attention:<10}{statistics.median(old):9.1f}"
            f"{statistics.median(new):9.1f}  {ratio:.2f}x ({min(paired):.2f}..{max(paired):.2f})"
        )


if __name__ == "__main__":
    main()
