"""The synthetic sign videos: real MP4 files in the WLASL layout, deterministic from the seed."""

import json

import cv2
import numpy as np
import pytest

from keras_attn.data import synthetic_video as sv
from keras_attn.data.wlasl import load_wlasl
from keras_attn.errors import UserError

SMALL = {
    "num_classes": 4,
    "clips_per_class": 6,
    "num_signers": 3,
    "val_signers": 1,
    "test_signers": 1,
}
SPLIT_OF_SIGNER = {0: "train", 1: "val", 2: "test"}  # SMALL: one signer per split
SPLITS = ("train", "val", "test")
DEFAULTS = {"num_signers": 10, "val_signers": 2, "test_signers": 2}


def frames_of(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return sv.ensure_synthetic_videos(tmp_path_factory.mktemp("syn"), image_size=64, **SMALL)


def instances(data_dir):
    index = json.loads((data_dir / "WLASL_v0.3.json").read_text())
    return index, [(g["gloss"], i) for g in index for i in g["instances"]]


def test_layout_and_index(small_set):
    assert small_set.name == "signs-k4-n6-s64-seed0-p3v1t1"
    assert (small_set / "COMPLETE").is_file()
    index, entries = instances(small_set)
    assert [g["gloss"] for g in index] == ["fist-flat", "flat-fist", "v-point", "point-v"]
    assert len(entries) == 24
    for gloss, inst in entries:
        assert inst["hand_shapes"] == gloss.split("-")
        assert inst["split"] in ("train", "val", "test")
        assert inst["split"] == SPLIT_OF_SIGNER[inst["signer_id"]]
        assert 1 <= inst["frame_start"] <= inst["frame_end"] <= inst["num_frames"]
        assert 24 <= inst["num_frames"] <= 48
        x1, y1, x2, y2 = inst["bbox"]
        assert 0 <= x1 < x2 < 64 and 0 <= y1 < y2 < 64
    missing = [
        i for _, i in entries if not (small_set / "videos" / f"{i['video_id']}.mp4").exists()
    ]
    assert len(missing) == 1  # as in WLASL, an index entry without its video
    # Each class has the clips of signer j % 3 for j < 6: 2 clips per class in each split.
    sizes = {split: sum(i["split"] == split for _, i in entries) for split in SPLITS}
    assert sizes == {"train": 8, "val": 8, "test": 8}


def test_videos_have_the_recorded_frames(small_set):
    _, entries = instances(small_set)
    for _, inst in entries[:6]:
        path = small_set / "videos" / f"{inst['video_id']}.mp4"
        if not path.exists():
            continue
        frames = frames_of(path)
        assert frames.shape == (inst["num_frames"], 64, 64, 3)
        capture = cv2.VideoCapture(str(path))
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(inst["fps"])
        capture.release()
        # the sign (the hand up in the signing space) differs from the idle frames
        rest, sign = frames[0].astype(float), frames[inst["frame_start"]].astype(float)
        assert np.abs(rest - sign).mean() > 2


def test_load_wlasl_reads_it(small_set):
    index = load_wlasl(small_set, val_split="test", limit_classes=None)
    assert index.class_names == ["fist-flat", "flat-fist", "point-v", "v-point"]
    assert len(index.train) + len(index.val) + sum(index.missing.values()) <= 24
    assert sum(index.missing.values()) == 1
    assert {c.signer_id for c in index.val} == {2}  # the test split's signer, unseen in train
    assert {c.signer_id for c in index.train} == {0}
    selection = load_wlasl(small_set, val_split="val", limit_classes=None)
    assert {c.signer_id for c in selection.val} == {1}  # val: its own signer, unseen in train
    assert len(selection.val) + selection.missing.get("val", 0) == 8
    for clip in index.train:
        assert clip.frame_end is not None and clip.frame_start < clip.frame_end


def test_deterministic_and_regenerated_when_incomplete(small_set, tmp_path):
    again = sv.ensure_synthetic_videos(tmp_path / "a", image_size=64, **SMALL)
    assert (again / "WLASL_v0.3.json").read_text() == (small_set / "WLASL_v0.3.json").read_text()
    _, entries = instances(again)
    vid = next(
        i["video_id"] for _, i in entries if (again / "videos" / f"{i['video_id']}.mp4").exists()
    )
    first = frames_of(again / "videos" / f"{vid}.mp4")
    assert np.array_equal(first, frames_of(small_set / "videos" / f"{vid}.mp4"))

    (again / "COMPLETE").unlink()  # a half-written folder is rebuilt
    (again / "videos" / f"{vid}.mp4").write_bytes(b"truncated")
    assert sv.ensure_synthetic_videos(tmp_path / "a", image_size=64, **SMALL) == again
    assert (again / "COMPLETE").is_file()
    assert np.array_equal(frames_of(again / "videos" / f"{vid}.mp4"), first)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]

    other = sv.ensure_synthetic_videos(tmp_path / "b", image_size=64, seed=1, **SMALL)
    assert other.name.endswith("seed1-p3v1t1")
    assert (other / "WLASL_v0.3.json").read_text() != (again / "WLASL_v0.3.json").read_text()


