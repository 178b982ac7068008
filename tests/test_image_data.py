"""Image data: folder scanning, decoding of every format, bad files, splits, pipelines, CIFAR."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_attn.data.images import (
    ImageData,
    load_image_data,
    steps_per_epoch,
    train_dataset,
    val_dataset,
)
from keras_attn.data.order import epoch_order
from keras_attn.errors import UserError

S = 16
COLOURS = {"ant": (200, 40, 30), "bee": (30, 180, 60), "cat": (40, 60, 210)}


def _png(path: Path, colour, size=(S, S)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(colour)).save(path)
    return str(path)


def _noise_png(path: Path, rng, size=(20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _flat_folder(root: Path, per_class: int = 10) -> Path:
    """Three classes of flat images; each image's green channel encodes its index."""
    for name, (r, _, b) in COLOURS.items():
        for i in range(per_class):
            _png(root / name / f"{i:02d}.png", (r, 10 * i, b))
    return root


def _load(root, **kw):
    kw.setdefault("image_size", S)
    return load_image_data("folder", str(root), seed=kw.pop("seed", 0), **kw)


# ------------------------------------------------------------------------ folder layouts


def test_presplit_folder_uses_train_and_val(tmp_path):
    for name, colour in COLOURS.items():
        for i in range(3):
            _png(tmp_path / "train" / name / f"{i}.png", colour)
    _png(tmp_path / "val" / "bee" / "v.png", COLOURS["bee"])
    _png(tmp_path / "val" / "ant" / "v.PNG", COLOURS["ant"])  # extension case ignored
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    data = _load(tmp_path)
    assert data.class_names == ["ant", "bee", "cat"]
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.val_labels.tolist() == [0, 1]  # val/ant, then val/bee
    assert data.train_labels.dtype == np.int32
    assert data.train_images.shape == (9, S, S, 3) and data.train_images.dtype == np.uint8
    assert data.val_images[0, 0, 0].tolist() == list(COLOURS["ant"])
    assert data.skipped_files == [] and data.augment == "resized_crop"


def test_a_test_folder_is_the_test_split_and_validation_is_carved_from_train(tmp_path):
    for name in ("ant", "bee"):
        for i in range(3):
            _png(tmp_path / "train" / name / f"{i}.png", COLOURS[name])
        _png(tmp_path / "test" / name / "a.png", COLOURS[name])
    data = load_image_data("folder", str(tmp_path), None, seed=0)
    assert data.image_size == 128 and data.train_images.shape == (4, 128, 128, 3)
    assert data.val_labels.tolist() == [0, 1]  # one of each class's three, not test/
    assert data.test_labels.tolist() == [0, 1] and data.num_test == 2
    for name, label in (("ant", 0), ("bee", 1)):
        assert (data.test_images[label] == COLOURS[name]).all()


def test_val_and_test_folders_are_both_kept(tmp_path):
    for split, count in (("train", 2), ("val", 1), ("test", 2)):
        for name in ("ant", "bee"):
            for i in range(count):
                _png(tmp_path / split / name / f"{i}.png", COLOURS[name])
    data = load_image_data("folder", str(tmp_path), None, seed=0)
    assert (data.num_train, data.num_val, data.num_test) == (4, 2, 4)


def test_train_per_class_keeps_the_same_images_per_seed_and_leaves_val_whole(tmp_path):
    _flat_folder(tmp_path, per_class=10)
    a = load_image_data("folder", str(tmp_path), 16, seed=3, train_per_class=2)
    b = load_image_data("folder", str(tmp_path), 16, seed=3, train_per_class=2)
    whole = load_image_data("folder", str(tmp_path), 16, seed=3)
    assert np.bincount(a.train_labels).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.val_images, whole.val_images)
    assert whole.num_train == 24 and a.num_val == whole.num_val == 6


def test_stratified_split_is_deterministic_per_seed(tmp_path):
    _flat_folder(tmp_path, per_class=10)
    _png(tmp_path / "dog" / "only.png", (0, 0, 0))  # a single image stays in train
    a, b = _load(tmp_path, seed=1), _load(tmp_path, seed=1)
    other = _load(tmp_path, seed=2)
    assert a.class_names == ["ant", "bee", "cat", "dog"]
    assert np.bincount(a.val_labels, minlength=4).tolist() == [2, 2, 2, 0]
    assert np.bincount(a.train_labels).tolist() == [8, 8, 8, 1]
    np.testing.assert_array_equal(a.val_images, b.val_images)
    assert not np.array_equal(a.val_images, other.val_images)
    # every image keeps its class colour, whatever the split
    for images, labels in ((a.train_images, a.train_labels), (a.val_images, a.val_labels)):
        for image, label in zip(images, labels, strict=True):
            name = a.class_names[label]
            assert image[0, 0, 0] == COLOURS.get(name, (0,))[0]


