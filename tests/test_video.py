"""Video decoding, frame sampling and the clip tf.data pipeline, on real MP4 files.

Every test video codes each frame's index in its pixels (16 black/white blocks in the top half,
one bit each), so a test can read back which frame was decoded. The bottom half is red on the
left and blue on the right, for the crop tests.
"""

import dataclasses
import logging
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from sign_clips import tiny_sign_clips

from keras_attn.data import video
from keras_attn.data.order import epoch_order
from keras_attn.data.video import (
    VideoDecodeError,
    check_clip,
    clip_dataset,
    read_clip_frames,
    sample_frame_indices,
    scan_clips,
)
from keras_attn.data.wlasl import ClipRecord, load_wlasl

SIDE = 96  # video width and height
FFMPEG = shutil.which("ffmpeg")


def coded_frame(i: int) -> np.ndarray:
    """RGB frame whose top half codes `i` in 16 blocks of 12x24 pixels."""
    frame = np.zeros((SIDE, SIDE, 3), np.uint8)
    for bit in range(16):
        if (i >> bit) & 1:
            row, col = divmod(bit, 8)
            frame[row * 24 : (row + 1) * 24, col * 12 : (col + 1) * 12] = 255
    frame[48:, :48] = (255, 0, 0)
    frame[48:, 48:] = (0, 0, 255)
    return frame


def read_code(frame: np.ndarray) -> int:
    """The index coded in an RGB frame of any square size."""
    scale = frame.shape[0] / SIDE
    gray = frame.astype(np.float32).mean(axis=-1)
    code = 0
    for bit in range(16):
        row, col = divmod(bit, 8)
        y0, x0 = int((row * 24 + 6) * scale), int((col * 12 + 3) * scale)
        y1, x1 = int((row * 24 + 18) * scale), int((col * 12 + 9) * scale)
        if gray[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].mean() > 128:
            code |= 1 << bit
    return code


def codes(frames: np.ndarray) -> list[int]:
    return [read_code(f) for f in frames]


