"""Bad and unusual videos and index files (issue 7): each clip decodes to the right frames or is
skipped, named and counted; each index entry keeps its own label or is rejected with a reason.

Every file is generated here (no committed binaries). A test frame shows its index as two grey
levels (top half: index % 16, bottom half: index // 16, 16 levels apart), so a test reads back
which frame was decoded. Cases that tests/test_video.py and tests/test_wlasl.py already cover
(zero bytes, text named .mp4, truncated MP4, a short mp4v clip, frame_end past the end, malformed
v0.3 JSON, missing keys, nslt unknown splits and duplicates) are not repeated here.
"""

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from keras_attn.data import video
from keras_attn.data.synthetic_video import write_mp4
from keras_attn.data.video import VideoDecodeError, check_clip, read_clip_frames, scan_clips
from keras_attn.data.wlasl import ClipRecord, load_wlasl
from keras_attn.errors import UserError

FFMPEG = shutil.which("ffmpeg")
SUBPROCESS_TIMEOUT_S = 60  # one ffmpeg encode of a few hundred tiny frames takes well under 1 s
HANG_LIMIT_S = 60  # scanning and reading the whole corpus takes about a second
RED, BLUE = (200, 60, 20), (20, 60, 200)
VFR_FRAMES = 200
# Frames 0-99 at 50 fps, then 10 fps: the average rate (about 17 fps) matches neither half.
VFR_PTS = "if(lt(N,100),N/50,2+(N-100)/10)/TB"
# H.264 4:2:0 needs even sides; 4:4:4 and MPEG-4 Part 2 take odd ones.
ODD_SIZE_CODECS = {
    "h264": ("-c:v", "libx264", "-pix_fmt", "yuv444p"),
    "mpeg4": ("-c:v", "mpeg4", "-q:v", "2"),
}


def indexed_frame(i: int, height: int = 64, width: int = 64) -> np.ndarray:
    """RGB frame showing `i` (0..255) as two grey levels."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[: height // 2] = (i % 16) * 16 + 8
    frame[height // 2 :] = (i // 16) * 16 + 8
    return frame


def frame_index(frame: np.ndarray) -> int:
    """The index shown by a (decoded, resized) `indexed_frame`."""
    grey = frame.astype(np.float32).mean(axis=-1)
    half = grey.shape[0] // 2
    low, high = grey[1 : half - 1].mean(), grey[half + 1 : -1].mean()
    return round((low - 8) / 16) + 16 * round((high - 8) / 16)


def indices_of(frames: np.ndarray) -> list[int]:
    return [frame_index(f) for f in frames]


def ffmpeg(*args: str, frames: np.ndarray | None = None, rate: str = "25") -> None:
    """Runs the ffmpeg CLI, fed RGB `frames` (N, H, W, 3) on stdin when given."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    command = [FFMPEG, "-loglevel", "error", "-y"]
    if frames is not None:
        height, width = frames.shape[1:3]
        command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
        command += ["-r", rate, "-i", "-"]
    data = None if frames is None else frames.tobytes()
    subprocess.run([*command, *args], input=data, check=True, timeout=SUBPROCESS_TIMEOUT_S)


def h264(path, frames: np.ndarray, *extra: str) -> str:
    # -g 30: several keyframes, so a far seek has more than one place to land.
    ffmpeg("-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30", *extra, str(path), frames=frames)
    return str(path)