def test_small_class_still_gets_one_val_image(tmp_path):
    for name in ("ant", "bee"):
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", COLOURS[name])
    data = _load(tmp_path, val_fraction=0.1)
    assert data.val_labels.tolist() == [0, 1] and data.train_labels.tolist() == [0, 1]


# ------------------------------------------------------------------------------ formats


def _formats(folder: Path) -> dict[str, tuple]:
    """One file per format/mode; returns name -> the RGB colour TF should decode."""
    folder.mkdir(parents=True)
    c = (200, 60, 30)
    rgb = Image.new("RGB", (S, S), c)
    grey = round(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])
    rgb.save(folder / "a_rgb.jpg", quality=95)
    rgb.save(folder / "b_upper.JPEG", quality=95)
    rgb.convert("CMYK").save(folder / "c_cmyk.jpg", quality=95)
    rgb.convert("L").save(folder / "d_grey.png")
    palette = Image.new("P", (S, S), 3)
    palette.putpalette([0, 0, 0] * 3 + list(c) + [255, 255, 255] * 252)
    palette.save(folder / "e_palette.png")
    Image.new("RGBA", (S, S), (*c, 128)).save(folder / "f_rgba.png")  # alpha dropped
    cv2.imwrite(
        str(folder / "g_16bit.png"), np.full((S, S, 3), [c[2], c[1], c[0]], np.uint16) * 257
    )
    rgb.save(folder / "h_24bit.bmp")
    palette.save(folder / "i_palette.bmp")  # 8-bit palette BMP
    second = Image.new("RGB", (S, S), (0, 0, 255))
    rgb.save(folder / "j_anim.gif", save_all=True, append_images=[second], duration=50)
    rgb.save(folder / "k.webp", lossless=True)
    rgb.save(folder / "ignored.tif")  # not an accepted extension
    return {
        "a_rgb.jpg": c, "b_upper.JPEG": c, "c_cmyk.jpg": c, "d_grey.png": (grey,) * 3,
        "e_palette.png": c, "f_rgba.png": c, "g_16bit.png": c, "h_24bit.bmp": c,
        "i_palette.bmp": c, "j_anim.gif": c, "k.webp": c,
    }  # fmt: skip


def test_every_format_decodes_to_the_drawn_colour(tmp_path):
    expected = _formats(tmp_path / "train" / "mixed")
    _png(tmp_path / "train" / "plain" / "p.png", (1, 2, 3))
    _png(tmp_path / "val" / "plain" / "p.png", (1, 2, 3))
    data = _load(tmp_path)
    assert data.skipped_files == []
    names = sorted(expected)  # files are read in sorted order within a class
    assert data.train_labels.tolist() == [0] * len(names) + [1]
    for name, image in zip(names, data.train_images, strict=False):
        tolerance = 8 if name.lower().endswith(("jpg", "jpeg")) else 1
        diff = np.abs(image.astype(int) - np.array(expected[name])).max()
        assert diff <= tolerance, f"{name}: decoded {image[S // 2, S // 2]}, drew {expected[name]}"


def test_images_of_other_sizes_are_resized(tmp_path):
    _png(tmp_path / "ant" / "wide.png", COLOURS["ant"], size=(40, 10))
    _png(tmp_path / "ant" / "big.jpg", COLOURS["ant"], size=(64, 64))
    _png(tmp_path / "bee" / "small.png", COLOURS["bee"], size=(5, 7))
    _png(tmp_path / "bee" / "b.png", COLOURS["bee"])
    data = _load(tmp_path, val_fraction=0.5)
    images = np.concatenate([data.train_images, data.val_images])
    assert images.shape == (4, S, S, 3)
    labels = np.concatenate([data.train_labels, data.val_labels])
    for image, label in zip(images, labels, strict=True):
        colour = COLOURS[data.class_names[label]]
        assert np.abs(image.astype(int) - colour).max() <= 6


# ---------------------------------------------------------------------------- bad files