def write_mp4v(path, num_frames: int) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (SIDE, SIDE))
    assert writer.isOpened()
    for i in range(num_frames):
        writer.write(cv2.cvtColor(coded_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def write_ffmpeg(path, num_frames: int, *out_args: str) -> str:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    raw = np.stack([coded_frame(i) for i in range(num_frames)]).tobytes()
    command = [FFMPEG, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    command += ["-s", f"{SIDE}x{SIDE}", "-r", "25", "-i", "-", *out_args, str(path)]
    subprocess.run(command, input=raw, check=True)
    return str(path)


def write_h264(path, num_frames: int, *extra: str) -> str:
    # -g 30: several keyframes, so a far seek lands on one that is not the first.
    return write_ffmpeg(
        path, num_frames, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30", *extra
    )


def record(path, start=0, end=None, label=0, bbox=None) -> ClipRecord:
    return ClipRecord(
        video_id=str(path).rsplit("/", 1)[-1].split(".")[0],
        path=str(path),
        label=label,
        split="train",
        frame_start=start,
        frame_end=end,
        bbox=bbox,
        signer_id=None,
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    paths = {"mp4v": write_mp4v(d / "mp4v.mp4", 300), "short": write_mp4v(d / "short.mp4", 10)}
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    data = Path(paths["mp4v"]).read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    paths.update(
        zero=str(d / "zero.mp4"),
        text=str(d / "text.mp4"),
        truncated=str(d / "truncated.mp4"),
        missing=str(d / "missing.mp4"),
    )
    return paths


@pytest.fixture(scope="module")
def h264_videos(tmp_path_factory):
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    d = tmp_path_factory.mktemp("h264")
    paths = {
        "h264": write_h264(d / "h264.mp4", 300),
        # Raw Annex B stream: OpenCV reports a garbage frame count and cannot seek.
        "raw": write_ffmpeg(
            d / "raw.h264", 300, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264"
        ),
    }
    fast = write_h264(d / "fast.mp4", 300, "-movflags", "+faststart")
    data = Path(fast).read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])  # index intact, second half of frames lost
    paths["cut"] = str(d / "cut.mp4")
    return paths


@pytest.fixture(params=["mp4v", "h264"])
def coded_video(request, videos):
    if request.param == "mp4v":
        return videos["mp4v"]
    return request.getfixturevalue("h264_videos")["h264"]


# ---- sampling -------------------------------------------------------------------------------


def test_center_takes_consecutive_centred_frames():
    idx, mask = sample_frame_indices(20, 8, "center")
    assert idx.tolist() == list(range(6, 14)) and mask.all()
    assert sample_frame_indices(21, 8, "center")[0].tolist() == list(range(6, 14))
    assert idx.dtype == np.int32 and mask.dtype == bool


def test_uniform_takes_segment_middles():
    assert sample_frame_indices(10, 4, "uniform")[0].tolist() == [1, 3, 6, 8]
    assert sample_frame_indices(100, 8, "uniform")[0].tolist() == [6, 18, 31, 43, 56, 68, 81, 93]
    assert sample_frame_indices(8, 8, "uniform")[0].tolist() == list(range(8))
    assert sample_frame_indices(8, 8, "center")[0].tolist() == list(range(8))


def test_random_is_reproducible_and_stays_in_segments():
    a = sample_frame_indices(10, 4, "random", np.random.default_rng(3))[0]
    b = sample_frame_indices(10, 4, "random", np.random.default_rng(3))[0]
    assert a.tolist() == b.tolist()
    segments = [(0, 2), (2, 5), (5, 7), (7, 10)]  # [i*10//4, (i+1)*10//4)
    rng = np.random.default_rng(0)
    seen = [set() for _ in segments]
    for _ in range(200):
        idx, mask = sample_frame_indices(10, 4, "random", rng)
        assert mask.all() and np.all(np.diff(idx) > 0)
        for s, (lo, hi), i in zip(seen, segments, idx, strict=True):
            assert lo <= i < hi
            s.add(int(i))
    assert seen == [set(range(lo, hi)) for lo, hi in segments]  # every frame of a segment occurs


@pytest.mark.parametrize("mode", ["center", "uniform", "random"])
def test_short_range_repeats_last_frame_with_mask(mode):
    idx, mask = sample_frame_indices(3, 8, mode, np.random.default_rng(0))
    assert idx.tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    assert mask.tolist() == [True] * 3 + [False] * 5


def test_sampling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown sampling mode"):
        sample_frame_indices(10, 4, "middle")
    with pytest.raises(ValueError, match="rng"):
        sample_frame_indices(10, 4, "random")
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(0, 4, "uniform")


# ---- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["center", "uniform"])
def test_reads_the_sampled_frames(coded_video, mode):
    frames, mask, idx = read_clip_frames(record(coded_video), 8, mode, 48)
    assert frames.shape == (8, 48, 48, 3) and frames.dtype == np.uint8
    assert idx.tolist() == sample_frame_indices(300, 8, mode)[0].tolist()
    assert codes(frames) == idx.tolist() and mask.all()
    frames, _, idx = read_clip_frames(record(coded_video, 100, 139), 8, mode, 48)
    assert idx.tolist() == (100 + sample_frame_indices(40, 8, mode)[0]).tolist()
    assert codes(frames) == idx.tolist()


def test_far_seek_is_exact(coded_video, monkeypatch):
    seeks = []
    real_seek = video._seek
    monkeypatch.setattr(video, "_seek", lambda cap, i: seeks.append(i) or real_seek(cap, i))
    frames, _, idx = read_clip_frames(record(coded_video, 250, 259), 4, "center", 48)
    assert seeks == [253] and idx.tolist() == [253, 254, 255, 256]
    assert codes(frames) == idx.tolist()

    # Seeking at every gap and never seeking give the same pixels.
    monkeypatch.setattr(video, "SEEK_AHEAD", 1)
    seeks.clear()
    seeking = read_clip_frames(record(coded_video), 16, "uniform", 48)
    assert len(seeks) == 16
    monkeypatch.setattr(video, "SEEK_AHEAD", 10**9)
    seeks.clear()
    walking = read_clip_frames(record(coded_video), 16, "uniform", 48)
    assert seeks == []
    np.testing.assert_array_equal(seeking[0], walking[0])
    assert codes(walking[0]) == walking[2].tolist()


def test_frame_end_past_the_end_is_clamped(coded_video):
    frames, mask, idx = read_clip_frames(record(coded_video, 280, 1000), 8, "center", 32)
    assert idx.tolist() == list(range(286, 294)) and mask.all()
    assert codes(frames) == idx.tolist()


def test_short_clip_repeats_last_frame(videos):
    frames, mask, idx = read_clip_frames(record(videos["short"]), 16, "uniform", 32)
    assert idx.tolist() == list(range(10)) + [9] * 6
    assert mask.tolist() == [True] * 10 + [False] * 6
    assert codes(frames) == idx.tolist()
    np.testing.assert_array_equal(frames[10:], np.repeat(frames[9:10], 6, axis=0))
    frames, mask, idx = read_clip_frames(record(videos["mp4v"], 50, 52), 5, "center", 32)
    assert idx.tolist() == [50, 51, 52, 52, 52] and mask.tolist() == [True] * 3 + [False] * 2
    assert codes(frames) == idx.tolist()


def test_random_mode_reads_reproducibly(videos):
    clip = record(videos["mp4v"], 40, 119)
    a = read_clip_frames(clip, 8, "random", 32, rng=np.random.default_rng(5))
    b = read_clip_frames(clip, 8, "random", 32, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    assert codes(a[0]) == a[2].tolist()
    assert all(40 + 10 * i <= j < 40 + 10 * (i + 1) for i, j in enumerate(a[2]))


def test_bbox_crop(videos):
    path = videos["mp4v"]

    def mean_rgb(bbox, crop=True):
        frames = read_clip_frames(record(path, 0, 9, bbox=bbox), 2, "center", 32, crop_bbox=crop)[0]
        return np.median(frames.reshape(-1, 3), axis=0)

    red, blue = mean_rgb((0, 48, 48, 96)), mean_rgb((48, 48, 500, 500))  # the second is clipped
    assert red[0] > 200 and red[1:].max() < 60, red
    assert blue[2] > 200 and blue[:2].max() < 60, blue
    assert mean_rgb((0, 48, 48, 96), crop=False).tolist() != red.tolist()
    with pytest.raises(VideoDecodeError, match="bbox"):
        mean_rgb((200, 200, 300, 300))


def test_implausible_frame_count_is_counted(h264_videos):
    raw = h264_videos["raw"]
    cap = cv2.VideoCapture(raw, cv2.CAP_FFMPEG)
    assert video._reported_count(cap) is None  # OpenCV reports garbage for a raw stream
    cap.release()
    frames, _, idx = read_clip_frames(record(raw, 250, None), 4, "uniform", 32)
    assert idx.tolist() == [256, 268, 281, 293] and codes(frames) == idx.tolist()
    assert check_clip(record(raw)) == 300


def test_truncated_file_is_an_error(h264_videos):
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_clip_frames(record(h264_videos["cut"]), 8, "uniform", 32)
    # Frames before the cut still decode when the range lies before it.
    frames, _, idx = read_clip_frames(record(h264_videos["cut"], 0, 9), 4, "uniform", 32)
    assert codes(frames) == idx.tolist()


@pytest.mark.parametrize(("claimed", "error"), [(302, None), (400, "only 300 of 400 frames")])
def test_frame_count_that_overstates_the_file(videos, monkeypatch, claimed, error):
    monkeypatch.setattr(video, "_reported_count", lambda cap: claimed)
    clip = record(videos["mp4v"], 295, None)  # claimed: 295..301, but 300 and 301 do not exist
    if error:
        with pytest.raises(VideoDecodeError, match=error):
            read_clip_frames(clip, 8, "center", 32)
        return
    frames, mask, idx = read_clip_frames(clip, 8, "center", 32)  # resampled over 300 frames
    assert idx.tolist() == [295, 296, 297, 298, 299, 299, 299, 299]
    assert mask.tolist() == [True] * 5 + [False] * 3
    assert codes(frames) == idx.tolist()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("zero", "empty file"),
        ("text", "cannot open"),
        ("truncated", "cannot open"),
        ("missing", "not found"),
    ],
)
def test_unreadable_files_raise(videos, kind, reason):
    with pytest.raises(VideoDecodeError, match=reason) as err:
        read_clip_frames(record(videos[kind]), 4, "uniform", 32)
    assert err.value.path == videos[kind] and videos[kind] in str(err.value)


def test_audio_only_file_raises(tmp_path):
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path / "audio.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )
    with pytest.raises(VideoDecodeError, match="cannot open"):
        read_clip_frames(record(path), 4, "uniform", 32)


def test_scan_clips_skips_names_and_counts(videos, h264_videos, caplog):
    good = [record(videos["mp4v"], 10, 20), record(videos["short"]), record(h264_videos["raw"])]
    bad = [record(videos[k]) for k in ("zero", "text", "truncated", "missing")]
    bad += [record(videos["mp4v"], 400, None), record(h264_videos["cut"])]
    records = [good[0], *bad[:3], good[1], *bad[3:], good[2]]
    with caplog.at_level(logging.WARNING, logger="keras_attn.data.video"):
        readable, skipped = scan_clips(records, workers=3)
    assert [dataclasses.replace(r, frame_count=None) for r in readable] == good
    assert [r.frame_count for r in readable] == [300, 10, 300]
    assert [s["path"] for s in skipped] == [r.path for r in bad]
    reasons = [s["reason"] for s in skipped]
    assert "past the last frame 299" in reasons[4] and "truncated" in reasons[5]
    assert len(caplog.records) == len(bad)
    assert all(r.path in m for r, m in zip(bad, caplog.messages, strict=True))


# ---- tf.data --------------------------------------------------------------------------------


@pytest.fixture
def five_clips(videos):
    return [record(videos["mp4v"], 30 * i, 30 * i + 29, label=i) for i in range(5)]


def take_all(ds):
    frames, masks, labels = [], [], []
    for (x, m), y in ds.as_numpy_iterator():
        frames.append(x), masks.append(m), labels.append(y)
    return frames, masks, labels


def test_clip_dataset_shapes_and_values(five_clips):
    ds = clip_dataset(five_clips, 4, "uniform", 32, seed=0, training=False)
    (x_spec, m_spec), y_spec = ds.element_spec
    assert (x_spec.shape, x_spec.dtype.name) == ((4, 32, 32, 3), "float32")
    assert (m_spec.shape, m_spec.dtype.name) == ((4,), "bool")
    assert (y_spec.shape, y_spec.dtype.name) == ((), "int32")
    frames, masks, labels = take_all(ds)
    assert labels == [0, 1, 2, 3, 4]
    expected = read_clip_frames(five_clips[3], 4, "uniform", 32)[0]
    np.testing.assert_array_equal(frames[3], expected.astype(np.float32))
    assert all(m.all() for m in masks)

    batched = clip_dataset(five_clips, 4, "uniform", 32, seed=0, training=False, batch_size=2)
    sizes = [(x.shape, m.shape, y.shape) for (x, m), y in batched.as_numpy_iterator()]
    assert sizes == [((2, 4, 32, 32, 3), (2, 4), (2,))] * 2 + [((1, 4, 32, 32, 3), (1, 4), (1,))]


def test_clip_dataset_training_order_is_seeded_and_resumable(five_clips):
    def run(seed, start_epoch=0, epochs=3):
        ds = clip_dataset(
            five_clips,
            4,
            "random",
            32,
            seed=seed,
            training=True,
            start_epoch=start_epoch,
            epochs=epochs,
        )
        return take_all(ds)

    frames, _, labels = run(7)
    assert len(labels) == 15
    epochs = [labels[5 * e : 5 * (e + 1)] for e in range(3)]
    assert all(sorted(e) == [0, 1, 2, 3, 4] for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled per epoch
    assert epochs == [epoch_order(5, 7, e).numpy().tolist() for e in range(3)]
    for x, y in zip(frames, labels, strict=True):  # random frames stay inside each clip's range
        assert all(30 * y <= c < 30 * y + 30 for c in codes(x.astype(np.uint8)))
    again = run(7)
    assert again[2] == labels
    np.testing.assert_array_equal(np.stack(again[0]), np.stack(frames))
    assert run(8)[2] != labels

    resumed = run(7, start_epoch=2)
    assert resumed[2] == labels[10:]
    np.testing.assert_array_equal(np.stack(resumed[0]), np.stack(frames[10:]))
    # The same clip gets different random frames in different epochs.
    first = {y: codes(x.astype(np.uint8)) for x, y in zip(frames[:5], labels[:5], strict=True)}
    second = {y: codes(x.astype(np.uint8)) for x, y in zip(frames[5:10], labels[5:10], strict=True)}
    assert first != second


def test_clip_dataset_batches_each_epoch_on_its_own(five_clips):
    ds = clip_dataset(five_clips, 2, "uniform", 16, seed=1, training=True, batch_size=2, epochs=2)
    assert [len(y) for _, y in ds.as_numpy_iterator()] == [2, 2, 1, 2, 2, 1]


def test_clip_dataset_rejects_random_for_evaluation(five_clips):
    with pytest.raises(ValueError, match="random"):
        clip_dataset(five_clips, 4, "random", 32, seed=0, training=False)


# ---- prepared inputs: validation and test -------------------------------------------------


@pytest.fixture(scope="module")
def sign_set(tmp_path_factory):
    """Tiny synthetic sign clips: 2 classes, one signer each for train, val and test."""
    return tiny_sign_clips(tmp_path_factory.mktemp("signs"))


def prepare(index, cache_dir, feature_cache):
    from keras_attn.experiments.video import prepare_video_inputs

    return prepare_video_inputs(
        index,
        num_frames=4,
        image_size=32,
        backbone="efficientnet_lite0",
        weights="none",
        feature_cache=feature_cache,
        cache_dir=str(cache_dir),
        batch_size=3,
    )


def all_batches(ds):
    frames, masks, labels = take_all(ds)
    return np.concatenate(frames), np.concatenate(masks), np.concatenate(labels)


@pytest.mark.parametrize("feature_cache", [True, False])
def test_the_test_split_is_prepared_exactly_like_val(sign_set, tmp_path, feature_cache):
    index = load_wlasl(sign_set, limit_classes=None)
    assert index.val_split == "val"  # the default validates on val, not on test
    assert {c.signer_id for c in index.val} == {1} and {c.signer_id for c in index.test} == {2}
    inputs = prepare(index, tmp_path / "cache", feature_cache)
    x, mask, labels = all_batches(inputs.test)
    assert labels.tolist() == [c.label for c in index.test]  # every test clip, in index order
    assert inputs.summary["test_video_ids"] == [c.video_id for c in index.test]
    assert inputs.summary["readable_clips"] == {
        "train": len(index.train),
        "val": len(index.val),
        "test": len(index.test),
    }
    assert all_batches(inputs.val)[2].tolist() == [c.label for c in index.val]
    again = all_batches(inputs.test)
    np.testing.assert_array_equal(again[0], x)  # deterministic: the same frames every pass
    np.testing.assert_array_equal(again[1], mask)

    # The val pipeline on the test clips gives the test batches exactly.
    as_val = prepare(dataclasses.replace(index, val=index.test), tmp_path / "cache", feature_cache)
    val_x, val_mask, val_labels = all_batches(as_val.val)
    np.testing.assert_array_equal(val_x, x)
    np.testing.assert_array_equal(val_mask, mask)
    np.testing.assert_array_equal(val_labels, labels)
    if feature_cache:
        clips = len(index.train) + len(index.val) + len(index.test)
        assert inputs.summary["feature_cache"] == {"hits": 0, "misses": clips}
        # Test clips were cached like any other: the second preparation decodes nothing.
        again_clips = len(index.train) + 2 * len(index.test)
        assert as_val.summary["feature_cache"] == {"hits": again_clips, "misses": 0}
        assert x.shape == (len(index.test), 4, *inputs.feature_shape)
    else:
        assert inputs.summary["feature_cache"] == "off"
        assert x.shape == (len(index.test), 4, 32, 32, 3)


def test_without_a_test_split_there_is_no_test_dataset(sign_set, tmp_path):
    on_test = load_wlasl(sign_set, val_split="test", limit_classes=None)
    inputs = prepare(on_test, tmp_path / "cache", True)
    assert inputs.test is None
    assert inputs.summary["readable_clips"]["test"] == 0 and inputs.summary["test_video_ids"] == []
    assert all_batches(inputs.val)[2].tolist() == [c.label for c in on_test.val]
    assert {c.split for c in on_test.val} == {"test"}
    no_test = dataclasses.replace(load_wlasl(sign_set, limit_classes=None), test=[])
    assert prepare(no_test, tmp_path / "cache", False).test is None
