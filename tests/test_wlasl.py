"""load_wlasl on tiny real index files (both formats) and real MP4 files written with OpenCV."""

import json
import shutil

import cv2
import numpy as np
import pytest

from keras_attn.data.wlasl import ClipRecord, WlaslIndex, load_wlasl
from keras_attn.errors import UserError

# (gloss, video_id, split, frame_start, frame_end, has_file); glosses in file order, which is
# neither alphabetical nor by frequency.
CLIPS = [
    ("zebra", "00001", "train", 1, -1, True),
    ("zebra", "00002", "train", 3, 40, True),
    ("zebra", "00003", "train", 1, -1, True),
    ("zebra", "00004", "train", 1, -1, True),
    ("zebra", "00005", "train", 1, -1, True),
    ("zebra", "00006", "test", 1, -1, True),
    ("zebra", "00007", "val", 1, -1, False),
    ("apple", "00011", "train", 1, -1, True),
    ("apple", "00012", "train", 10, 10, True),
    ("apple", "00013", "train", 1, -1, True),
    ("apple", "00014", "train", 1, -1, False),
    ("apple", "00015", "test", 2, 30, True),
    ("apple", "00016", "val", 1, -1, True),
    ("mango", "00021", "train", 1, -1, True),
    ("mango", "00022", "train", 1, -1, True),
    ("mango", "00023", "train", 1, -1, True),
    ("mango", "00024", "test", 1, -1, False),
    ("book", "00031", "train", 1, -1, True),
    ("book", "00032", "test", 1, -1, True),
    ("cat", "00041", "test", 1, -1, True),  # no training clip: never selected
    ("dog", "00051", "train", 1, -1, False),  # no available clip at all
    ("dog", "00052", "train", 1, -1, False),
]
GLOSSES = ["zebra", "apple", "mango", "book", "cat", "dog"]  # class list order
GLOSS_OF = {vid: gloss for gloss, vid, *_ in CLIPS}


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (32, 32))
    for i in range(6):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    return path.read_bytes()


def add_videos(root, video_ids, data):
    (root / "videos").mkdir(exist_ok=True)
    for vid in video_ids:
        (root / "videos" / f"{vid}.mp4").write_bytes(data)


def v03_index(clips=CLIPS):
    index = {}
    for gloss, vid, split, start, end, _ in clips:
        index.setdefault(gloss, []).append(
            {
                "video_id": vid,
                "split": split,
                "frame_start": start,
                "frame_end": end,
                "signer_id": int(vid) % 7 if vid.isdigit() else None,
                "bbox": [1, 2, 30, 31],
                "fps": 25,
                "url": "https://example.com/x",
                "instance_id": 0,
            }
        )
    return [{"gloss": g, "instances": index.get(g, [])} for g in GLOSSES]


def nslt_index(clips=CLIPS):
    return {
        vid: {"subset": split, "action": [GLOSSES.index(gloss), start, end]}
        for gloss, vid, split, start, end, _ in clips
    }


def write_class_list(root, sep="\t"):
    lines = [f"{i}{sep}{g}" for i, g in enumerate(GLOSSES)]
    (root / "wlasl_class_list.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def v03_dir(tmp_path, mp4_bytes):
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(v03_index()))
    add_videos(tmp_path, [vid for _, vid, *_, ok in CLIPS if ok], mp4_bytes)
    return tmp_path


@pytest.fixture
def nslt_dir(tmp_path, mp4_bytes):
    (tmp_path / "nslt_100.json").write_text(json.dumps(nslt_index()))
    write_class_list(tmp_path, sep="   ")  # spaces instead of a tab are tolerated
    add_videos(tmp_path, [vid for _, vid, *_, ok in CLIPS if ok], mp4_bytes)
    return tmp_path


def assert_no_label_shift(index: WlaslIndex):
    for clip in index.train + index.val + index.test:
        assert index.class_names[clip.label] == GLOSS_OF[clip.video_id], clip


def key(clip: ClipRecord):
    return (clip.video_id, clip.label, clip.split, clip.frame_start, clip.frame_end, clip.path)