def _corrupt_folder(root: Path) -> list[str]:
    _flat_folder(root, per_class=4)
    good = (root / "ant" / "00.png").read_bytes()
    jpeg = root / "x.jpg"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(jpeg)
    bad = {
        "ant/empty.jpg": b"",
        "ant/truncated.png": good[: len(good) // 2],
        "bee/truncated.jpg": jpeg.read_bytes()[:-60],
        "cat/text.jpg": b"this is not an image\n",
    }
    jpeg.unlink()
    for rel, content in bad.items():
        (root / rel).write_bytes(content)
    return sorted(str(root / rel) for rel in bad)


def test_corrupt_files_are_skipped_named_and_labels_kept(tmp_path, caplog):
    bad = _corrupt_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        data = _load(tmp_path, val_fraction=0.25)
    assert sorted(s["path"] for s in data.skipped_files) == bad
    for s in data.skipped_files:
        assert s["reason"] and "\n" not in s["reason"] and "{{" not in s["reason"]
        assert any(s["path"] in r.getMessage() for r in caplog.records)
    assert data.num_train + data.num_val == 12
    for images, labels in (
        (data.train_images, data.train_labels),
        (data.val_images, data.val_labels),
    ):
        for image, label in zip(images, labels, strict=True):
            assert tuple(image[0, 0, [0, 2]]) == COLOURS[data.class_names[label]][::2]
    streamed = _load(tmp_path, val_fraction=0.25, memory_limit_gb=0)
    assert all(p not in bad for p in streamed.train_paths.tolist() + streamed.val_paths.tolist())
    assert len(streamed.skipped_files) == 4


# ------------------------------------------------------------------------------- errors


def _not_a_directory(root: Path):
    root.write_text("x")


def _no_class_folders(root: Path):
    root.mkdir()
    (root / "a.png").write_bytes(b"")


def _one_class(root: Path):
    _png(root / "ant" / "a.png", COLOURS["ant"])


def _no_images(root: Path):
    (root / "ant").mkdir(parents=True)
    (root / "bee").mkdir()
    (root / "bee" / "readme.txt").write_text("x")


def _unreadable_class(root: Path):
    _flat_folder(root, per_class=2)
    (root / "dog").mkdir()
    (root / "dog" / "bad.png").write_bytes(b"nope")


def _single_images(root: Path):
    for name in ("ant", "bee"):
        _png(root / name / "a.png", COLOURS[name])


def _val_unreadable(root: Path):
    for name in ("ant", "bee"):
        _png(root / "train" / name / "a.png", COLOURS[name])
    (root / "val" / "ant").mkdir(parents=True)
    (root / "val" / "ant" / "a.png").write_bytes(b"")


def _val_class_unknown(root: Path):
    for name in ("ant", "bee"):
        _png(root / "train" / name / "a.png", COLOURS[name])
    _png(root / "val" / "cow" / "a.png", (0, 0, 0))


@pytest.mark.parametrize(
    "make, message",
    [
        (None, "does not exist"),
        (_not_a_directory, "is not a directory"),
        (_no_class_folders, "no class sub-folders"),
        (_no_images, "no images"),
        (_one_class, "at least 2 classes"),
        (_unreadable_class, "'dog' has no training image"),
        (_val_class_unknown, "not in"),
        (_single_images, "single image"),
        (_val_unreadable, "no readable validation image"),
    ],
)
def test_folder_errors_are_user_errors(tmp_path, make, message):
    root = tmp_path / "data"
    if make is not None:
        make(root)
    with pytest.raises(UserError, match=message) as info:
        _load(root)
    assert "\n" not in str(info.value)


def test_missing_data_dir_and_unknown_source():
    with pytest.raises(UserError, match="--data-dir"):
        load_image_data("folder", None, None, seed=0)
    with pytest.raises(UserError, match="choose one of"):
        load_image_data("imagenet", None, None, seed=0)


# ---------------------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cat"):
        for i in range(5):
            _noise_png(root / "train" / name / f"{i}.png", rng)
        _noise_png(root / "val" / name / "v.png", rng)
    return root, _load(root), _load(root, memory_limit_gb=0)


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x1, x2) and np.array_equal(y1, y2)
        for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("augment", ["crop_pad", "resized_crop"])
def test_train_dataset_shapes_determinism_and_resume(noise_data, augment):
    _, data, _ = noise_data
    data.augment = augment
    assert steps_per_epoch(data, 4) == 4  # 15 images
    run = _batches(train_dataset(data, 4, seed=3, epochs=3))
    assert [len(y) for _, y in run] == [4, 4, 4, 3] * 3
    x, y = run[0]
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (4, S, S, 3)
    assert all(b.min() >= 0.0 and b.max() <= 255.0 for b, _ in run)
    assert _same(run, _batches(train_dataset(data, 4, seed=3, epochs=3)))
    assert not _same(run, _batches(train_dataset(data, 4, seed=4, epochs=3)))
    resumed = _batches(train_dataset(data, 4, seed=3, start_epoch=2, epochs=3))
    assert _same(resumed, run[8:])
    one = _batches(train_dataset(data, 4, seed=3, start_epoch=1, epochs=2))
    assert _same(one, run[4:8])


