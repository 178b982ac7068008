"""The frozen-feature cache and the in-memory feature dataset, with a tiny encoder."""

import logging
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from test_video import record, write_h264, write_mp4v

from keras_attn.data import features as features_module
from keras_attn.data.features import FeatureCache, feature_dataset
from keras_attn.data.order import epoch_order
from keras_attn.data.video import read_clip_frames

S = 32  # image size
T = 4  # frames per clip


def tiny_encoder(pool: bool = True) -> keras.Model:
    """(N, S, S, 3) [0, 255] -> (N, 6), or a (N, 4, 4, 3) map; fixed weights."""
    inputs = keras.Input((S, S, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    if pool:
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(6, kernel_initializer=keras.initializers.GlorotUniform(seed=0))(x)
    else:
        x = keras.layers.AveragePooling2D(8)(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture
def clips(tmp_path):
    long = write_mp4v(tmp_path / "long.mp4", 120)
    short = write_mp4v(tmp_path / "short.mp4", 3)
    recs = [record(long, 20 * i, 20 * i + 19, label=i) for i in range(4)]
    return [*recs, record(short, label=4)]


def cache_files(cache_dir) -> list[Path]:
    return sorted(p for p in Path(cache_dir).rglob("*") if p.is_file() and p.suffix != ".txt")


def test_first_call_misses_second_hits_and_matches_uncached(tmp_path, clips, encoder):
    cache_dir = tmp_path / "cache"
    x, m, y, stats = FeatureCache(cache_dir, encoder, "tiny-v1").features_for(
        clips, T, "uniform", S, batch_frames=8
    )
    assert (stats["hits"], stats["misses"], stats["skipped"]) == (0, 5, [])
    assert stats["kept"] == [0, 1, 2, 3, 4]
    assert x.shape == (5, T, 6) and x.dtype == np.float32
    assert m.shape == (5, T) and m.dtype == bool and y.dtype == np.int32
    assert y.tolist() == [0, 1, 2, 3, 4]
    assert m[4].tolist() == [True, True, True, False]  # the 3-frame clip is padded
    assert len(cache_files(cache_dir)) == 5
    assert all(p.suffix == ".npz" for p in cache_files(cache_dir))

    x2, m2, y2, stats2 = FeatureCache(cache_dir, tiny_encoder(), "tiny-v1").features_for(
        clips, T, "uniform", S, batch_frames=8
    )
    assert (stats2["hits"], stats2["misses"], stats2["skipped"]) == (5, 0, [])
    # The sampled frames' numbers in the file, the same from the cache as computed.
    np.testing.assert_array_equal(stats2["frame_indices"], stats["frame_indices"])
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(y2, y)

    for i, clip in enumerate(clips):  # uncached: decode and encode one clip alone
        frames, mask, indices = read_clip_frames(clip, T, "uniform", S)
        np.testing.assert_array_equal(stats2["frame_indices"][i], indices)
        direct = encoder.predict_on_batch(frames.astype(np.float32))
        np.testing.assert_allclose(x2[i], direct, atol=1e-5)
        np.testing.assert_array_equal(m2[i], mask)


def test_frames_are_encoded_in_batches_across_clips(tmp_path, clips, encoder, monkeypatch):
    shapes = []
    real = encoder.predict_on_batch
    monkeypatch.setattr(encoder, "predict_on_batch", lambda x: shapes.append(x.shape) or real(x))
    FeatureCache(tmp_path / "cache", encoder, "tiny-v1").features_for(
        clips, T, "uniform", S, batch_frames=8
    )
    assert shapes == [(8, S, S, 3)] * 3  # 2 clips a call, the last call padded


@pytest.mark.parametrize(
    "change", ["encoder_key", "image_size", "num_frames", "mode", "touch", "rewrite", "crop"]
)
def test_cache_invalidation(tmp_path, encoder, change):
    path = write_mp4v(tmp_path / "v.mp4", 40)
    clip = record(path, bbox=(0, 0, 48, 48))
    cache_dir = tmp_path / "cache"
    args = {"num_frames": T, "mode": "uniform", "image_size": S}
    key = "tiny-v1"
    assert FeatureCache(cache_dir, encoder, key).features_for([clip], **args)[3]["misses"] == 1
    assert FeatureCache(cache_dir, encoder, key).features_for([clip], **args)[3]["hits"] == 1
    crop = False
    if change == "encoder_key":
        key = "tiny-v2"
    elif change == "image_size":
        args["image_size"] = 16
    elif change == "num_frames":
        args["num_frames"] = 3
    elif change == "mode":
        args["mode"] = "center"
    elif change == "touch":
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "rewrite":
        write_mp4v(path, 40)
    else:
        crop = True
    stats = FeatureCache(cache_dir, encoder, key).features_for([clip], crop_bbox=crop, **args)[3]
    assert (stats["hits"], stats["misses"]) == (0, 1)


def test_h264_clips_are_cached_too(tmp_path, encoder):
    clip = record(write_h264(tmp_path / "h.mp4", 60), 10, 49)
    cache = FeatureCache(tmp_path / "cache", encoder, "tiny-v1")
    first = cache.features_for([clip], T, "center", S)
    second = cache.features_for([clip], T, "center", S)
    assert (first[3]["misses"], second[3]["hits"]) == (1, 1)
    np.testing.assert_array_equal(first[0], second[0])


def test_feature_maps_are_cached(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache", tiny_encoder(pool=False), "tiny-map")
    x, _, _, _ = cache.features_for(clips, T, "center", S)
    assert x.shape == (5, T, 4, 4, 3)
    again, _, _, stats = cache.features_for(clips, T, "center", S)
    assert stats["hits"] == 5
    np.testing.assert_array_equal(again, x)
    # The maps are average-pooled pixels in [0, 1]: the bottom-left cell is the red area.
    np.testing.assert_allclose(x[0, 0, 3, 0], [1, 0, 0], atol=0.1)


def test_unreadable_clips_are_skipped_and_labels_stay_aligned(tmp_path, clips, encoder, caplog):
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    records = [
        clips[0],
        record(text, label=9),
        clips[1],
        record(tmp_path / "gone.mp4", label=8),
        clips[2],
    ]
    with caplog.at_level(logging.WARNING):
        x, m, y, stats = FeatureCache(tmp_path / "cache", encoder, "tiny-v1").features_for(
            records, T, "uniform", S, batch_frames=8
        )
    assert y.tolist() == [0, 1, 2]
    assert stats["kept"] == [0, 2, 4]  # positions of the readable clips among the records
    assert (stats["hits"], stats["misses"]) == (0, 3)
    assert [s["path"] for s in stats["skipped"]] == [str(text), str(tmp_path / "gone.mp4")]
    assert sum("skipping unreadable clip" in msg for msg in caplog.messages) == 2
    alone = FeatureCache(tmp_path / "other", encoder, "tiny-v1").features_for(
        [clips[1]], T, "uniform", S
    )[0]
    np.testing.assert_allclose(x[1], alone[0], atol=1e-5)


def test_failed_write_leaves_no_partial_file(tmp_path, clips, encoder, monkeypatch, caplog):
    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features_module.np, "savez", failing_savez)
    cache_dir = tmp_path / "cache"
    cache = FeatureCache(cache_dir, encoder, "tiny-v1")
    with caplog.at_level(logging.WARNING):
        x, _, y, stats = cache.features_for(clips[:2], T, "uniform", S)
    assert x.shape == (2, T, 6) and stats["misses"] == 2  # features still returned
    assert any("No space left" in msg for msg in caplog.messages)
    assert cache_files(cache_dir) == []

    def interrupted_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(features_module.np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        cache.features_for(clips[:1], T, "uniform", S)
    assert cache_files(cache_dir) == []


def test_corrupt_cache_file_is_a_miss_and_rewritten(tmp_path, clips, encoder):
    cache = FeatureCache(tmp_path / "cache", encoder, "tiny-v1")
    x, *_ = cache.features_for(clips[:1], T, "uniform", S)
    (path,) = cache_files(tmp_path / "cache")
    path.write_bytes(path.read_bytes()[:40])
    x2, _, _, stats = cache.features_for(clips[:1], T, "uniform", S)
    assert stats["misses"] == 1
    np.testing.assert_array_equal(x2, x)
    assert cache.features_for(clips[:1], T, "uniform", S)[3]["hits"] == 1


def test_random_mode_is_refused(tmp_path, clips, encoder):
    with pytest.raises(ValueError, match="deterministic"):
        FeatureCache(tmp_path, encoder, "tiny-v1").features_for(clips, T, "random", S)


def test_default_cache_dir_is_git_ignored():
    assert FeatureCache(None, None, "k").cache_dir == Path("data/cache/features")
    root = Path(__file__).resolve().parents[1]
    assert "data/cache/" in (root / ".gitignore").read_text().splitlines()


def test_feature_dataset_order_shapes_and_resume():
    n = 7
    feats = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, T, 3), np.float32)
    masks = np.ones((n, T), bool)
    labels = np.arange(n, dtype=np.int32)

    def run(seed=3, training=True, start_epoch=0, epochs=3):
        ds = feature_dataset(feats, masks, labels, 3, seed, training, start_epoch, epochs)
        return [(x, m, y) for (x, m), y in ds.as_numpy_iterator()]

    batches = run()
    assert [len(y) for _, _, y in batches] == [3, 3, 1] * 3
    x, m, y = batches[0]
    assert x.shape == (3, T, 3) and x.dtype == np.float32 and m.dtype == bool
    assert y.dtype == np.int32 and np.all(x[:, 0, 0] == y)  # features stay with their labels
    order = [np.concatenate([b[2] for b in batches[3 * e : 3 * e + 3]]).tolist() for e in range(3)]
    assert all(sorted(o) == list(range(n)) for o in order) and len(set(map(tuple, order))) > 1
    assert order == [epoch_order(n, 3, e).numpy().tolist() for e in range(3)]
    assert [b[2].tolist() for b in run()] == [b[2].tolist() for b in batches]
    assert [b[2].tolist() for b in run(seed=4)] != [b[2].tolist() for b in batches]
    assert [b[2].tolist() for b in run(start_epoch=2)] == [b[2].tolist() for b in batches[6:]]
    assert np.concatenate([b[2] for b in run(training=False)]).tolist() == list(range(n))


class _WouldRunCode:
    """Unpickling this object would create `path`: the proof that a pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_cache_file_holding_a_pickle_is_a_miss_and_is_never_unpickled(tmp_path, clips, encoder):
    cache = FeatureCache(tmp_path / "cache", encoder, "tiny-v1")
    cache.features_for(clips[:1], T, "uniform", S)
    (cached,) = cache_files(tmp_path / "cache")
    marker = tmp_path / "pickle-ran"
    features = np.empty(1, dtype=object)
    features[0] = _WouldRunCode(marker)
    np.savez(cached, features=features, mask=np.ones(T, bool), frame_indices=np.arange(T))
    x, _, _, stats = cache.features_for(clips[:1], T, "uniform", S)
    assert (stats["hits"], stats["misses"]) == (0, 1)  # recomputed, not loaded
    assert not marker.exists()
    assert x.dtype == np.float32 and x.shape == (1, T, 6)
