"""Bad and unusual image files (issue 7): each decodes to what a viewer shows, or is skipped,
named and counted; labels stay with their files; a run with bad files trains to the end.

Every file is generated here (no committed binaries). Class "a" is drawn in red and class
"b" in blue, so an image that ended up with the wrong label would show the wrong colour.
"""

import io
import json
import logging
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from cli_runner import run_cli
from PIL import Image, ImageOps

from keras_attn.data.image_files import decode, load_image
from keras_attn.data.images import load_image_data

S = 16
COLOURS = {"a": (220, 30, 30), "b": (30, 40, 200)}
BLACK, WHITE, GREEN = (0, 0, 0), (255, 255, 255), (20, 200, 40)
BAD = ("empty.jpg", "text.jpg", "truncated.jpg", "truncated.png")


def _grey(colour) -> int:
    return Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0))


def _quadrants(colour) -> np.ndarray:
    """A 20 x 40 (H x W) image whose four quadrants differ, so every turn and flip shows."""
    image = np.empty((20, 40, 3), np.uint8)
    image[:10, :20], image[:10, 20:] = colour, BLACK
    image[10:, :20], image[10:, 20:] = WHITE, GREEN
    return image


def _jpeg(array: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=95, **options)
    return out.getvalue()


def _exif_jpeg(array: np.ndarray, orientation: int) -> bytes:
    """JPEG with an EXIF Orientation as pillow writes it: big-endian, after the JFIF header."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(array, exif=exif)


def _handmade_exif_jpeg(array: np.ndarray, orientation: int) -> bytes:
    """JPEG with a little-endian EXIF block right after SOI (as cameras write it), where
    Orientation is IFD0's second tag, after Make."""
    entries = struct.pack("<HHI4s", 0x010F, 2, 4, b"abc\0")  # Make, ASCII, 4 bytes inline
    entries += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # Orientation, SHORT
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 2) + entries + b"\0" * 4
    body = b"Exif\0\0" + tiff
    plain = _jpeg(array)
    return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + plain[2:]


_decode_graph = tf.function(decode)  # as inside tf.data, where static shapes are unknown


def _decoded(contents: bytes) -> np.ndarray:
    return _decode_graph(tf.constant(contents)).numpy()


# ----------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("writer", [_exif_jpeg, _handmade_exif_jpeg])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_shows_it(orientation, writer):
    image = _quadrants(COLOURS["a"])
    decoded = _decoded(writer(image, orientation))
    # Pillow's own turn of the pixels TF decodes when there is no EXIF (decoders differ by a
    # few levels at edges, so comparing with pillow's decode would not be exact).
    stored = Image.fromarray(_decoded(_jpeg(image)))
    stored.getexif()[0x0112] = orientation
    viewed = np.asarray(ImageOps.exif_transpose(stored))
    assert decoded.shape == viewed.shape == ((40, 20, 3) if orientation >= 5 else (20, 40, 3))
    np.testing.assert_array_equal(decoded, viewed)


ORIENTATION_6 = b"\x01\x12\0\x03\0\0\0\x01\0\x06"  # as pillow writes it: tag, SHORT, 1, 6