def test_augmentation_changes_images_between_epochs(noise_data):
    _, data, _ = noise_data
    data.augment = "crop_pad"
    n = data.num_train
    (x0, y0), (x1, y1) = _batches(train_dataset(data, n, seed=5, epochs=2))
    orders = [epoch_order(n, 5, e).numpy() for e in (0, 1)]
    # The order every run has used so far: changing it would change every run's data.
    for e, order in enumerate(orders):
        shuffle = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), [5, e])
        assert np.array_equal(order, shuffle.numpy())
    assert not np.array_equal(orders[0], orders[1])
    assert np.array_equal(y0, data.train_labels[orders[0]])
    by_index = [x[np.argsort(order)] for x, order in zip((x0, x1), orders, strict=True)]
    changed = [not np.array_equal(a, b) for a, b in zip(*by_index, strict=True)]
    assert np.mean(changed) > 0.7
    raw = data.train_images.astype(np.float32)
    assert np.mean([not np.array_equal(a, b) for a, b in zip(by_index[0], raw, strict=True)]) > 0.7


def test_streamed_matches_in_memory(noise_data):
    _, memory, streamed = noise_data
    assert memory.train_images is not None and memory.train_paths is None
    assert streamed.train_images is None and len(streamed.train_paths) == memory.num_train
    assert streamed.val_images is None and len(streamed.val_paths) == memory.num_val
    vm, vs = _batches(val_dataset(memory, 2)), _batches(val_dataset(streamed, 2))
    assert _same(vm, vs) and [len(y) for _, y in vm] == [2, 1]
    assert vm[0][0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([x for x, _ in vm]), memory.val_images)
    streamed.augment = memory.augment = "resized_crop"
    assert _same(
        _batches(train_dataset(memory, 8, seed=1, epochs=2)),
        _batches(train_dataset(streamed, 8, seed=1, epochs=2)),
    )


def test_in_memory_images_of_another_size_are_resized_in_the_pipeline(noise_data):
    _, data, _ = noise_data
    small = ImageData(
        class_names=data.class_names,
        train_images=data.train_images[:, ::2, ::2],
        train_paths=None,
        train_labels=data.train_labels,
        val_images=data.val_images[:, ::2, ::2],
        val_paths=None,
        val_labels=data.val_labels,
        image_size=S,
        augment="none",
    )
    (x, y), *_ = _batches(val_dataset(small, 8))
    assert x.shape == (3, S, S, 3)
    (x, y), *_ = _batches(train_dataset(small, 8, seed=0))
    assert x.shape == (8, S, S, 3)


# -------------------------------------------------------------------------------- CIFAR


@pytest.mark.slow
def test_cifar_offline_and_uncached_is_a_one_line_user_error(tmp_path):
    script = (
        "from keras_attn.data.images import load_image_data\n"
        "from keras_attn.errors import UserError\n"
        "for source in ('cifar100', 'cifar10'):\n"
        "    try:\n"
        "        load_image_data(source, None, None, seed=0)\n"
        "    except UserError as e:\n"
        "        print('USERERROR', e)\n"
    )
    env = dict(os.environ, KERAS_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        env[var] = "http://127.0.0.1:9"  # nothing listens: downloads fail at once, offline or not
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    tail = (
        "could not be downloaded (no network?); "
        "use --data synthetic or --data folder --data-dir DIR"
    )
    lines = [line for line in out.splitlines() if line.startswith("USERERROR")]
    assert lines == [
        f"USERERROR CIFAR-100 is not cached in {tmp_path}/datasets and {tail}",
        f"USERERROR CIFAR-10 is not cached in {tmp_path}/datasets and {tail}",
    ]
    assert "Downloading" not in out  # nothing misleading before the error


def test_cifar_download_failure_in_this_process_is_a_user_error_unless_cached(
    tmp_path, monkeypatch
):
    """The fast twin of the test above: the download fails as it does offline (Keras raises
    from get_file), the error names the cache; a cached but unreadable set shows its error."""
    import keras

    def offline():
        raise Exception("URL fetch failure: [Errno 111] Connection refused")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for module in (keras.datasets.cifar10, keras.datasets.cifar100):
        monkeypatch.setattr(module, "load_data", offline)
    with pytest.raises(UserError) as caught:
        load_image_data("cifar10", None, None, seed=0)
    assert str(caught.value) == (
        f"CIFAR-10 is not cached in {tmp_path}/datasets and could not be downloaded "
        "(no network?); use --data synthetic or --data folder --data-dir DIR"
    )
    (tmp_path / "datasets" / "cifar-100-python-target").mkdir(parents=True)
    with pytest.raises(Exception, match="Connection refused") as caught:
        load_image_data("cifar100", None, None, seed=0)
    assert not isinstance(caught.value, UserError)
