"""WLASL clips read as its preprocessing wrote them: trimmed YouTube clips (raw-video frame
numbers), whole files, raw downloads at another frame rate; signer-independent re-splits.

Every clip is a real H.264 file whose frames code their number in the raw video, so a test
reads back which raw frames were sampled.
"""

import json
import subprocess

import numpy as np
import pytest
from test_video import FFMPEG, SIDE, coded_frame, codes

from keras_attn.data.video import read_clip_frames, scan_clips
from keras_attn.data.wlasl import load_wlasl
from keras_attn.errors import UserError
from keras_attn.training.callbacks import top_k_scores

YT_URL = "https://www.youtube.com/watch?v=abcdefghijk"


def write_coded(path, frame_codes, fps=25):
    """An H.264 file whose frames code `frame_codes` (their numbers in the raw video)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    raw = np.stack([coded_frame(i) for i in frame_codes]).tobytes()
    command = [FFMPEG, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    command += ["-s", f"{SIDE}x{SIDE}", "-r", str(fps), "-i", "-", "-c:v", "libx264"]
    command += ["-pix_fmt", "yuv420p", str(path)]
    subprocess.run(command, input=raw, check=True)


def instance(vid, split, start, end, url, signer=0):
    return dict(
        video_id=vid, split=split, frame_start=start, frame_end=end, url=url,
        signer_id=signer, fps=25, bbox=[0, 0, SIDE, SIDE],
    )  # fmt: skip


@pytest.fixture(scope="module")
def wlasl(tmp_path_factory):
    """A YouTube instance trimmed by preprocess.py to raw frames 41..70 (1-based), and a
    whole-file instance (another source) whose sign is frames 11..30 inside its file."""
    root = tmp_path_factory.mktemp("wlasl")
    (root / "videos").mkdir()
    write_coded(root / "videos" / "00100.mp4", range(40, 70))  # what preprocess.py wrote
    write_coded(root / "videos" / "00200.mp4", range(40))
    write_coded(root / "videos" / "00300.mp4", range(40))
    index = [
        {"gloss": "book", "instances": [instance("00100", "train", 41, 70, YT_URL)]},
        {"gloss": "drink", "instances": [
            instance("00200", "train", 11, 30, "http://aslpro.com/x.swf", signer=1),
            instance("00300", "val", 1, -1, "http://aslpro.com/y.swf", signer=2),
        ]},
    ]  # fmt: skip
    (root / "WLASL_v0.3.json").write_text(json.dumps(index))
    nslt = {
        "00100": {"subset": "train", "action": [0, 41, 70]},
        "00200": {"subset": "train", "action": [1, 11, 30]},
        "00300": {"subset": "val", "action": [1, 1, 40]},
    }
    (root / "nslt_100.json").write_text(json.dumps(nslt))
    (root / "wlasl_class_list.txt").write_text("0\tbook\n1\tdrink\n")
    # Raw downloads: the YouTube video at 30 fps (the annotation counts at 25), the other whole.
    raw = root / "raw_videos_mp4"
    raw.mkdir()
    write_coded(raw / "abcdefghijk.mp4", range(100), fps=30)
    write_coded(raw / "00200.mp4", range(40))
    write_coded(raw / "00300.mp4", range(40))
    return root


def sampled(index, mode="center", frames=8):
    readable, skipped = scan_clips(index.train + index.val)
    assert skipped == []
    return {r.video_id: codes(read_clip_frames(r, frames, mode, SIDE)[0]) for r in readable}


@pytest.mark.parametrize("index_file", ["WLASL_v0.3.json", "nslt_100.json"])
def test_trimmed_and_whole_clips_sample_the_sign(wlasl, index_file):
    index = load_wlasl(wlasl, limit_classes=0, index_file=index_file)
    layouts = {r.video_id: r.layout for r in index.train + index.val}
    assert layouts == {"00100": "trimmed", "00200": "whole_file", "00300": "whole_file"}
    got = sampled(index)
    # Trimmed: the file is raw frames 40..69 (0-based); 8 centre frames of its 30.
    assert got["00100"] == list(range(51, 59))
    # Whole file: the sign is frames 10..29 inside it; 8 centre frames of those 20.
    assert got["00200"] == list(range(16, 24))
    assert got["00300"] == list(range(16, 24))
    summary = index.to_summary()
    assert summary["clip_layouts"]["train"] == {"trimmed": 1, "whole_file": 1, "raw_cut": 0}
    assert summary["clip_layouts"]["val"] == {"trimmed": 0, "whole_file": 1, "raw_cut": 0}
    assert summary["layout_rule"] == ("url" if index_file.startswith("WLASL") else "range")
    assert "clips trimmed 1, whole file 2" in index.summary_line()


def test_raw_videos_are_cut_by_time(wlasl):
    index = load_wlasl(wlasl, limit_classes=0, raw_videos=wlasl / "raw_videos_mp4")
    clip = {r.video_id: r for r in index.train + index.val}
    # Annotated frames 40..69 at 25 fps are 1.6 s .. 2.76 s: frames 48..83 at 30 fps.
    assert (clip["00100"].frame_start, clip["00100"].frame_end) == (48, 83)
    assert clip["00100"].path.endswith("raw_videos_mp4/abcdefghijk.mp4")
    assert {r.layout for r in clip.values()} == {"raw_cut"}
    got = sampled(index)
    assert got["00100"] == list(range(62, 70))  # 8 centre frames of the 36
    assert got["00200"] == list(range(16, 24))


def test_raw_videos_and_signer_split_need_the_v03_index(wlasl):
    for kwargs, flag in (
        (dict(raw_videos=wlasl / "raw_videos_mp4"), "--raw-videos"),
        (dict(split="signer-independent"), "--split signer-independent"),
    ):
        with pytest.raises(UserError, match=f"^{flag} needs WLASL_v0.3.json") as err:
            load_wlasl(wlasl, index_file="nslt_100.json", **kwargs)
        assert "\n" not in str(err.value)


def test_class_order_index_keeps_the_index_labels(wlasl):
    index = load_wlasl(wlasl, limit_classes=1, class_order="index", index_file="nslt_100.json")
    assert index.class_names == ["book"]
    index = load_wlasl(wlasl, limit_classes=0, class_order="index")
    assert index.class_names == ["book", "drink"]


def test_signer_independent_split(tmp_path):
    """No signer in two splits, the same split for the same seed, counts reported."""
    (tmp_path / "videos").mkdir()
    write_coded(tmp_path / "videos" / "clip.mp4", range(4))
    data = (tmp_path / "videos" / "clip.mp4").read_bytes()
    glosses, n = [], 0
    for gloss in ("a", "b"):
        instances = []
        for signer in range(10):
            for split in ("train", "train", "val", "test"):
                vid = f"{n:05d}"
                (tmp_path / "videos" / f"{vid}.mp4").write_bytes(data)
                instances.append(instance(vid, split, 1, -1, "x", signer=signer))
                n += 1
        instances.append(instance(f"{n:05d}", "train", 1, -1, "x", signer=None))
        (tmp_path / "videos" / f"{n:05d}.mp4").write_bytes(data)
        n += 1
        glosses.append({"gloss": gloss, "instances": instances})
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(glosses))
    index = load_wlasl(tmp_path, limit_classes=0, split="signer-independent", split_seed=3)
    signers = {s: {r.signer_id for r in getattr(index, s)} for s in ("train", "val", "test")}
    assert not (signers["train"] & signers["val"] or signers["train"] & signers["test"])
    assert not signers["val"] & signers["test"]
    assert all(signers.values())
    info = index.signer_split
    assert info["no_signer_id"] == 2 and sum(info["signers"].values()) == 10
    assert info["clips"]["train"] == len(index.train) and sum(info["clips"].values()) == 80
    again = load_wlasl(tmp_path, limit_classes=0, split="signer-independent", split_seed=3)
    assert [r.video_id for r in again.val] == [r.video_id for r in index.val]
    assert "re-split by signer (seed 3)" in index.summary_line()


def test_top_k_scores_per_instance_and_per_class():
    logits = np.array(
        [
            [5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0],  # label 0: rank 0
            [5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0],  # label 4: rank 4
            [5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0],  # label 5: tied with 6..11, ranked last
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # label 0: rank 10 (ties count against)
        ],
        dtype=np.float32,
    )
    labels = np.array([0, 4, 5, 0])
    scores = top_k_scores(labels, logits, prefix="test_")
    assert scores["test_top1_accuracy"] == 0.25
    assert scores["test_top5_accuracy"] == 0.5
    assert scores["test_top10_accuracy"] == 0.5
    # Per class: class 0 is 1/2 at top-1, class 4 0/1, class 5 0/1 -> mean 1/6.
    assert scores["test_class_top1_accuracy"] == pytest.approx(1 / 6)
    assert scores["test_class_top5_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    few = top_k_scores(np.array([1]), np.array([[0.0, 1.0, 2.0, 3.0, 4.0]]))
    assert set(few) == {"top1_accuracy", "class_top1_accuracy"}  # 5 and 10 are not below 5