def halves(height: int, width: int, count: int = 3) -> np.ndarray:
    """`count` RGB frames, red above blue, so a transposed or BGR read shows."""
    frames = np.empty((count, height, width, 3), np.uint8)
    frames[:, : height // 2], frames[:, height // 2 :] = RED, BLUE
    return frames


def record(path, start=0, end=None, label=0, bbox=None) -> ClipRecord:
    return ClipRecord(
        video_id=Path(path).stem,
        path=str(path),
        label=label,
        split="train",
        frame_start=start,
        frame_end=end,
        bbox=bbox,
        signer_id=None,
    )


def finishes(fn, seconds: float = HANG_LIMIT_S):
    """`fn()`, run in a daemon thread so that a decoder that hangs fails the test, not the run."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # re-raised below, in the test's thread
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    d = tmp_path_factory.mktemp("bad_videos")
    numbered = np.stack([indexed_frame(i) for i in range(VFR_FRAMES)])
    paths = {
        "one_h264": h264(d / "one_h264.mp4", indexed_frame(7)[None]),
        "short_h264": h264(d / "short_h264.mp4", numbered[:5]),
        "cfr": h264(d / "cfr.mp4", numbered),
        "vfr": h264(
            d / "vfr.mp4",
            numbered,
            "-vf",
            f"setpts='{VFR_PTS}'",
            "-fps_mode",
            "vfr",
            # A millisecond time base: at the default 1/25 s the 50 fps frames would be dropped.
            "-enc_time_base",
            "1:1000",
        ),
        "audio": str(d / "audio.mp4"),
        "header_only": str(d / "header_only.mp4"),
        "no_frames": str(d / "no_frames.mp4"),
    }
    write_mp4(d / "one_mp4v.mp4", indexed_frame(7)[None])
    paths["one_mp4v"] = str(d / "one_mp4v.mp4")
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", paths["audio"])
    for height, width in ((81, 45), (45, 81)):
        for codec, args in ODD_SIZE_CODECS.items():
            name = f"{width}x{height}_{codec}"
            paths[name] = str(d / f"{name}.mp4")
            ffmpeg(*args, paths[name], frames=halves(height, width))
    # With the index (moov box) first, cut inside it, or right after it (no frame data left).
    data = Path(h264(d / "fast.mp4", numbered[:30], "-movflags", "+faststart")).read_bytes()
    moov = data.index(b"moov") - 4  # a box starts with its 4-byte size, then its type
    moov_end = moov + int.from_bytes(data[moov : moov + 4], "big")
    Path(paths["header_only"]).write_bytes(data[: (moov + moov_end) // 2])
    Path(paths["no_frames"]).write_bytes(data[: moov_end + 8])
    paths["overstated"] = overstated_clip(d / "overstated.mp4", numbered)
    return paths


def overstated_clip(path: Path, frames: np.ndarray) -> str:
    """An H.264 file whose header (moov box first) claims `len(frames)` frames, cut short."""
    data = Path(h264(path, frames, "-movflags", "+faststart")).read_bytes()
    moov = data.index(b"moov") - 4
    moov_end = moov + int.from_bytes(data[moov : moov + 4], "big")
    path.write_bytes(data[: moov_end + (len(data) - moov_end) * 3 // 10])
    return str(path)


# ---- one frame, short clips ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["one_h264", "one_mp4v"])
@pytest.mark.parametrize("mode", ["center", "uniform", "random"])
def test_one_frame_clip_is_repeated_with_mask(corpus, name, mode):
    path = corpus[name]
    assert check_clip(record(path)) == 1
    rng = np.random.default_rng(0)
    frames, mask, idx = read_clip_frames(record(path), 6, mode, 24, rng=rng)
    assert frames.shape == (6, 24, 24, 3) and frames.dtype == np.uint8
    assert idx.tolist() == [0] * 6
    assert mask.tolist() == [True] + [False] * 5
    assert indices_of(frames) == [7] * 6  # the file's one frame, painted with index 7
    np.testing.assert_array_equal(frames, np.repeat(frames[:1], 6, axis=0))


def test_short_h264_clip_is_padded_with_mask(corpus):
    # The mp4v short clip is in test_video.py; H.264 reorders frames (B-frames) and still must
    # give every frame once, in order.
    frames, mask, idx = read_clip_frames(record(corpus["short_h264"]), 8, "uniform", 32)
    assert idx.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert mask.tolist() == [True] * 5 + [False] * 3
    assert indices_of(frames) == idx.tolist()
    # frame_end past the end is clamped (resolve_frame_range): frames 2..4, then padding.
    frames, mask, idx = read_clip_frames(record(corpus["short_h264"], 2, 500), 5, "center", 32)
    assert idx.tolist() == [2, 3, 4, 4, 4] and mask.tolist() == [True] * 3 + [False] * 2
    assert indices_of(frames) == idx.tolist()


# ---- portrait and odd sizes ------------------------------------------------------------------


@pytest.mark.parametrize("size", ["45x81", "81x45"])
@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_odd_and_portrait_sizes_are_resized_with_their_colours(corpus, size, codec):
    path = corpus[f"{size}_{codec}"]
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    assert f"{width}x{height}" == size  # the file really has the odd size
    frames, mask, _ = read_clip_frames(record(path), 2, "uniform", 32)
    assert frames.shape == (2, 32, 32, 3) and mask.all()
    top, bottom = frames[:, 2:14].reshape(-1, 3), frames[:, 18:30].reshape(-1, 3)
    np.testing.assert_allclose(np.median(top, axis=0), RED, atol=12)  # RGB, not BGR
    np.testing.assert_allclose(np.median(bottom, axis=0), BLUE, atol=12)
    # A box on the bottom half, given in the file's own pixels.
    box = (0, height // 2 + 2, width, height)
    cropped = read_clip_frames(record(path, bbox=box), 2, "uniform", 32, crop_bbox=True)[0]
    np.testing.assert_allclose(np.median(cropped.reshape(-1, 3), axis=0), BLUE, atol=12)


# ---- variable frame rate ---------------------------------------------------------------------


def test_vfr_file_is_variable_and_every_frame_decodes_in_order(corpus):
    cap = cv2.VideoCapture(corpus["vfr"], cv2.CAP_FFMPEG)
    reported = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    decoded, times = [], []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame_index(frame))
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC))
    cap.release()
    steps = np.diff(np.sort(times))
    assert steps.min() < 0.5 * steps.max()  # the test file is really variable frame rate
    assert decoded == list(range(VFR_FRAMES)) and reported == VFR_FRAMES
    assert check_clip(record(corpus["vfr"])) == VFR_FRAMES


@pytest.mark.parametrize(
    ("start", "end", "mode"),
    [
        (0, None, "center"),  # frames 96..103: a far jump from frame 0
        (0, None, "uniform"),
        (0, None, "random"),
        (120, 180, "uniform"),  # a range in the slow part
        (70, 99, "center"),  # a range in the fast part
        (90, 500, "uniform"),  # across both, frame_end clamped
    ],
)
def test_vfr_clip_gives_the_chosen_frames(corpus, start, end, mode):
    rng = np.random.default_rng(1)
    frames, mask, idx = read_clip_frames(record(corpus["vfr"], start, end), 8, mode, 32, rng=rng)
    last = VFR_FRAMES - 1 if end is None else min(end, VFR_FRAMES - 1)
    offsets = video.sample_frame_indices(last - start + 1, 8, mode, np.random.default_rng(1))[0]
    assert idx.tolist() == (start + offsets).tolist() and mask.all()
    assert indices_of(frames) == idx.tolist()
    assert np.all(np.diff(indices_of(frames)) >= 0)


def test_seeking_is_kept_for_constant_and_dropped_for_variable_frame_rate(corpus, monkeypatch):
    # OpenCV seeks by time at the average rate: in the VFR file "frame 98" lands on frame 144
    # and still reports position 98, so the reader must walk instead.
    seeks = []
    real_seek = video._seek
    monkeypatch.setattr(video, "_seek", lambda cap, i: seeks.append(i) or real_seek(cap, i))
    frames, _, idx = read_clip_frames(record(corpus["cfr"]), 4, "center", 32)
    assert seeks == [98] and indices_of(frames) == idx.tolist() == [98, 99, 100, 101]
    seeks.clear()
    frames, _, idx = read_clip_frames(record(corpus["vfr"]), 4, "center", 32)
    assert seeks == [] and indices_of(frames) == idx.tolist() == [98, 99, 100, 101]


# ---- the whole corpus through scan_clips -----------------------------------------------------


def test_frame_start_after_frame_end_is_an_error(corpus):
    clip = record(corpus["cfr"], 20, 10)
    for check in (
        lambda: read_clip_frames(clip, 4, "uniform", 32),
        lambda: check_clip(clip),
    ):
        with pytest.raises(VideoDecodeError, match=r"empty frame range 20\.\.10") as err:
            check()
        assert err.value.path == corpus["cfr"]


def test_scan_clips_keeps_the_odd_clips_and_skips_the_bad_ones(corpus, caplog):
    good = [
        record(corpus["one_h264"], label=0),
        record(corpus["short_h264"], label=1),
        record(corpus["vfr"], label=2),
        record(corpus["45x81_h264"], label=3),
        record(corpus["cfr"], 150, 900, label=4),  # frame_end past the end: clamped, kept
    ]
    bad = [
        (record(corpus["audio"], label=5), "cannot open"),
        (record(corpus["header_only"], label=6), "cannot open"),
        (record(corpus["no_frames"], label=7), "no decodable frames"),
        (record(corpus["vfr"], 20, 10, label=8), "empty frame range 20..10"),
    ]
    records = [good[0], bad[0][0], good[1], good[2], bad[1][0], good[3], bad[2][0]]
    records += [bad[3][0], good[4]]
    with caplog.at_level(logging.WARNING, logger="keras_attn.data.video"):
        readable, skipped = finishes(lambda: scan_clips(records, workers=2))
    # In order, each with its own label and the frame count the scan verified.
    assert [dataclasses.replace(r, frame_count=None) for r in readable] == good
    assert [r.frame_count for r in readable] == [1, 5, VFR_FRAMES, 3, VFR_FRAMES]
    assert [s["path"] for s in skipped] == [r.path for r, _ in bad]
    for (_, reason), s in zip(bad, skipped, strict=True):
        assert reason in s["reason"], s
    assert len(caplog.messages) == len(bad)
    assert all(r.path in m for (r, _), m in zip(bad, caplog.messages, strict=True))

    def read_all():
        return [read_clip_frames(r, 8, "uniform", 32) for r in readable]

    real_frames = []  # per clip, the frames that are not padding
    for clip, (frames, mask, idx) in zip(readable, finishes(read_all), strict=True):
        assert frames.shape == (8, 32, 32, 3)
        if clip.path != corpus["45x81_h264"]:  # that one shows colours, not an index
            assert indices_of(frames) == ([7] * 8 if clip.label == 0 else idx.tolist())
        real_frames.append(int(mask.sum()))
    assert real_frames == [1, 5, 8, 3, 8]


@pytest.mark.parametrize("end", [None, 150, 20])
def test_a_header_that_overstates_its_frames_is_a_skip_whatever_the_annotation(corpus, end):
    claimed = cv2.VideoCapture(corpus["overstated"]).get(cv2.CAP_PROP_FRAME_COUNT)
    assert claimed == VFR_FRAMES  # the header still claims every frame
    # end 150: the annotation is past the real end; end 20: the range itself decodes, but
    # the file is truncated, so it is not trusted either.
    readable, skipped = finishes(lambda: scan_clips([record(corpus["overstated"], 0, end)]))
    assert readable == []
    assert [s["path"] for s in skipped] == [corpus["overstated"]]
    assert re.search(rf"only \d+ of {VFR_FRAMES} frames decode", skipped[0]["reason"])


def _nslt_folder(root: Path, overstated_src: str, overstated_split: str = "train") -> Path:
    """A 2-class WLASL folder (nslt index): 8 good H.264 clips (4 train, 2 val, 2 test, both
    classes in each split) and one overstated clip of class 0 in `overstated_split`."""
    (root / "videos").mkdir(parents=True)
    index = {}
    for i in range(8):
        label, split = i % 2, ("train" if i < 4 else "val" if i < 6 else "test")
        frames = np.stack([indexed_frame(40 * label + k) for k in range(12)])
        h264(root / "videos" / f"{i:05d}.mp4", frames)
        index[f"{i:05d}"] = {"subset": split, "action": [label, 1, -1]}
    shutil.copy(overstated_src, root / "videos" / "00099.mp4")
    index["00099"] = {"subset": overstated_split, "action": [0, 1, 150]}  # past its real end too
    (root / "nslt_100.json").write_text(json.dumps(index))
    (root / "wlasl_class_list.txt").write_text("0\tbook\n1\tdrink\n")
    return root


@pytest.mark.parametrize("weights", ["none", "imagenet"])
@pytest.mark.parametrize("feature_cache", [True, False])
def test_an_overstated_clip_is_a_counted_skip_on_every_path(
    corpus, tmp_path, weights, feature_cache
):
    from keras_attn.experiments.video import prepare_video_inputs

    root = _nslt_folder(tmp_path / "WLASL", corpus["overstated"])
    index = load_wlasl(root, limit_classes=None)
    assert len(index.train) == 5  # the overstated clip is listed: the scan must catch it
    inputs = finishes(
        lambda: prepare_video_inputs(
            index,
            num_frames=4,
            image_size=32,
            backbone="efficientnet_lite0",
            weights=weights,
            feature_cache=feature_cache,
            cache_dir=str(tmp_path / "cache"),
            batch_size=2,
        )
    )
    skipped = inputs.summary["skipped_files"]
    assert [Path(s["path"]).name for s in skipped] == ["00099.mp4"]  # once, not per reader
    assert f"of {VFR_FRAMES} frames decode" in skipped[0]["reason"]
    used = inputs.summary["backbone_weights_used"]
    assert used == "random" if weights == "none" else used.startswith("imagenet-")
    assert inputs.steps_per_epoch == 2  # the 4 good training clips, batch 2
    batches = list(inputs.train(0, 1))  # one epoch: decodes every kept clip on this path
    assert len(batches) == 2 and sum(len(y) for _, y in batches) == 4
    assert inputs.summary["readable_clips"] == {"train": 4, "val": 2, "test": 2}


@pytest.mark.parametrize("feature_cache", [True, False])
def test_an_unreadable_test_clip_is_a_counted_skip_and_the_rest_are_scored(
    corpus, tmp_path, feature_cache
):
    """The test split is scanned like the others: a bad clip is named and counted once, and
    the test batches hold exactly the readable test clips, in index order."""
    from keras_attn.experiments.video import prepare_video_inputs

    root = _nslt_folder(tmp_path / "WLASL", corpus["overstated"], overstated_split="test")
    index = load_wlasl(root, limit_classes=None)
    assert [c.video_id for c in index.test] == ["00006", "00007", "00099"]
    inputs = finishes(
        lambda: prepare_video_inputs(
            index,
            num_frames=4,
            image_size=32,
            backbone="efficientnet_lite0",
            weights="none",
            feature_cache=feature_cache,
            cache_dir=str(tmp_path / "cache"),
            batch_size=2,
        )
    )
    skipped = inputs.summary["skipped_files"]
    assert [Path(s["path"]).name for s in skipped] == ["00099.mp4"]
    assert f"of {VFR_FRAMES} frames decode" in skipped[0]["reason"]
    assert inputs.summary["index"]["clips"] == {"train": 4, "val": 2, "test": 3}  # as listed
    assert inputs.summary["readable_clips"] == {"train": 4, "val": 2, "test": 2}
    assert inputs.summary["test_video_ids"] == ["00006", "00007"]
    labels = [int(label) for _, y in finishes(lambda: list(inputs.test)) for label in y]
    assert labels == [0, 1]
    if feature_cache:  # 4 + 2 + 2 readable clips encoded, the skipped one never
        assert inputs.summary["feature_cache"] == {"hits": 0, "misses": 8}


def test_a_clip_that_changes_after_the_scan_is_one_line_not_a_traceback(corpus, capsys):
    from keras_attn.cli import main_guard
    from keras_attn.data.video import clip_dataset

    # As if the file had been cut after the scan verified all its frames.
    changed = dataclasses.replace(record(corpus["overstated"]), frame_count=VFR_FRAMES)
    dataset = clip_dataset([changed], 4, "uniform", 32, seed=0, training=True, batch_size=1)
    with pytest.raises(SystemExit) as exit_info:
        main_guard(lambda: list(dataset), prog="train_video.py")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_video.py: error: ") and "\n" not in err
    assert "overstated.mp4: ends before frame" in err and "changed since the scan" in err


# ---- index files -----------------------------------------------------------------------------

GLOSS_OF_ID = {0: "apple", 1: "book", 2: "cat", 4: "dog"}  # id 3 is not in the class list


def write_class_list(root: Path) -> None:
    lines = [f"{i}\t{g}" for i, g in GLOSS_OF_ID.items()]
    (root / "wlasl_class_list.txt").write_text("\n".join(lines) + "\n")


def add_videos(root: Path, video_ids) -> None:
    # load_wlasl only checks that the file exists; it never decodes it.
    (root / "videos").mkdir(exist_ok=True)
    for vid in video_ids:
        (root / "videos" / f"{vid}.mp4").write_bytes(b"placeholder")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("nslt_100.json", b'{"00001": {"subset": "train",', "invalid JSON at line 1"),
        ("nslt_100.json", b"", "invalid JSON"),
        ("WLASL_v0.3.json", b"", "invalid JSON"),
        ("WLASL_v0.3.json", b'\xff\xfe[{"gloss": "a"}]', "cannot read"),
        ("WLASL_v0.3.json", b'[{"gloss": "a", "instances": []}] trailing', "invalid JSON"),
    ],
)
def test_unreadable_index_is_one_line_naming_the_file(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    write_class_list(tmp_path)
    with pytest.raises(UserError) as info:
        load_wlasl(tmp_path)
    message = str(info.value)
    assert "\n" not in message and name in message and expected in message, message


def test_v03_unknown_splits_are_counted_and_missing_ranges_mean_the_whole_clip(tmp_path):
    instances = {
        "apple": [("a1", "train"), ("a2", "dev"), ("a3", "test")],
        "book": [("b1", "Train"), ("b2", "train"), ("b3", "")],
    }
    index = [
        {"gloss": g, "instances": [{"video_id": v, "split": s} for v, s in items]}
        for g, items in instances.items()
    ]
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(index))
    add_videos(tmp_path, ["a1", "a2", "a3", "b1", "b2", "b3"])
    loaded = load_wlasl(tmp_path, limit_classes=None)
    assert loaded.unknown_splits == {"dev": 1, "Train": 1, "": 1}
    assert "ignored splits" in loaded.summary_line() and not loaded.rejected
    clips = loaded.train + loaded.val + loaded.test
    got = [(c.video_id, loaded.class_names[c.label]) for c in clips]
    assert got == [("a1", "apple"), ("b2", "book"), ("a3", "apple")]
    assert [c.video_id for c in loaded.test] == ["a3"] and loaded.val == []
    assert all((c.frame_start, c.frame_end) == (0, None) for c in clips)


def test_nslt_class_ids_out_of_range_are_rejected_and_other_labels_stay(tmp_path):
    # Out-of-range ids between good entries of every class: a reject must not shift a label.
    entries = [
        ("v00", 0, "train"), ("v01", 3, "train"), ("v02", 1, "train"), ("v03", 99, "train"),
        ("v04", 4, "train"), ("v05", -1, "train"), ("v06", 2, "train"), ("v07", 5, "test"),
        ("v08", 4, "test"), ("v09", 1, "test"), ("v10", 2000, "train"), ("v11", 0, "train"),
    ]  # fmt: skip
    index = {vid: {"subset": split, "action": [cid, 1, -1]} for vid, cid, split in entries}
    (tmp_path / "nslt_100.json").write_text(json.dumps(index))
    write_class_list(tmp_path)
    add_videos(tmp_path, [vid for vid, *_ in entries])
    loaded = load_wlasl(tmp_path, limit_classes=None)
    assert loaded.class_names == ["apple", "book", "cat", "dog"]
    kept = {vid: GLOSS_OF_ID[cid] for vid, cid, _ in entries if cid in GLOSS_OF_ID}
    clips = loaded.train + loaded.val + loaded.test
    assert sorted(c.video_id for c in clips) == sorted(kept)
    for clip in clips:
        assert loaded.class_names[clip.label] == kept[clip.video_id], clip
    assert loaded.rejected == [
        {"video_id": vid, "reason": f"class id {cid} is not in wlasl_class_list.txt"}
        for vid, cid, _ in entries
        if cid not in GLOSS_OF_ID
    ]
    assert "rejected entries: 5" in loaded.summary_line()


def test_duplicate_id_the_first_entry_decides_even_when_rejected(tmp_path):
    # A video listed twice: the first entry decides. When the first is rejected, a later one
    # does not stand in for it (the index contradicts itself about that video's label).
    text = """{
      "v1": {"subset": "train", "action": [0, 1, -1]},
      "v2": {"subset": "train", "action": [3, 1, -1]},
      "v3": {"subset": "train", "action": [1, 9, 2]},
      "v1": {"subset": "train", "action": [1, 1, -1]},
      "v2": {"subset": "train", "action": [1, 1, -1]},
      "v3": {"subset": "train", "action": [1, 1, -1]},
      "v4": {"subset": "train", "action": [1, 1, -1]}
    }"""
    (tmp_path / "nslt_100.json").write_text(text)
    write_class_list(tmp_path)
    add_videos(tmp_path, ["v1", "v2", "v3", "v4"])
    loaded = load_wlasl(tmp_path, limit_classes=None)
    assert [(c.video_id, loaded.class_names[c.label]) for c in loaded.train] == [
        ("v1", "apple"),
        ("v4", "book"),
    ]
    reasons = [(r["video_id"], r["reason"]) for r in loaded.rejected]
    assert reasons[:2] == [
        ("v2", "class id 3 is not in wlasl_class_list.txt"),
        ("v3", "frame_start 9 after frame_end 2"),
    ]
    assert reasons[2] == ("v1", "duplicate video_id (the first entry is kept)")
    # The reason must not claim that a rejected first entry was kept.
    assert [vid for vid, _ in reasons[3:]] == ["v2", "v3"]
    assert all("duplicate video_id" in r and "is kept" not in r for _, r in reasons[3:])
