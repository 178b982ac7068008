"""Decode the frames of a sign clip from an MP4 file, choose which frames to keep, feed tf.data.

Frames are decoded with OpenCV (``cv2.VideoCapture`` on its bundled FFmpeg), which reads H.264 and
MPEG-4 Part 2 (``mp4v``). Only the sampled frames are converted and kept: the reader walks the
file with ``grab()`` (demux + decode, no colour conversion) and calls ``retrieve()`` only at the
frames it needs, so memory holds ``num_frames`` small frames, never a whole video.

Frame counts and seeking:

- The container's frame count (``CAP_PROP_FRAME_COUNT``) is used when it is plausible; when it is
  not (0, negative, absurd, as for a raw ``.h264`` stream) the frames are counted by grabbing.
- A jump of more than ``SEEK_AHEAD`` frames uses ``CAP_PROP_POS_FRAMES``; it proved exact on
  H.264 (B-frames, several GOPs, audio track, non-zero start time) and ``mp4v`` files. OpenCV
  seeks by time (frame number / ``CAP_PROP_FPS``, the average rate) and derives the position it
  reports from the landed frame's timestamp, so in a variable frame rate file it lands on another
  frame yet reports the target. Seeking is therefore used only in a file whose packet timestamps
  (read without decoding, once per capture) put every frame ``k`` at ``k`` frame intervals after
  the first; any other file is walked frame by frame. Every seek is checked (the position
  OpenCV reports must be the target); a seek that is not exact, or a file that ends before its
  reported frame count, makes the reader count the decodable frames and read again
  sequentially. A file that decodes clearly fewer frames than it claims (more than
  ``max(3, 5%)`` short: a truncated download) raises ``VideoDecodeError``; a small shortfall (an
  off-by-a-few count) is tolerated and the clip is sampled over the frames that decode.

Frame sampling (``sample_frame_indices``) over a range of ``n`` available frames, ``T`` wanted:

- ``n >= T``: ``"center"`` takes ``T`` consecutive frames starting at ``(n - T) // 2``. The
  range is cut into ``T`` segments ``[i * n // T, (i + 1) * n // T)`` (each at least one frame);
  ``"uniform"`` takes each segment's middle frame ``start + width // 2``; ``"random"`` takes one
  uniformly random frame of each segment (training augmentation; needs an ``rng``).
- ``n < T`` (every mode): every frame once, in order, then the last frame repeated to fill ``T``;
  the mask is False on the repeated frames.

Unreadable files (missing, empty, not a video, audio only, truncated, undecodable frames, a frame
range or crop box that selects nothing, a header that claims far more frames than decode) raise
``VideoDecodeError``. ``scan_clips`` decides every clip's fate once, in parallel, before
training: it reaches each file's last claimed frame (a seek plus up to a GOP of decoding), skips,
names and counts the bad ones, and records each good clip's verified ``frame_count``. Every
reader (calibration, feature cache, the decoding pipeline) samples from that count, so steps per
epoch are fixed before the first one and a scanned clip reads the same frames on every path.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np
import tensorflow as tf

from keras_attn.data.order import epoch_dataset

if TYPE_CHECKING:
    from keras_attn.data.wlasl import ClipRecord

log = logging.getLogger(__name__)

SAMPLING_MODES = ("center", "uniform", "random")
SEEK_AHEAD = 64  # seek with CAP_PROP_POS_FRAMES only when the next needed frame is this far ahead
MAX_PLAUSIBLE_FRAMES = 10_000_000  # a larger CAP_PROP_FRAME_COUNT is garbage: count by grabbing

_END = object()
_T = TypeVar("_T")
_R = TypeVar("_R")


class VideoDecodeError(Exception):
    """A clip that cannot be read: ``path`` and a short ``reason``."""

    def __init__(self, path: str, reason: str):
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def sample_frame_indices(
    num_available: int, num_frames: int, mode: str, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which of `num_available` frames (offsets from the range start) to take; see module doc.

    Returns:
        `(indices, mask)`: int32 `(num_frames,)` non-decreasing offsets and bool `(num_frames,)`,
        False where a short range was padded by repeating its last frame.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; valid: {', '.join(SAMPLING_MODES)}")
    if mode == "random" and rng is None:
        raise ValueError('sampling mode "random" needs an rng (np.random.Generator)')
    n, t = int(num_available), int(num_frames)
    if n < 1 or t < 1:
        raise ValueError(f"need at least one frame (num_available={n}, num_frames={t})")
    mask = np.ones(t, dtype=bool)
    if n < t:
        indices = np.minimum(np.arange(t), n - 1)
        mask[n:] = False
    elif mode == "center":
        indices = (n - t) // 2 + np.arange(t)
    else:
        bounds = np.arange(t + 1) * n // t
        starts, widths = bounds[:-1], np.diff(bounds)
        offset = widths // 2 if mode == "uniform" else rng.integers(0, widths)
        indices = starts + offset
    return indices.astype(np.int32), mask


class _Unreachable(Exception):
    """A needed frame cannot be reached: the file ends early or a seek was not exact."""


def _reported_count(cap: cv2.VideoCapture) -> int | None:
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    if math.isfinite(count) and 1 <= count <= MAX_PLAUSIBLE_FRAMES:
        return int(round(count))
    return None


def _seek(cap: cv2.VideoCapture, index: int) -> bool:
    """Positions `cap` so the next grab returns frame `index`; False if OpenCV lands elsewhere."""
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    return int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) == index


def _evenly_timed(path: str) -> bool:
    """Whether frame `k` (presentation order) is `k / CAP_PROP_FPS` after the first, for every `k`.

    Only then does OpenCV's time-based seek land on the frame number asked for. Reads the
    packets' timestamps in raw mode (demux only, no decoding: milliseconds per clip).
    """
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not (cap.isOpened() and math.isfinite(fps) and fps > 0):
            return False
        if not cap.set(cv2.CAP_PROP_FORMAT, -1):  # no raw mode: cannot tell, so never seek
            return False
        times = []
        while cap.grab():
            times.append(cap.get(cv2.CAP_PROP_POS_MSEC))
    finally:
        cap.release()
    if not times:
        return False
    # Packets come in decode order (B-frames): sort to get presentation order. A quarter frame
    # of slack absorbs timestamps rounded to the container's time base.
    offsets = (np.sort(times) - min(times)) * fps / 1000.0
    return bool(np.all(np.abs(offsets - np.arange(len(offsets))) < 0.25))


class _Capture:
    """A `cv2.VideoCapture` that tracks the index of the frame the next `grab()` returns."""

    def __init__(self, path: str):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise VideoDecodeError(self.path, "file not found")
        if os.path.getsize(self.path) == 0:
            raise VideoDecodeError(self.path, "empty file")
        self.cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            self.cap.release()
            raise VideoDecodeError(
                self.path, "cannot open as a video (not a video, no video stream, or truncated)"
            )
        self.pos = 0
        self._seekable: bool | None = None  # _evenly_timed, checked at the first far jump

    def __enter__(self) -> _Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.cap.release()

    def reported_count(self) -> int | None:
        return _reported_count(self.cap)

    def count_remaining(self) -> int:
        """Grabs to the end; returns the total number of frames (the capture is then spent)."""
        while self.cap.grab():
            self.pos += 1
        return self.pos

    def seekable(self) -> bool:
        if self._seekable is None:
            self._seekable = _evenly_timed(self.path)
        return self._seekable

    def skip_to(self, index: int, allow_seek: bool) -> None:
        if allow_seek and index - self.pos > SEEK_AHEAD and self.seekable():
            if not _seek(self.cap, index):
                raise _Unreachable
            self.pos = index
        while self.pos < index:
            if not self.cap.grab():
                raise _Unreachable
            self.pos += 1

    def read(self) -> np.ndarray:
        """Decodes the frame at `pos` (BGR)."""
        if not self.cap.grab():
            raise _Unreachable
        ok, frame = self.cap.retrieve()
        if not ok or frame is None or frame.size == 0:
            raise VideoDecodeError(self.path, f"cannot decode frame {self.pos}")
        self.pos += 1
        return frame


def _count_frames(path: str) -> int:
    with _Capture(path) as cap:
        count = cap.count_remaining()
    if count == 0:
        raise VideoDecodeError(path, "no decodable frames")
    return count


def probe_video(path: str) -> tuple[int | None, float | None]:
    """`(frame count, fps)` of a file from its header, or `(None, None)` if it does not open.

    The count is the header's when plausible, else counted by grabbing. Used before the scan
    to settle how a WLASL index's frame numbers apply to a file (trimmed clip or whole video,
    raw-video frame rate); the scan still decides whether the clip is readable.
    """
    try:
        with _Capture(path) as cap:
            fps = cap.cap.get(cv2.CAP_PROP_FPS)
            count = cap.reported_count()
            if count is None:
                count = cap.count_remaining() or None
    except VideoDecodeError:
        return None, None
    return count, (float(fps) if math.isfinite(fps) and fps > 0 else None)


def _check_shortfall(path: str, claimed: int, actual: int) -> None:
    if claimed - actual > max(3, claimed // 20):
        raise VideoDecodeError(path, f"only {actual} of {claimed} frames decode (truncated file?)")


def resolve_frame_range(record: ClipRecord, num_available: int) -> tuple[int, int]:
    """The clip's 0-based inclusive `(first, last)` frames in a file of `num_available` frames.

    `frame_end` None means the file's last frame; a `frame_end` past it is clamped.
    """
    last = num_available - 1
    start = int(record.frame_start)
    end = last if record.frame_end is None else min(int(record.frame_end), last)
    if start < 0:
        raise VideoDecodeError(record.path, f"negative frame_start {start}")
    if start > last:
        raise VideoDecodeError(record.path, f"frame_start {start} is past the last frame {last}")
    if end < start:
        raise VideoDecodeError(record.path, f"empty frame range {start}..{record.frame_end}")
    return start, end


def _crop_box(record: ClipRecord, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The record's bbox clipped to the frame, as slice bounds (x1, y1, x2, y2), x2/y2 exclusive."""
    if record.bbox is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in record.bbox)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 <= x1 or y2 <= y1:
        raise VideoDecodeError(
            record.path, f"bbox {tuple(record.bbox)} selects nothing of the {width}x{height} frame"
        )
    return x1, y1, x2, y2


