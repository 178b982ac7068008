"""The embedded cluttered-shapes dataset: layout, determinism, boxes, loading."""

import csv

import cv2
import numpy as np
import pytest

from keras_attn.data.images import load_image_data
from keras_attn.data.synthetic_images import SHAPES, ensure_synthetic_images
from keras_attn.errors import UserError

SMALL = dict(num_classes=3, train_per_class=4, val_per_class=2, test_per_class=3, image_size=32)


def _rows(directory):
    with open(directory / "boxes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_layout_csv_and_marker(tmp_path):
    directory = ensure_synthetic_images(tmp_path, seed=0, **SMALL)
    assert directory == tmp_path / "shapes-k3-n4-2-3-s32-seed0"
    assert (directory / "COMPLETE").exists()
    classes = sorted(list(SHAPES)[:3])
    assert sorted(p.name for p in (directory / "train").iterdir()) == classes
    assert all(name == name.lower() for name in classes)
    rows = _rows(directory)
    assert list(rows[0]) == ["split", "path", "label", "class_name", "y0", "x0", "y1", "x1"]
    splits = [r["split"] for r in rows]
    assert splits.count("val") == 6 and splits.count("test") == 9 and len(rows) == 27
    for row in rows:
        image = cv2.imread(str(directory / row["path"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert row["path"].startswith(f"{row['split']}/{row['class_name']}/")
        assert classes[int(row["label"])] == row["class_name"]
        y0, x0, y1, x1 = (float(row[k]) for k in ("y0", "x0", "y1", "x1"))
        assert 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1
        assert 0.08 <= max(y1 - y0, x1 - x0) <= 0.5  # target spans 20-45 % of the side


def test_generation_is_deterministic_per_seed(tmp_path):
    a = ensure_synthetic_images(tmp_path / "a", seed=7, **SMALL)
    b = ensure_synthetic_images(tmp_path / "b", seed=7, **SMALL)
    c = ensure_synthetic_images(tmp_path / "c", seed=8, **SMALL)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 27 + 2
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "boxes.csv").read_bytes() != (c / "boxes.csv").read_bytes()


def test_the_test_split_leaves_train_and_val_images_as_they_were(tmp_path):
    # The default image run's train and val images must not depend on the test split.
    a = ensure_synthetic_images(tmp_path / "a", **{**SMALL, "test_per_class": 1})
    b = ensure_synthetic_images(tmp_path / "b", **SMALL)
    shared = sorted(p.relative_to(a) for p in a.rglob("*.png") if p.parts[-3] != "test")
    assert len(shared) == 18
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in shared)


def test_complete_set_is_reused_and_half_written_one_regenerated(tmp_path):
    directory = ensure_synthetic_images(tmp_path, **SMALL)
    marker = (directory / "COMPLETE").stat().st_mtime_ns
    assert ensure_synthetic_images(tmp_path, **SMALL) == directory
    assert (directory / "COMPLETE").stat().st_mtime_ns == marker

    (directory / "COMPLETE").unlink()
    (directory / "train" / "junk.txt").write_text("left by a crash")
    ensure_synthetic_images(tmp_path, **SMALL)
    assert (directory / "COMPLETE").exists() and not (directory / "train" / "junk.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [directory.name]  # no temp dirs left


def test_classes_are_not_separable_by_global_colour_statistics(tmp_path):
    directory = ensure_synthetic_images(
        tmp_path, num_classes=6, train_per_class=60, val_per_class=30, image_size=32
    )

    def features(split):
        rows = [r for r in _rows(directory) if r["split"] == split]
        images = np.stack([cv2.imread(str(directory / r["path"])) for r in rows]).astype(float)
        stats = np.concatenate([images.mean((1, 2)), images.std((1, 2))], 1)
        return stats, np.array([int(r["label"]) for r in rows])

    (train_x, train_y), (val_x, val_y) = features("train"), features("val")
    mean, std = train_x.mean(0), train_x.std(0)
    centroids = np.stack([((train_x - mean) / std)[train_y == k].mean(0) for k in range(6)])
    distances = (((val_x - mean) / std)[:, None] - centroids[None]) ** 2
    accuracy = np.mean(distances.sum(-1).argmin(1) == val_y)
    assert accuracy < 0.35  # chance is 1/6


def test_load_synthetic_fills_val_boxes_in_val_order(tmp_path):
    options = dict(num_classes=3, train_per_class=4, val_per_class=2, test_per_class=2)
    data = load_image_data("synthetic", str(tmp_path), None, seed=0, **options)
    assert data.source == "synthetic" and data.image_size == 64 and data.augment == "crop_pad"
    assert data.train_images.shape == (12, 64, 64, 3) and data.num_val == 6
    assert data.num_test == 6 and data.test_boxes.shape == (6, 4)
    directory = tmp_path / "shapes-k3-n4-2-2-s64-seed0"
    val_rows = sorted((r for r in _rows(directory) if r["split"] == "val"), key=lambda r: r["path"])
    expected = [[float(r[k]) for k in ("y0", "x0", "y1", "x1")] for r in val_rows]
    np.testing.assert_allclose(data.val_boxes, expected)
    assert data.val_boxes.dtype == np.float32
    assert data.val_labels.tolist() == [int(r["label"]) for r in val_rows]
    for row, image in zip(val_rows, data.val_images, strict=True):
        on_disk = cv2.cvtColor(cv2.imread(str(directory / row["path"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(image, on_disk)
    streamed = load_image_data(
        "synthetic", str(tmp_path), None, seed=0, memory_limit_gb=0, **options
    )
    np.testing.assert_allclose(streamed.val_boxes, expected)


@pytest.mark.parametrize(
    "options", [dict(num_classes=1), dict(num_classes=len(SHAPES) + 1), dict(image_size=8)]
)
def test_bad_options_are_user_errors(tmp_path, options):
    with pytest.raises(UserError):
        ensure_synthetic_images(tmp_path, **{**SMALL, **options})
