"""Cluttered MNIST: determinism, boxes, same-split distractors, the cache and its repair."""

import dataclasses
import logging

import numpy as np
import pytest

from keras_attn.data import cluttered
from keras_attn.data.cluttered import cluttered_split, load_cluttered
from keras_attn.data.mnist import MnistArrays
from keras_attn.errors import UserError


def digits(n, seed=0):
    """(n, 28, 28) uint8 'digits': random pixels in a random rectangle, black around it."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        y0, x0 = rng.integers(0, 14, 2)
        y1, x1 = rng.integers([y0 + 1, x0 + 1], 29)
        out[i, y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0))
    return out


def constant_arrays(n_train=20, n_test=10):
    """Image i of train is all i+1, of test all 101+i: a pixel's value names its source."""
    train = np.arange(1, n_train + 1, dtype=np.uint8)[:, None, None] * np.ones((28, 28), np.uint8)
    test = np.arange(101, 101 + n_test, dtype=np.uint8)[:, None, None] * np.ones((28, 28), np.uint8)
    return MnistArrays(
        train, np.arange(n_train) % 10, test, np.arange(n_test) % 10,
        source="test", class_names=tuple("0123456789"),
    )  # fmt: skip


def tiny_arrays():
    return MnistArrays(
        digits(16, 1), np.arange(16) % 10, digits(6, 2), np.arange(6) % 10,
        source="test", class_names=tuple("0123456789"),
    )  # fmt: skip


def inside(box, canvas=60):
    mask = np.zeros((canvas, canvas), bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_shapes_types_and_determinism():
    images, labels = digits(24), np.arange(24) % 10
    a = cluttered_split(images, labels, seed=3)
    b = cluttered_split(images, labels, seed=3)
    c = cluttered_split(images, labels, seed=4)
    assert a.images.shape == (24, 60, 60) and a.images.dtype == np.uint8
    assert a.boxes.shape == (24, 4) and a.boxes.dtype == np.int16
    np.testing.assert_array_equal(a.labels, labels)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, c.images) and not np.array_equal(a.boxes, c.boxes)
    other = cluttered_split(images, labels, canvas=40, distractors=2, distractor_size=5, seed=3)
    assert other.images.shape == (24, 40, 40)


def test_the_box_is_the_placed_digits_tight_box():
    images = digits(30, 5)
    result = cluttered_split(images, np.zeros(30, int), distractors=0, seed=1)
    for image, canvas, box in zip(images, result.images, result.boxes, strict=True):
        ys, xs = np.nonzero(canvas)
        assert tuple(box) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        dy, dx = np.nonzero(image)
        crop = image[dy.min() : dy.max() + 1, dx.min() : dx.max() + 1]
        y0, x0, y1, x1 = box
        np.testing.assert_array_equal(canvas[y0:y1, x0:x1], crop)
    # Clutter is max-combined: the digit's pixels survive under it, inside the same box.
    cluttered_ = cluttered_split(images, np.zeros(30, int), distractors=6, seed=1)
    np.testing.assert_array_equal(cluttered_.boxes, result.boxes)
    assert np.all(cluttered_.images >= result.images)
    assert (cluttered_.images > result.images).any()


def test_distractors_come_from_other_images_of_the_same_split(tmp_path):
    arrays = constant_arrays()
    splits = load_cluttered("const", arrays, seed=0, cache_dir=tmp_path)
    for split, own_values in (("train", range(1, 21)), ("test", range(101, 111))):
        result = splits[split]
        clutter = 0
        for i, (canvas, box) in enumerate(zip(result.images, result.boxes, strict=True)):
            own = own_values[i]
            assert box[2] - box[0] == 28 and box[3] - box[1] == 28  # a constant digit fills it
            assert np.all(canvas[inside(box)] >= own)
            outside = canvas[~inside(box)]
            values = set(np.unique(outside)) - {0}
            assert values <= set(own_values) - {own}  # this split's images, never its own
            clutter += np.count_nonzero(outside)
        assert clutter > 0
    # A patch of a constant image is solid: outside its box an image holds at most 4 patches.
    train = splits["train"]
    for canvas, box in zip(train.images, train.boxes, strict=True):
        assert np.count_nonzero(canvas[~inside(box)]) <= 4 * 8 * 8