def _to_rgb(frame: np.ndarray, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    if box is not None:
        x1, y1, x2, y2 = box
        frame = frame[y1:y2, x1:x2]
    frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def read_clip_frames(
    record: ClipRecord,
    num_frames: int,
    mode: str,
    image_size: int,
    rng: np.random.Generator | None = None,
    crop_bbox: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decodes the sampled frames of one clip.

    Args:
        record: the clip (path, 0-based inclusive frame range, optional bbox).
        num_frames: frames per clip `T`.
        mode: "center" | "uniform" | "random" (see `sample_frame_indices`).
        image_size: output side `S`; frames are resized (cv2.INTER_AREA) to `S x S`.
        rng: required for "random".
        crop_bbox: crop to `record.bbox` (clipped to the frame, x2/y2 exclusive) before resizing.

    Returns:
        `(frames, mask, frame_indices)`: uint8 RGB `(T, S, S, 3)`, bool `(T,)` (False on padding
        of a clip shorter than `T`), int32 `(T,)` frame numbers in the file.

    Raises:
        VideoDecodeError: the file cannot be read, or the range/bbox selects nothing.
    """
    path = record.path
    count = record.frame_count
    with _Capture(path) as cap:
        if count is None:
            count = cap.reported_count()
        if count is not None:
            sampled = _sample(record, count, num_frames, mode, rng)
            try:
                return _read(cap, record, sampled, image_size, crop_bbox, allow_seek=True)
            except _Unreachable:
                pass
    if record.frame_count is None:
        # Not scanned, and no plausible frame count, or the file ends before it, or a seek
        # was not exact: count the frames by grabbing, then read sequentially.
        claimed = count
        count = _count_frames(path)
        if claimed is not None:
            _check_shortfall(path, claimed, count)
        if count != claimed:
            sampled = _sample(record, count, num_frames, mode, rng)
        changed = "the file changed while being read"
    else:  # the scan decoded these frames: only a seek missed, so read sequentially
        changed = (
            f"ends before frame {int(sampled[0].max())} although the scan decoded "
            f"{count} frames: the file changed since the scan"
        )
    with _Capture(path) as cap:
        try:
            return _read(cap, record, sampled, image_size, crop_bbox, allow_seek=False)
        except _Unreachable:
            raise VideoDecodeError(path, changed) from None


def _sample(record, count, num_frames, mode, rng) -> tuple[np.ndarray, np.ndarray]:
    start, end = resolve_frame_range(record, count)
    offsets, mask = sample_frame_indices(end - start + 1, num_frames, mode, rng)
    return (start + offsets).astype(np.int32), mask


def _read(cap: _Capture, record, sampled, image_size, crop_bbox, allow_seek):
    indices, mask = sampled
    decoded: dict[int, np.ndarray] = {}
    box = None
    for index in sorted(set(indices.tolist())):
        cap.skip_to(index, allow_seek)
        frame = cap.read()
        if crop_bbox and not decoded:
            box = _crop_box(record, frame.shape[1], frame.shape[0])
        decoded[index] = _to_rgb(frame, box, image_size)
    frames = np.stack([decoded[i] for i in indices.tolist()])
    return frames, mask, indices


def check_clip(record: ClipRecord, crop_bbox: bool = False) -> int:
    """Decides whether `read_clip_frames` can read the clip, and how many frames it has.

    Opens the file, decodes its first frame (and checks the crop box on it), then reaches
    the last frame its header claims: by a seek where the frames are evenly timed, else by
    decoding through. That finds files truncated after their index (moov atom first), whose
    header claims frames that never decode: more than `max(3, 5%)` missing is a rejection,
    fewer and the decoded count is the clip's length. Costs up to a GOP of decoding per clip
    (the whole clip at a variable frame rate).

    Returns the number of decodable frames. Raises `VideoDecodeError` for a clip that
    cannot be read or whose frame range or crop box selects nothing.
    """
    path = record.path
    with _Capture(path) as cap:
        claimed = cap.reported_count()
        try:
            first = cap.read()
        except _Unreachable:
            raise VideoDecodeError(path, "no decodable frames") from None
        if claimed is None:
            count = cap.count_remaining()
        else:
            count = claimed
            try:
                if claimed > 1:
                    cap.skip_to(claimed - 1, allow_seek=True)
                    cap.read()
            except _Unreachable:
                count = None
    if count is None:
        count = _count_frames(path)
        _check_shortfall(path, claimed, count)
    if crop_bbox:
        _crop_box(record, first.shape[1], first.shape[0])
    resolve_frame_range(record, count)
    return count


def ordered_map(
    fn: Callable[[_T], _R], items: Iterable[_T], workers: int | None = None
) -> Iterator[_R]:
    """`map(fn, items)` on a thread pool, in order, with at most `2 * workers` results pending."""
    workers = workers or default_workers()
    window = 2 * workers
    iterator = iter(items)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(iterator, window))
        while pending:
            result = pending.popleft().result()
            item = next(iterator, _END)
            if item is not _END:
                pending.append(pool.submit(fn, item))
            yield result


def default_workers() -> int:
    """Threads for decoding (cv2 releases the GIL while decoding)."""
    return min(16, 2 * (os.cpu_count() or 1))


def scan_clips(
    records: Sequence[ClipRecord],
    crop_bbox: bool = False,
    workers: int | None = None,
) -> tuple[list[ClipRecord], list[dict]]:
    """Decides every clip's fate once, with `check_clip`, in parallel threads, before training.

    Returns:
        `(readable, skipped)`: the readable records in their original order, each with its
        verified `frame_count` (which every later read samples from), and one
        `{"path", "reason"}` per unreadable clip (each also logged as one warning line).
    """

    def check(record):
        try:
            return check_clip(record, crop_bbox=crop_bbox)
        except VideoDecodeError as err:
            return err

    records = list(records)
    readable, skipped = [], []
    for record, result in zip(records, ordered_map(check, records, workers), strict=True):
        if isinstance(result, VideoDecodeError):
            log.warning("skipping unreadable clip %s: %s", result.path, result.reason)
            skipped.append({"path": result.path, "reason": result.reason})
        else:
            readable.append(dataclasses.replace(record, frame_count=result))
    return readable, skipped


def clip_dataset(
    records: Sequence[ClipRecord],
    num_frames: int,
    mode: str,
    image_size: int,
    seed: int,
    training: bool,
    batch_size: int | None = None,
    crop_bbox: bool = False,
    start_epoch: int = 0,
    epochs: int = 1,
) -> tf.data.Dataset:
    """Decoded clips as `((frames float32 (T,S,S,3) in [0, 255], mask bool (T,)), label int32)`.

    Clips are decoded in parallel (`tf.numpy_function(stateful=False)` in a deterministic
    parallel map). Training covers epochs `start_epoch .. epochs - 1` back to back, each
    shuffled by `[seed, epoch]` and, with `batch_size`, batched on its own (last batch may be
    short: `ceil(len(records) / batch_size)` batches per epoch); "random" sampling draws from
    an rng seeded by `(seed, epoch, clip index)`. Evaluation is one pass in record order.
    Frames are raw RGB; backbone preprocessing belongs to the model. Run `scan_clips` first:
    a clip that fails here stops the pipeline with its `VideoDecodeError` message.
    """
    records = list(records)
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; valid: {', '.join(SAMPLING_MODES)}")
    if mode == "random" and not training:
        raise ValueError('sampling mode "random" is for training; evaluate with "uniform"')
    labels = np.array([r.label for r in records], dtype=np.int32)
    t, s = int(num_frames), int(image_size)

    def load(index, epoch):
        index, epoch = int(index), int(epoch)
        rng = np.random.default_rng([seed, epoch, index]) if mode == "random" else None
        frames, mask, _ = read_clip_frames(records[index], t, mode, s, rng, crop_bbox)
        return frames, mask, labels[index]

    def example(index, epoch):
        frames, mask, label = tf.numpy_function(
            load, [index, epoch], [tf.uint8, tf.bool, tf.int32], stateful=False
        )
        frames = tf.cast(tf.ensure_shape(frames, (t, s, s, 3)), tf.float32)
        return (frames, tf.ensure_shape(mask, (t,))), tf.ensure_shape(label, ())

    def build_epoch(indices, epoch):
        ds = indices.map(
            lambda i: example(i, epoch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return ds.batch(batch_size) if batch_size else ds

    ds = epoch_dataset(len(records), seed, training, start_epoch, epochs, build_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)