def test_mirrored_classes_show_the_same_frames_in_reverse():
    assert sv.class_shapes(0) == sv.class_shapes(1)[::-1]
    assert sv.class_shapes(2) == sv.class_shapes(3)[::-1]
    assert set(sv.class_shapes(0)).isdisjoint(sv.class_shapes(2))
    signer = sv.make_signer(np.random.default_rng(5), 96)
    timing = sv.Timing(lead=6, sign=20, tail=7)
    a = sv.render_clip(sv.class_shapes(0), signer, timing, 96, np.random.default_rng(1))
    b = sv.render_clip(sv.class_shapes(1), signer, timing, 96, np.random.default_rng(1))
    sign = slice(timing.lead, timing.lead + timing.sign)
    a, b = blur(a[sign]), blur(b[sign])  # blurred against the per-frame sensor noise
    # averaging over the sign cannot tell the pair apart ...
    assert np.abs(a.mean(0) - b.mean(0)).mean() < 1.0
    # ... the order can: frame i of one is frame -1-i of the other, not frame i
    reversed_diff = np.abs(a - b[::-1]).mean(axis=(1, 2, 3))
    same_time_diff = np.abs(a - b).mean(axis=(1, 2, 3))
    assert reversed_diff.max() < 2.5
    ends = np.r_[same_time_diff[:5], same_time_diff[-5:]]
    assert ends.min() > 2 * reversed_diff.max()


def blur(frames):
    return np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in frames]).astype(float)


def test_hand_shapes_differ_and_are_large_enough():
    size = 96
    masks = {}
    for shape in (*sv.SHAPES, sv.NEUTRAL):
        mask = np.zeros((size, size), np.uint8)
        sv._draw_shape(mask, shape, 48, 48, sv.HAND_FRACTION * size)
        masks[shape] = mask > 0
    for shape in sv.SHAPES:
        rows = np.flatnonzero(masks[shape].any(axis=1))
        assert 0.2 * size <= rows[-1] - rows[0] + 1 <= 0.35 * size, shape
    names = list(masks)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            overlap = (masks[x] & masks[y]).sum() / (masks[x] | masks[y]).sum()
            assert overlap < 0.8, (x, y)


def splits_of(params):
    plan, absent = sv.plan_clips({"seed": 0, **params})
    signers = {split: {c["signer"] for c in plan if c["split"] == split} for split in SPLITS}
    sizes = {split: sum(c["split"] == split for c in plan) for split in SPLITS}
    missing = {
        split: sum(c["split"] == split for c in plan if c["video_id"] in absent) for split in SPLITS
    }
    return signers, sizes, missing