def test_v03_records(v03_dir):
    index = load_wlasl(v03_dir, limit_classes=None)
    assert index.class_names == ["apple", "book", "mango", "zebra"]
    assert [c.video_id for c in index.train] == [
        "00001", "00002", "00003", "00004", "00005", "00011", "00012", "00013",
        "00021", "00022", "00023", "00031",
    ]  # fmt: skip
    # The default validates on the val split (zebra's 00007 has no file) and keeps the test
    # split apart, to be scored once at the end.
    assert index.val_split == "val"
    assert [c.video_id for c in index.val] == ["00016"]
    assert [c.video_id for c in index.test] == ["00006", "00015", "00032"]
    clip = {c.video_id: c for c in index.train + index.val + index.test}
    assert (clip["00001"].frame_start, clip["00001"].frame_end) == (0, None)
    assert (clip["00002"].frame_start, clip["00002"].frame_end) == (2, 39)
    assert (clip["00012"].frame_start, clip["00012"].frame_end) == (9, 9)
    assert (clip["00015"].frame_start, clip["00015"].frame_end) == (1, 29)
    assert clip["00002"].bbox == (1, 2, 30, 31) and clip["00002"].signer_id == 2
    assert clip["00002"].path == str((v03_dir / "videos" / "00002.mp4").resolve())
    assert [c.split for c in index.val] == ["val"]
    assert [c.split for c in index.test] == ["test"] * 3
    assert [index.class_names[c.label] for c in index.test] == ["zebra", "apple", "book"]
    assert not index.rejected
    assert_no_label_shift(index)
    whole = index.over_whole_clips()
    assert [(c.video_id, c.frame_start, c.frame_end) for c in whole.test] == [
        ("00006", 0, None),
        ("00015", 0, None),
        ("00032", 0, None),
    ]


def test_validating_on_the_test_split_leaves_no_test_split(v03_dir):
    """--val-split test, as the original study did: its clips validate, none is left to score."""
    index = load_wlasl(v03_dir, val_split="test", limit_classes=None)
    assert [c.video_id for c in index.val] == ["00006", "00015", "00032"]
    assert index.test == []
    line = index.summary_line()
    assert "train 12 clips, val (test split) 3 clips, no separate test split" in line
    summary = index.to_summary()
    assert summary["val_split"] == "test"
    assert summary["clips"] == {"train": 12, "val": 3, "test": 0}
    assert summary["clips_per_class"]["test"] == [0, 0, 0, 0]
    assert_no_label_shift(index)


def test_both_formats_give_the_same_clips(v03_dir, tmp_path_factory, mp4_bytes):
    nslt = tmp_path_factory.mktemp("nslt")
    (nslt / "nslt_100.json").write_text(json.dumps(nslt_index()))
    write_class_list(nslt)
    shutil.copytree(v03_dir / "videos", nslt / "videos")
    for kwargs in ({}, {"limit_classes": None, "class_order": "alphabetical", "val_split": "val"}):
        a, b = load_wlasl(v03_dir, **kwargs), load_wlasl(nslt, **kwargs)
        assert a.class_names == b.class_names
        for clips_a, clips_b in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
            assert [key(c)[:3] for c in clips_a] == [key(c)[:3] for c in clips_b]
            # v0.3 entries without a YouTube url are whole files; the nslt index cannot say, so
            # a range past the 6-frame file's end marks a trimmed clip, read from its frame 0.
            for ca, cb in zip(clips_a, clips_b, strict=True):
                fits = ca.frame_end is None or ca.frame_end <= 5
                assert ca.layout == "whole_file"
                assert cb.layout == ("whole_file" if fits else "trimmed")
                expected = (
                    (ca.frame_start, ca.frame_end) if fits else (0, ca.frame_end - ca.frame_start)
                )
                assert (cb.frame_start, cb.frame_end) == expected
        assert a.missing == b.missing and a.missing_all == b.missing_all
        assert all(c.bbox is None and c.signer_id is None for c in b.train)
        assert_no_label_shift(b)


def test_missing_files_are_counted_per_split(v03_dir):
    index = load_wlasl(v03_dir, limit_classes=None)
    # selected classes (apple, book, mango, zebra): 00014 train, 00007 val, 00024 test
    assert index.missing == {"train": 1, "val": 1, "test": 1}
    # whole index: dog's two training entries as well
    assert index.missing_all == {"train": 3, "val": 1, "test": 1}
    line = index.summary_line()
    assert "missing" in line and "\n" not in line
    assert line.startswith(
        "WLASL_v0.3.json: 4 classes, train 12 clips, val 1 clips, test 3 clips; missing videos"
    )
    summary = json.loads(json.dumps(index.to_summary()))
    assert summary["missing"]["train"] == 1
    assert summary["clips"] == {"train": 12, "val": 1, "test": 3}
    assert summary["val_split"] == "val"
    # classes apple, book, mango, zebra
    assert summary["clips_per_class"]["train"] == [3, 1, 3, 5]
    assert summary["clips_per_class"]["val"] == [1, 0, 0, 0]
    assert summary["clips_per_class"]["test"] == [1, 1, 0, 1]