@pytest.mark.parametrize(
    "old, new, turned",
    [
        (b"MM\0*\0\0\0\x08", b"MM\0*\x7f\xff\xff\xff", False),
        (ORIENTATION_6, ORIENTATION_6[:-1] + b"\x09", False),
        (b"MM\0*\0\0\0\x08\0\x01", b"MM\0*\0\0\0\x08\xff\xff", True),  # 64 are read
        (b"\xff\xe1", b"\xff\xfe", False),
    ],
    ids=["ifd0-past-the-end", "orientation-9", "65535-tags", "exif-in-a-comment-segment"],
)
def test_corrupt_exif_neither_fails_nor_hangs(old, new, turned):
    image = _quadrants(COLOURS["a"])
    good = _exif_jpeg(image, 6)
    contents = good.replace(old, new, 1)
    assert contents != good
    start = time.perf_counter()
    decoded = _decoded(contents)
    assert time.perf_counter() - start < 10
    expected = _decoded(good if turned else _jpeg(image))
    assert decoded.shape == expected.shape and np.abs(decoded.astype(int) - expected).max() <= 2


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 300, 128 * 257, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")  # mode I;16
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    decoded = _decoded((tmp_path / "grey16.png").read_bytes())
    assert decoded[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (decoded == decoded[..., :1]).all()


# ------------------------------------------------------------------ a corpus of every case


def _corpus(folder: Path, colour, big: bool) -> dict:
    """Write every case in `colour` into `folder`; returns name -> expected image (S, S, 3)
    at image size S (None for a file that must be skipped)."""
    folder.mkdir(parents=True)
    flat = np.full((S, S, 3), colour, np.uint8)
    grey = np.full((S, S, 3), _grey(colour), np.uint8)
    rgb = Image.new("RGB", (S, S), colour)
    other = Image.new("RGB", (S, S), (9, 99, 199))

    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "truncated.jpg").write_bytes(_jpeg(np.asarray(rgb))[:-200])
    rgb.save(folder / "plain.png")
    png = (folder / "plain.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])

    rgb.convert("CMYK").save(folder / "cmyk.jpg", quality=95)  # with an Adobe marker
    assert Image.open(folder / "cmyk.jpg").mode == "CMYK"
    rgb.convert("L").save(folder / "grey.png")
    rgb.convert("L").save(folder / "grey.jpg", quality=95)
    # 16 bits with a low byte unlike the high one: taking the wrong byte would show.
    bgr16 = np.array(colour[::-1], np.uint16) * 256 + 200
    cv2.imwrite(str(folder / "rgb16.png"), np.broadcast_to(bgr16, (S, S, 3)).copy())
    Image.fromarray(np.full((S, S), _grey(colour) * 256 + 200, np.uint16)).save(
        folder / "grey16.png"
    )
    palette = Image.new("P", (S, S), 3)
    palette.putpalette([9, 99, 199] * 3 + list(colour) + [255, 255, 255] * 252)
    palette.save(folder / "palette.png")
    Image.new("RGBA", (S, S), (*colour, 128)).save(folder / "rgba.png")  # alpha dropped
    rgb.save(folder / "anim.gif", save_all=True, append_images=[other], duration=50)
    assert Image.open(folder / "anim.gif").n_frames == 2
    Image.new("RGB", (1, 1), colour).save(folder / "one.png")
    for orientation in (6, 8):
        (folder / f"exif{orientation}.jpg").write_bytes(_exif_jpeg(_quadrants(colour), orientation))
    expected = {
        **dict.fromkeys(BAD),
        **dict.fromkeys(["plain.png", "cmyk.jpg", "rgb16.png", "palette.png"], flat),
        **dict.fromkeys(["rgba.png", "anim.gif", "one.png"], flat),
        **dict.fromkeys(["grey.png", "grey.jpg", "grey16.png"], grey),
        # As viewers show them: 6 turned clockwise (left edge to the top), 8 anticlockwise.
        "exif6.jpg": _grid([[WHITE, colour], [GREEN, BLACK]]),
        "exif8.jpg": _grid([[BLACK, GREEN], [colour, WHITE]]),
    }
    if big:  # flat colour compresses to a few hundred KB, decodes to 108 MB
        Image.new("RGB", (6000, 6000), colour).save(folder / "big.png")
        Image.new("RGB", (6000, 6000), colour).save(folder / "big.jpg", quality=90)
        expected.update({"big.png": flat, "big.jpg": flat})
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    return expected


def _grid(quadrants) -> np.ndarray:
    return np.asarray(quadrants, np.uint8).repeat(S // 2, 0).repeat(S // 2, 1)


def _matches(image: np.ndarray, expected: np.ndarray, name: str) -> bool:
    """Same at the centre of each quadrant (a resize blurs the borders between them)."""
    tolerance = 10 if name.endswith(".jpg") else 1
    points = [S // 4, 3 * S // 4]
    diff = image[points][:, points].astype(int) - expected[points][:, points]
    return image.shape == (S, S, 3) and np.abs(diff).max() <= tolerance


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_images")
    expected = {}
    for split in ("train", "val"):
        for name, colour in COLOURS.items():
            folder = root / split / name
            for file, image in _corpus(folder, colour, big=split == "train").items():
                expected[str(folder / file)] = image
    return root, expected


def test_every_case_is_decoded_right_or_skipped_and_named(corpus, caplog):
    root, expected = corpus
    bad = sorted(p for p, image in expected.items() if image is None)
    with caplog.at_level(logging.WARNING):
        start = time.perf_counter()
        data = load_image_data("folder", str(root), S, seed=0)
        seconds = time.perf_counter() - start
    assert seconds < 120  # four 6000 x 6000 images take a few seconds, not minutes
    assert data.class_names == ["a", "b"]
    assert sorted(s["path"] for s in data.skipped_files) == bad
    warnings = " ".join(r.getMessage() for r in caplog.records)
    for skipped in data.skipped_files:
        reason = skipped["reason"]
        assert reason and "\n" not in reason and "{{" not in reason, skipped
        assert skipped["path"] in warnings
    assert data.num_train + data.num_val + len(bad) == len(expected)

    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("val", data.val_images, data.val_labels),
    ):
        # Within a split, files are read class by class in sorted order; kept ones stay so.
        kept = sorted(p for p in expected if f"/{split}/" in p and expected[p] is not None)
        assert len(kept) == len(images) == len(labels)
        for path, image, label in zip(kept, images, labels, strict=True):
            name = Path(path).name
            assert data.class_names[label] == Path(path).parent.name, path
            assert _matches(image, expected[path], name), (
                f"{path}: got {image[S // 4, S // 4]} {image[3 * S // 4, 3 * S // 4]}"
            )
            # The decoded content agrees with the label: class a red, class b blue.
            if not name.startswith("exif"):
                reference = _grey if name.startswith("grey") else lambda c: c
                colour = reference(COLOURS[data.class_names[label]])
                assert np.abs(image[S // 2, S // 2].astype(int) - colour).max() <= 10


def test_streamed_loading_skips_the_same_files_and_keeps_labels(corpus):
    root, expected = corpus
    data = load_image_data("folder", str(root), S, seed=0, memory_limit_gb=0)
    assert data.train_images is None
    assert sorted(s["path"] for s in data.skipped_files) == sorted(
        p for p, image in expected.items() if image is None
    )
    for paths, labels in ((data.train_paths, data.train_labels), (data.val_paths, data.val_labels)):
        for path, label in zip(paths.tolist(), labels, strict=True):
            assert data.class_names[label] == Path(path).parent.name
    for path in data.val_paths.tolist():  # decoded as the streaming pipeline decodes them
        image = load_image(tf.constant(path), S).numpy()
        assert _matches(image, expected[path], Path(path).name), path


# ------------------------------------------------------------------------ a whole run


@pytest.mark.slow
def test_a_run_with_one_file_in_five_bad_trains_to_the_end(tmp_path):
    Image.new("RGB", (24, 24), (1, 2, 3)).save(tmp_path / "x.png")
    png = (tmp_path / "x.png").read_bytes()
    broken = {
        "train/a/empty.jpg": b"",
        "train/a/text.jpg": b"not an image",
        "train/b/empty.jpg": b"",
        "train/b/text.jpg": b"not an image",
        "val/a/truncated.png": png[: len(png) // 2],
    }
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 4)):
        for name, colour in COLOURS.items():
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(-20, 20, (24, 24, 3))
                image = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i}.png")
    for rel, content in broken.items():
        (tmp_path / "data" / rel).write_bytes(content)
    bad = [f"data/{rel}" for rel in broken]
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert len(files) == 25 and len(bad) == 5  # one file in five is bad
    args = ["--data", "folder", "--data-dir", "data", "--image-size", "32"]
    args += ["--epochs", "2", "--batch-size", "8", "--run-dir", "run"]
    done = run_cli("train_image.py", args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "5 unreadable files skipped" in done.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["num_train"] == 12 and summary["num_val"] == 8
    assert sorted(s["path"] for s in summary["skipped_files"]) == sorted(bad)
    assert all(s["reason"] for s in summary["skipped_files"])
    for path in bad:
        assert path in done.stderr  # the warning names each file