def test_splits_get_their_own_seeds_and_match_cluttered_split(tmp_path):
    images = digits(12, 7)
    arrays = MnistArrays(images, np.arange(12) % 10, images.copy(), np.arange(12) % 10,
                         source="test", class_names=tuple("0123456789"))  # fmt: skip
    splits = load_cluttered("same", arrays, canvas=50, seed=9, cache_dir=tmp_path)
    direct = cluttered_split(images, arrays.train_labels, canvas=50, seed=(9, 0))
    np.testing.assert_array_equal(splits["train"].images, direct.images)
    np.testing.assert_array_equal(splits["train"].boxes, direct.boxes)
    # identical source arrays, yet the test split's clutter is drawn independently
    assert not np.array_equal(splits["train"].images, splits["test"].images)


def test_the_cache_is_reused_and_keyed_by_source_and_settings(tmp_path, monkeypatch):
    arrays = tiny_arrays()
    first = load_cluttered("mnist", arrays, seed=0, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("mnist-") and f.endswith(".npz") for f in files)
    assert [f.split("-")[1] for f in files] == ["test", "train"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(cluttered, "cluttered_split", must_not_run)
    second = load_cluttered("mnist", arrays, seed=0, cache_dir=tmp_path)
    for split in ("train", "test"):
        for a, b in zip(first[split], second[split], strict=True):
            np.testing.assert_array_equal(a, b)
    monkeypatch.undo()

    load_cluttered("mnist", arrays, seed=1, cache_dir=tmp_path)
    load_cluttered("mnist", arrays, seed=0, distractors=2, cache_dir=tmp_path)
    changed = dataclasses.replace(arrays, train_images=arrays.train_images.copy())
    changed.train_images[0, 0, 0] ^= 1
    load_cluttered("mnist", changed, seed=0, cache_dir=tmp_path)
    # 2 + 2 + 2 files, then one: a changed train split leaves the test split's key alone
    assert len(list(tmp_path.iterdir())) == 7
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickled", "wrong_shape"])
def test_a_bad_cache_file_is_regenerated(tmp_path, monkeypatch, caplog, damage):
    arrays = tiny_arrays()
    first = load_cluttered("mnist", arrays, seed=0, cache_dir=tmp_path)
    (train_file,) = tmp_path.glob("mnist-train-*.npz")
    data = train_file.read_bytes()
    if damage == "truncated":
        train_file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        train_file.write_bytes(b"\x93NUMPY not at all")
    elif damage == "pickled":  # loading it would need pickle: refused, so regenerated
        np.savez(train_file, images=np.array([1, "x"], dtype=object), labels=0, boxes=0)
    else:
        np.savez(train_file, images=first["train"].images[:, :10], labels=first["train"].labels,
                 boxes=first["train"].boxes)  # fmt: skip

    calls = []
    real = cluttered.cluttered_split

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(cluttered, "cluttered_split", counting)
    with caplog.at_level(logging.WARNING, logger="keras_attn.data.cluttered"):
        again = load_cluttered("mnist", arrays, seed=0, cache_dir=tmp_path)
    assert calls == [arrays.train_images.shape]  # the test split still came from the cache
    assert str(train_file) in caplog.text
    for split in ("train", "test"):
        for a, b in zip(first[split], again[split], strict=True):
            np.testing.assert_array_equal(a, b)
    assert train_file.read_bytes() == data  # rewritten whole


def test_bad_arguments_are_one_line_user_errors():
    images, labels = digits(4), np.zeros(4, int)
    for kwargs in ({"canvas": 27}, {"distractor_size": 0}, {"distractor_size": 29},
                   {"distractors": -1}):  # fmt: skip
        with pytest.raises(UserError):
            cluttered_split(images, labels, **kwargs)
    with pytest.raises(UserError, match="at least 2 images"):
        cluttered_split(images[:1], labels[:1])
    assert cluttered_split(images[:1], labels[:1], distractors=0).images.shape == (1, 60, 60)
    with pytest.raises(UserError, match="uint8"):
        cluttered_split(images.astype(np.float32), labels)
