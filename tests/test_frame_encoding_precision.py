"""The video feature cache encodes frames in the run's precision (issue 16 part 5).

On the tiny synthetic sign set (32 px, 4 frames per clip): a run's frozen encoder is built
under its `--mixed-precision` policy, stores float32 features, and keys its cache with the
precision when it is not float32, so bf16 and float32 features never share cache files while
every float32 key stays what it was.
"""

import re

import keras
import numpy as np
import pytest
from sign_clips import tiny_sign_clips

from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.video import VideoExperiment, load_video_data, prepare_video_inputs
from keras_attn.models.efficientnet_weights import SOURCE_SHA256
from keras_attn.study.video import _data_key

SIZE, T = 32, 4
PRECISIONS = ("off", "bf16")
# Measured on the tiny sign set with EfficientNet-Lite0's ImageNet weights at 32 px, bf16
# against float32 (TF 2.21 on a 2-core AMD EPYC without bfloat16 units, so oneDNN emulates
# bf16): per-frame cosine >= 0.9936, per-frame relative L2 error <= 0.123 (median 0.065);
# standalone at 96 and 224 px: cosine >= 0.995, relative L2 <= 0.107. The bounds leave a
# margin for CPUs that round differently (AMX, AVX512-BF16).
MIN_COSINE = 0.98
MAX_RELATIVE_L2 = 0.2


@pytest.fixture(scope="module")
def sign_set(tmp_path_factory):
    return tiny_sign_clips(tmp_path_factory.mktemp("signs"))


def spec(sign_set, cache_dir, precision, weights="imagenet") -> VideoExperiment:
    return VideoExperiment(
        data_dir=str(sign_set),
        image_size=SIZE,
        num_frames=T,
        backbone_weights=weights,
        mixed_precision=precision,
        cache_dir=str(cache_dir),
    )


@pytest.fixture(scope="module")
def encoded(sign_set, tmp_path_factory):
    """Each precision's prepared data on one shared cache folder: {precision: VideoData}.

    ImageNet weights (EfficientNet-Lite0's, offline): a random encoder's features are chaotic
    under rounding (bf16 against float32 measured cosines down to 0.41 at 32 px and 0.93 at
    96 px), so only pretrained features say how close bf16 encoding is.
    """
    cache = tmp_path_factory.mktemp("cache")
    return cache, {p: load_video_data(spec(sign_set, cache, p)) for p in PRECISIONS}


def test_the_float32_key_is_unchanged_and_the_bf16_key_names_its_precision(encoded):
    cache, data = encoded
    float32 = data["off"].inputs.summary["frame_encoder"]
    bf16 = data["bf16"].inputs.summary["frame_encoder"]
    # Today's format: backbone-weights-size-output, no precision in it.
    assert float32["key"] == f"efficientnet_lite0-imagenet-{SOURCE_SHA256[:16]}-{SIZE}-pooled"
    assert bf16["key"] == float32["key"] + "-mixed_bfloat16"
    assert (float32["precision"], bf16["precision"]) == ("float32", "mixed_bfloat16")
    assert float32["key_sha256"] != bf16["key_sha256"]
    # One cache folder per key, each naming its key; no clip file in both.
    folders = {p.name: p for p in cache.iterdir()}
    assert set(folders) == {float32["key_sha256"][:16], bf16["key_sha256"][:16]}
    keys = {(f / "encoder_key.txt").read_text().strip() for f in folders.values()}
    assert keys == {float32["key"], bf16["key"]}
    clips = [{p.name for p in f.glob("*.npz")} for f in folders.values()]
    assert clips[0] and len(clips[0]) == len(clips[1]) and not clips[0] & clips[1]


def test_a_random_encoders_key_puts_the_precision_before_its_calibration(sign_set, tmp_path):
    index = video_experiment.load_index(spec(sign_set, tmp_path, "off", "none"), sign_set)
    keys = {}
    for precision in PRECISIONS:
        inputs = prepare_video_inputs(
            index,
            T,
            "uniform",
            SIZE,
            "efficientnet_lite0",
            "none",
            feature_cache=False,
            precision=precision,
        )
        keys[precision] = inputs.summary["frame_encoder"]["key"]
    assert re.fullmatch(
        rf"efficientnet_lite0-random-{SIZE}-pooled-calib-[0-9a-f]{{12}}", keys["off"]
    )
    calibration = keys["off"].rpartition("-calib-")[2]
    expected = f"efficientnet_lite0-random-{SIZE}-pooled-mixed_bfloat16-calib-{calibration}"
    assert keys["bf16"] == expected