def test_class_selection_by_frequency(v03_dir):
    # available training clips: zebra 5, apple 3, mango 3, book 1, cat 0, dog 0 (missing)
    index = load_wlasl(v03_dir, limit_classes=3)
    assert index.class_names == ["apple", "mango", "zebra"]  # apple beats mango in the tie
    assert {c.label for c in index.train} == {0, 1, 2}
    assert_no_label_shift(index)
    assert index.missing == {"train": 1, "val": 1, "test": 1}
    assert load_wlasl(v03_dir, limit_classes=1).class_names == ["zebra"]
    two = load_wlasl(v03_dir, limit_classes=2)
    assert two.class_names == ["apple", "zebra"]
    assert_no_label_shift(two)


def test_class_selection_alphabetical(v03_dir):
    index = load_wlasl(v03_dir, limit_classes=3, class_order="alphabetical")
    assert index.class_names == ["apple", "book", "mango"]
    assert [c.video_id for c in index.val] == ["00016"]
    assert [c.video_id for c in index.test] == ["00015", "00032"]
    assert_no_label_shift(index)
    everything = load_wlasl(v03_dir, limit_classes=0, class_order="alphabetical")
    assert everything.class_names == ["apple", "book", "mango", "zebra"]  # cat, dog: no train clip


def test_nslt_labels_follow_the_class_list(nslt_dir):
    index = load_wlasl(nslt_dir, limit_classes=10, class_order="alphabetical", val_split="val")
    assert index.index_file.endswith("nslt_100.json")
    assert index.class_names == ["apple", "book", "mango", "zebra"]
    assert [c.video_id for c in index.val] == ["00016"]
    assert [c.video_id for c in index.test] == ["00006", "00015", "00032"]
    assert_no_label_shift(index)


def test_index_detection(tmp_path, mp4_bytes):
    add_videos(tmp_path, ["00001"], mp4_bytes)
    clips = [("zebra", "00001", "train", 1, -1, True)]
    write_class_list(tmp_path)
    (tmp_path / "nslt_300.json").write_text(json.dumps(nslt_index(clips)))
    (tmp_path / "nslt_100.json").write_text(json.dumps(nslt_index(clips)))
    assert load_wlasl(tmp_path).index_file.endswith("nslt_100.json")
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(v03_index(clips)))
    assert load_wlasl(tmp_path).index_file.endswith("WLASL_v0.3.json")
    assert load_wlasl(tmp_path, index_file="nslt_300.json").index_file.endswith("nslt_300.json")
    chosen = load_wlasl(tmp_path, index_file=tmp_path / "nslt_100.json")
    assert chosen.index_file == str(tmp_path / "nslt_100.json")


def test_unsafe_ids_are_rejected_and_never_opened(tmp_path, mp4_bytes):
    (tmp_path / "secret.mp4").write_bytes(mp4_bytes)  # what "../secret" would reach
    (tmp_path / "videos" / "a").mkdir(parents=True)
    (tmp_path / "videos" / "a" / "b.mp4").write_bytes(mp4_bytes)
    add_videos(tmp_path, ["00001"], mp4_bytes)
    unsafe = ["../secret", str(tmp_path / "secret"), "a/b", "a\\b", "", "x\x00y", "..", "x..y"]
    clips = [("zebra", "00001", "train", 1, -1, True)]
    clips += [("zebra", vid, "train", 1, -1, True) for vid in unsafe]
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(v03_index(clips)))
    index = load_wlasl(tmp_path)
    assert [c.video_id for c in index.train] == ["00001"]
    assert [r["video_id"] for r in index.rejected] == unsafe
    assert all(r["reason"] for r in index.rejected)
    assert index.missing_all == {"train": 0, "val": 0, "test": 0}  # not even looked up
    assert "rejected entries: 8" in index.summary_line()
    json.dumps(index.to_summary())


def test_duplicates_bad_ranges_unknown_splits_and_class_ids(tmp_path, mp4_bytes):
    add_videos(tmp_path, ["00001", "00002", "00003", "00004", "00005", "00006"], mp4_bytes)
    write_class_list(tmp_path)
    text = """{
      "00001": {"subset": "train", "action": [0, 1, -1]},
      "00002": {"subset": "train", "action": [1, 20, 10]},
      "00003": {"subset": "dev", "action": [0, 1, -1]},
      "00004": {"subset": "train", "action": [6, 1, -1]},
      "00005": {"subset": "train", "action": [-1, 1, -1]},
      "00006": {"subset": "train", "action": [1, 0, 5]},
      "00001": {"subset": "test", "action": [1, 1, -1]}
    }"""
    (tmp_path / "nslt_100.json").write_text(text)
    index = load_wlasl(tmp_path, limit_classes=None)
    assert [(c.video_id, index.class_names[c.label]) for c in index.train] == [("00001", "zebra")]
    assert index.val == [] and index.test == []  # the duplicate "00001" (test) was dropped
    reasons = {(r["video_id"], r["reason"].split()[0]) for r in index.rejected}
    assert reasons == {
        ("00002", "frame_start"),
        ("00004", "class"),
        ("00005", "class"),
        ("00006", "frame_start"),
        ("00001", "duplicate"),
    }
    assert any("after frame_end" in r["reason"] for r in index.rejected)
    assert index.unknown_splits == {"dev": 1}
    assert "dev" in index.summary_line()

    v03 = tmp_path / "v03"
    v03.mkdir()
    add_videos(v03, ["00001"], mp4_bytes)
    clips = [("zebra", "00001", "train", 1, -1, True), ("apple", "00001", "train", 1, -1, True)]
    (v03 / "WLASL_v0.3.json").write_text(json.dumps(v03_index(clips)))
    index = load_wlasl(v03)
    assert index.class_names == ["zebra"] and len(index.train) == 1
    assert index.rejected == [
        {"video_id": "00001", "reason": "duplicate video_id (the first entry is kept)"}
    ]


