"""Cluttered shapes: a small embedded image dataset where attending to the right region matters.

Each image holds one complete target shape (the class) at a random position, scale
(20-45 % of the side), rotation and colour, on a textured background, plus 3-6 smaller
fragments cut from shapes of OTHER classes. Colours are random for target and clutter,
so the class is neither in the colour nor in global image statistics, only in the
target's outline: the cluttered-MNIST idea with shapes.

Generated once, deterministically from its seed, into
`root/shapes-k{K}-n{train}-{val}-{test}-s{size}-seed{seed}/` as `train/<class>/*.png`,
`val/<class>/*.png`, `test/<class>/*.png` and `boxes.csv` (split, path, label,
class_name, y0, x0, y1, x1: the target's box, normalised). The folder is built under a
temporary name and renamed into place with its `COMPLETE` marker, so an interrupted run
leaves nothing that looks finished.

    python -m keras_attn.data.synthetic_images --sheet /tmp/sheet.png
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import cv2
import numpy as np

from keras_attn.errors import UserError
from keras_attn.files import atomic_directory, atomic_path

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel polygon vertices
_AA = cv2.LINE_AA


def _circle(r: float = 1.0, dx: float = 0.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([dx + r * np.cos(t), r * np.sin(t)], 1)


def _regular(n: int, r: float = 1.0, start: float = -np.pi / 2) -> np.ndarray:
    t = start + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _star() -> np.ndarray:
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = np.stack([x, y + 2.5], 1)
    return p / np.abs(p).max()


_CROSS = np.array(
    [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
     (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]
)  # fmt: skip
_ARROW = np.array(
    [(-1, -0.22), (0.1, -0.22), (0.1, -0.62), (1, 0), (0.1, 0.62), (0.1, 0.22), (-1, 0.22)]
)

# class name -> [(unit polygon, fill)]: drawn in order, fill 1 paints and 0 cuts a hole.
SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_circle(), 1)],
    "square": [(_regular(4, 1.0, np.pi / 4), 1)],
    "triangle": [(_regular(3, 1.1, -np.pi / 2) + [0, 0.25], 1)],
    "cross": [(_CROSS, 1)],
    "star": [(_star(), 1)],
    "ring": [(_circle(), 1), (_circle(0.55), 0)],
    "crescent": [(_circle(), 1), (_circle(0.8, dx=0.45), 0)],
    "arrow": [(_ARROW, 1)],
    "heart": [(_heart(), 1)],
    "bar": [(np.array([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)]), 1)],
}
MAX_CLASSES = len(SHAPES)


def _draw(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage mask (size, size) float32 in [0, 1] of one shape."""
    mask = np.zeros((size, size), np.uint8)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for polygon, fill in SHAPES[shape]:
        points = polygon @ rotation.T * radius + [cx, cy]
        points = np.round(points * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [points], 255 * fill, _AA, _SHIFT)
    return mask.astype(np.float32) / 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field + gradient + finer texture, float32 (size, size, 3)."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = rng.uniform(40, 215, 3)
    for cells, amplitude in ((3, rng.uniform(15, 45)), (size // 6, rng.uniform(5, 20))):
        noise = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * amplitude
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(theta) * ramp[None, :] + np.sin(theta) * ramp[:, None]
    image += gradient[..., None] * rng.uniform(-35, 35, 3).astype(np.float32)
    return image


def _colour(rng: np.random.Generator, against: np.ndarray, min_distance: float) -> np.ndarray:
    """A random RGB colour at least `min_distance` away from `against` (a few tries)."""
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - against) >= min_distance:
            break
    return colour.astype(np.float32)


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    alpha = mask[..., None]
    image *= 1.0 - alpha
    image += alpha * colour


def render(
    rng: np.random.Generator, target: str, classes: list[str], size: int
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One cluttered image (uint8 RGB) with `target`, and the target's normalised box."""
    image = _background(rng, size)
    others = [c for c in classes if c != target]
    for _ in range(rng.integers(3, 7)):  # distractor fragments, drawn first
        radius = rng.uniform(0.11, 0.2) * size
        cx, cy = rng.uniform(0, size, 2)
        mask = _draw(rng.choice(others), size, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        # keep a window of 35-65 % of the shape's extent in each direction
        w, h = rng.uniform(0.7, 1.3, 2) * radius
        x0, y0 = rng.uniform([cx - radius, cy - radius], [cx + radius - w, cy + radius - h])
        window = np.s_[max(0, int(y0)) : max(0, int(y0 + h)), max(0, int(x0)) : max(0, int(x0 + w))]
        colour = _colour(rng, image[int(cy) % size, int(cx) % size], 60)
        _paint(image[window], mask[window], colour)

    radius = rng.uniform(0.10, 0.225) * size  # extent 20-45 % of the side
    cx, cy = rng.uniform(radius, size - radius, 2)
    mask = _draw(target, size, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    ys, xs = np.nonzero(mask > 0.5)
    cover_y, cover_x = np.nonzero(mask)
    region = np.s_[cover_y.min() : cover_y.max() + 1, cover_x.min() : cover_x.max() + 1]
    _paint(image[region], mask[region], _colour(rng, image[ys, xs].mean(0), 110))
    image += rng.standard_normal(image.shape, np.float32) * 5
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    box = (ys.min() / size, xs.min() / size, (ys.max() + 1) / size, (xs.max() + 1) / size)
    return image, box


def dataset_dir(
    root, num_classes, train_per_class, val_per_class, image_size, seed, test_per_class=100
) -> Path:
    counts = f"{train_per_class}-{val_per_class}-{test_per_class}"
    return Path(root) / f"shapes-k{num_classes}-n{counts}-s{image_size}-seed{seed}"


def ensure_synthetic_images(
    root: str | os.PathLike = "data/synthetic",
    num_classes: int = 6,
    train_per_class: int = 400,
    val_per_class: int = 100,
    image_size: int = 64,
    seed: int = 0,
    test_per_class: int = 100,
) -> Path:
    """Generate the cluttered-shapes set unless already complete; return its directory.

    Each image depends only on (seed, split, class, index), so the train and val images
    are the same whatever the test split's size.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise UserError(f"synthetic images support 2 to {MAX_CLASSES} classes, got {num_classes}")
    if min(train_per_class, val_per_class, test_per_class) < 1:
        raise UserError("synthetic images need at least 1 train, val and test image per class")
    if image_size < 16:
        raise UserError(f"synthetic images need an image size of at least 16, got {image_size}")
    final = dataset_dir(
        root, num_classes, train_per_class, val_per_class, image_size, seed, test_per_class
    )
    if (final / "COMPLETE").exists():
        return final
    classes = sorted(list(SHAPES)[:num_classes])  # the order a folder loader gives
    with atomic_directory(final, lambda folder: (folder / "COMPLETE").exists()) as tmp:
        rows = []
        splits = (("train", train_per_class), ("val", val_per_class), ("test", test_per_class))
        for split_id, (split, count) in enumerate(splits):
            for label, name in enumerate(classes):
                (tmp / split / name).mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_id, label, i])
                    image, box = render(rng, name, classes, image_size)
                    rel = f"{split}/{name}/{i:05d}.png"
                    cv2.imwrite(str(tmp / rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                    rows.append([split, rel, label, name, *(f"{v:.6f}" for v in box)])
        with open(tmp / "boxes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["split", "path", "label", "class_name", "y0", "x0", "y1", "x1"])
            writer.writerows(rows)
        (tmp / "COMPLETE").write_text("ok\n")
    return final


def contact_sheet(directory: Path, out: str, per_class: int = 6, scale: int = 2) -> None:
    """Save a grid of val samples (one row per class) with their target boxes drawn."""
    with open(directory / "boxes.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    by_class: dict[str, list[dict]] = {}
    for row in rows:
        by_class.setdefault(row["class_name"], []).append(row)
    lines = []
    for samples in by_class.values():
        tiles = []
        for row in samples[:per_class]:
            tile = cv2.imread(str(directory / row["path"]))
            size = tile.shape[0] * scale
            tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_NEAREST)
            y0, x0, y1, x1 = (round(float(row[k]) * size) for k in ("y0", "x0", "y1", "x1"))
            boxed = tile.copy()
            cv2.rectangle(boxed, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
            tiles += [tile, boxed, np.full((size, 4, 3), 255, np.uint8)]
        lines.append(np.concatenate(tiles, 1))
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), np.concatenate(lines, 0)):
            raise OSError(f"could not write {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", help="also save a contact sheet PNG here")
    args = parser.parse_args()
    start = time.perf_counter()
    directory = ensure_synthetic_images(
        args.root, args.num_classes, args.train_per_class, args.val_per_class,
        args.image_size, args.seed,
    )  # fmt: skip
    print(f"{directory} ready in {time.perf_counter() - start:.1f} s")
    if args.sheet:
        contact_sheet(directory, args.sheet)


if __name__ == "__main__":
    main()