def test_default_splits_come_from_disjoint_signers():
    """The defaults: 10 signers, 2 of them val only, 2 test only; train_video.py's 100 clips per
    class of 6 classes give 360 / 120 / 120 clips (18 index entries without a video)."""
    signers, sizes, missing = splits_of({"num_classes": 6, "clips_per_class": 100, **DEFAULTS})
    assert signers == {"train": {0, 1, 2, 3, 4, 5}, "val": {6, 7}, "test": {8, 9}}
    assert sizes == {"train": 360, "val": 120, "test": 120}
    assert missing == {"train": 11, "val": 3, "test": 4}
    signers, sizes, _ = splits_of({"num_classes": 6, "clips_per_class": 40, **DEFAULTS})
    assert sizes == {"train": 144, "val": 48, "test": 48}
    assert sv.dataset_name(6, 100, 96, 0) == "signs-k6-n100-s96-seed0-p10v2t2"


@pytest.mark.parametrize(
    ("num_signers", "val_signers", "test_signers", "clips_per_class"),
    [(3, 1, 1, 3), (5, 1, 2, 7), (8, 2, 2, 40), (10, 3, 1, 100)],
)
def test_no_signer_is_in_two_splits(num_signers, val_signers, test_signers, clips_per_class):
    layout = {"num_signers": num_signers, "val_signers": val_signers, "test_signers": test_signers}
    signers, sizes, missing = splits_of(
        {"num_classes": 3, "clips_per_class": clips_per_class, **layout}
    )
    assert signers["train"].isdisjoint(signers["val"] | signers["test"])
    assert signers["val"].isdisjoint(signers["test"])
    assert signers["train"] | signers["val"] | signers["test"] == set(range(num_signers))
    assert (len(signers["val"]), len(signers["test"])) == (val_signers, test_signers)
    per_signer = [len(range(s, clips_per_class, num_signers)) for s in range(num_signers)]
    expected = {split: 3 * sum(per_signer[s] for s in signers[split]) for split in SPLITS}
    assert sizes == expected
    assert all(sizes[split] - missing[split] >= 3 for split in SPLITS)  # every class in every split


def test_the_folder_name_changes_with_the_layout():
    # Version 1 named these "...-seed0" (8 signers, 2 test) and "...-seed0-p3v1".
    assert sv.dataset_name(6, 100, 96, 0, 8, 2, 2) == "signs-k6-n100-s96-seed0-p8v2t2"
    assert sv.dataset_name(4, 6, 64, 0, 3, 1, 1) == "signs-k4-n6-s64-seed0-p3v1t1"
    assert sv.GENERATOR_VERSION == 2


NEED = "need val_signers >= 1, test_signers >= 1 and val_signers + test_signers < num_signers"


@pytest.mark.parametrize(
    ("layout", "got"),
    [
        ({"num_signers": 2, "val_signers": 1, "test_signers": 1}, "got 1, 1 and 2"),
        ({"num_signers": 4, "val_signers": 0, "test_signers": 2}, "got 0, 2 and 4"),
        ({"num_signers": 4, "val_signers": 2, "test_signers": 0}, "got 2, 0 and 4"),
        ({"num_signers": 4, "val_signers": 2, "test_signers": 3}, "got 2, 3 and 4"),
    ],
)
def test_bad_signer_counts_are_one_line(layout, got, tmp_path, capsys):
    with pytest.raises(UserError) as err:
        sv.ensure_synthetic_videos(tmp_path, clips_per_class=10, **layout)
    assert str(err.value) == f"{NEED}, {got}"
    assert not list(tmp_path.iterdir())
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in layout.items()]
    with pytest.raises(SystemExit) as exit_:
        sv.main(["--root", str(tmp_path), *flags])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{NEED}, {got}" in lines[0]


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="num_classes must be"):
        sv.ensure_synthetic_videos(tmp_path, num_classes=sv.MAX_CLASSES + 1)
    with pytest.raises(UserError, match=r"clips_per_class must be at least num_signers \(10\)"):
        sv.ensure_synthetic_videos(tmp_path, clips_per_class=9)
    with pytest.raises(UserError, match="image_size must be"):
        sv.ensure_synthetic_videos(tmp_path, image_size=33)
    assert not list(tmp_path.iterdir())