def test_features_are_float32_in_memory_and_on_disk_in_both_precisions(encoded):
    cache, data = encoded
    for precision, loaded in data.items():
        features = loaded.inputs.val_clips["features"]
        assert features.dtype == np.float32 and features.shape[1:] == (T, 1280), precision
    files = list(cache.glob("*/*.npz"))
    assert len(files) == 2 * sum(data["off"].inputs.summary["readable_clips"].values())
    for path in files:
        with np.load(path) as stored:
            assert stored["features"].dtype == np.float32 and stored["features"].shape == (T, 1280)


def conv_dtypes(encoder) -> set[tuple[str, str]]:
    """(compute, variable) dtypes of the encoder's convolutions."""
    return {
        (layer.compute_dtype, layer.variable_dtype)
        for layer in encoder._flatten_layers()
        if isinstance(layer, keras.layers.Conv2D)
    }


def test_the_bf16_encoder_computes_in_bfloat16_and_gives_float32():
    encoder, _ = video_experiment.frame_encoder(
        "efficientnet_lite0", SIZE, "none", precision="bf16"
    )
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert conv_dtypes(encoder) == {("bfloat16", "float32")}
    assert encoder.output.dtype == "float32"
    frames = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    assert keras.ops.convert_to_numpy(encoder(frames)).dtype == np.float32
    float32, _ = video_experiment.frame_encoder("efficientnet_lite0", SIZE, "none")
    assert float32.output.dtype == "float32"
    assert conv_dtypes(float32) == {("float32", "float32")}
    assert "features_float32" not in [layer.name for layer in float32.layers]  # as before


def test_bf16_features_are_close_to_float32_features(encoded):
    _, data = encoded
    a = data["off"].inputs.val_clips["features"]
    b = data["bf16"].inputs.val_clips["features"]
    mask = data["off"].inputs.val_clips["mask"]
    assert (mask == data["bf16"].inputs.val_clips["mask"]).all() and mask.any()
    a, b = a[mask], b[mask]  # (frames, 1280)
    assert not np.array_equal(a, b)  # bf16 did compute in bfloat16
    norm_a, norm_b = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cosine = (a * b).sum(-1) / (norm_a * norm_b)
    relative = np.linalg.norm(a - b, axis=-1) / norm_a
    assert cosine.min() >= MIN_COSINE, cosine.min()
    assert relative.max() <= MAX_RELATIVE_L2, relative.max()


def test_a_second_bf16_run_reads_its_own_cache(encoded, sign_set):
    cache, data = encoded
    again = load_video_data(spec(sign_set, cache, "bf16"))
    counted = again.inputs.summary["feature_cache"]
    assert counted["misses"] == 0 and counted["hits"] > 0
    first = data["bf16"].inputs.val_clips["features"]
    assert np.array_equal(again.inputs.val_clips["features"], first)


def test_the_explainer_rebuilds_the_encoder_in_the_runs_precision(encoded, sign_set):
    """explain goes from an .mp4 to a prediction through the encoder the run's features came
    from: rebuilt in bf16, it gives the cached bf16 features of a validation clip."""
    from keras_attn.data.video import read_clip_frames
    from keras_attn.explain.encoder import rebuild_frame_encoder

    cache, data = encoded
    loaded = data["bf16"]
    encoder = rebuild_frame_encoder(spec(sign_set, cache, "bf16"), loaded.inputs.summary, None)
    assert conv_dtypes(encoder) == {("bfloat16", "float32")}
    clips = loaded.inputs.val_clips
    frames, _, _ = read_clip_frames(clips["records"][0], T, "uniform", SIZE)
    rebuilt = np.asarray(encoder.predict_on_batch(frames.astype(np.float32)))
    # Measured: equal to the cached bf16 features; 0.20 apart from the float32 ones.
    np.testing.assert_allclose(rebuilt, clips["features"][0], rtol=1e-5, atol=1e-5)
    float32 = data["off"].inputs.val_clips["features"][0]
    assert not np.allclose(rebuilt, float32, rtol=1e-5, atol=1e-5)


def test_a_video_study_loads_its_data_again_for_another_precision(sign_set, tmp_path):
    base = spec(sign_set, tmp_path, "off")
    assert _data_key(base) == _data_key(base.replace(lr=0.5, temporal="avg"))
    assert _data_key(base) != _data_key(base.replace(mixed_precision="bf16"))