V03_BAD = {
    "invalid JSON": ("[{", "invalid JSON"),
    "top level": ("42", "top level"),
    "item type": ('["zebra"]', "item 0"),
    "no gloss": ('[{"instances": []}]', "'gloss'"),
    "no instances": ('[{"gloss": "zebra"}]', "'instances'"),
    "instances type": ('[{"gloss": "zebra", "instances": {}}]', "not a list"),
    "no video_id": ('[{"gloss": "zebra", "instances": [{"split": "train"}]}]', "'video_id'"),
    "no split": ('[{"gloss": "zebra", "instances": [{"video_id": "1"}]}]', "'split'"),
    "frame type": (
        '[{"gloss": "z", "instances": [{"video_id": "1", "split": "train", "frame_start": "1"}]}]',
        "frame_start",
    ),
}
NSLT_BAD = {
    "entry type": ('{"00335": [0, 1, -1]}', "'00335'"),
    "no action": ('{"00335": {"subset": "train"}}', "entry '00335' has no 'action'"),
    "no subset": ('{"00335": {"action": [0, 1, -1]}}', "'subset'"),
    "action length": ('{"00335": {"subset": "train", "action": [0, 1]}}', "action"),
    "action type": ('{"00335": {"subset": "train", "action": [0, "1", -1]}}', "action[1]"),
}


@pytest.mark.parametrize("case", sorted(V03_BAD))
def test_malformed_v03_index(tmp_path, case):
    text, expected = V03_BAD[case]
    (tmp_path / "WLASL_v0.3.json").write_text(text)
    assert_user_error(tmp_path, "WLASL_v0.3.json", expected)


@pytest.mark.parametrize("case", sorted(NSLT_BAD))
def test_malformed_nslt_index(tmp_path, case):
    text, expected = NSLT_BAD[case]
    (tmp_path / "nslt_100.json").write_text(text)
    write_class_list(tmp_path)
    assert_user_error(tmp_path, "nslt_100.json", expected)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "not found"),
        (b"0\tzebra\nnot-a-number apple\n", "line 2"),
        (b"0\tzebra\n0\tapple\n", "repeats class id 0"),
        (b"\n\n", "no classes"),
        (b"0\tz\xff\xfe\n", "cannot read"),
    ],
)
def test_bad_class_list(tmp_path, content, expected):
    (tmp_path / "nslt_100.json").write_text(json.dumps(nslt_index()))
    if content is not None:
        (tmp_path / "wlasl_class_list.txt").write_bytes(content)
    assert_user_error(tmp_path, "wlasl_class_list.txt", expected)


def test_no_index_or_no_clips(tmp_path, mp4_bytes):
    assert_user_error(tmp_path, "WLASL_v0.3.json", "nslt_{100,300,1000,2000}.json")
    assert_user_error(tmp_path / "absent", "absent", "does not exist")
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(v03_index()))
    assert_user_error(tmp_path, "WLASL_v0.3.json", "no available training clip")
    add_videos(tmp_path, ["00041"], mp4_bytes)  # cat: a test clip only
    assert_user_error(tmp_path, "WLASL_v0.3.json", "no available training clip")
    with pytest.raises(UserError, match="nope.json"):
        load_wlasl(tmp_path, index_file="nope.json")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"val_split": "train"},
        {"class_order": "random"},
        {"limit_classes": -1},
        {"limit_classes": "3"},
    ],
)
def test_bad_arguments(v03_dir, kwargs):
    with pytest.raises(UserError):
        load_wlasl(v03_dir, **kwargs)


def assert_user_error(data_dir, names, expected):
    with pytest.raises(UserError) as info:
        load_wlasl(data_dir)
    message = str(info.value)
    assert "\n" not in message
    assert names in message, message
    assert expected in message, message
