"""Read a WLASL index into clip records: which videos exist, their labels, splits and frame ranges.

Two index formats are understood, detected by content:

- ``WLASL_v0.3.json``: a list of ``{"gloss": ..., "instances": [...]}``; an instance has
  ``video_id`` (string), ``split``, ``frame_start`` (1-based), ``frame_end`` (-1 = last frame,
  inclusive otherwise) and optionally ``signer_id`` and ``bbox`` [x1, y1, x2, y2].
- ``nslt_{100,300,1000,2000}.json``: ``{video_id: {"subset": split, "action": [class_id, start,
  end]}}`` with the class names in ``wlasl_class_list.txt`` (lines ``class_id<TAB>gloss``).

Clips live at ``<data_dir>/videos/<video_id>.mp4``. Most WLASL downloads lack many videos, so a
missing file is counted, never an error. Entries that cannot be used (an id that would leave
``videos/``, a bad frame range, an unknown class id, a repeated id: the first entry of an id
decides, even when it is itself rejected) are listed in ``WlaslIndex.rejected`` with the
reason; a file that cannot be read as an index at all raises ``UserError`` with one line naming
the file.

Frame ranges are converted to 0-based inclusive: ``frame_start`` 1 -> 0, ``frame_end`` -1 -> None
(to the last frame), ``frame_end`` n -> n - 1.

Clips are read as WLASL's ``start_kit/preprocess.py`` wrote them. For an instance whose ``url``
is YouTube's it writes only the raw video's frames ``frame_start - 1 .. frame_end - 1`` (a
``frame_end`` of -1 copies the raw video whole): the clip *is* the sign, while the index's frame
numbers count in the raw video. Every other source is copied whole and its range applies inside
the file. So a trimmed clip reads frames ``0 .. frame_end - frame_start`` of its file, as WLASL's
own loader (``code/I3D/datasets/nslt_dataset.py``) reads every word-level clip from frame 0.
``WLASL_v0.3.json`` says which instances are YouTube's (``url``, else ``source``); an nslt index
does not, so there an instance whose range does not fit in its file (read from the header) is
taken as trimmed. With ``raw_videos`` the clips are cut from the raw downloads instead
(``<raw>/<YouTube id>.mp4`` for YouTube's, ``<raw>/<video_id>.mp4`` otherwise), the annotated
frames, counted at the instance's ``fps`` (25), mapped to the file's own frame rate by time
(dxli94/WLASL#16). ``ClipRecord.layout`` says which case a clip is; the index counts each.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from keras_attn.data.video import probe_video
from keras_attn.errors import UserError

SPLITS = ("train", "val", "test")
CLASS_ORDERS = ("frequency", "alphabetical", "index")
SPLIT_MODES = ("index", "signer-independent")
LAYOUTS = ("trimmed", "whole_file", "raw_cut")
ANNOTATION_FPS = 25.0  # WLASL's frame numbers count at 25 fps unless an instance says otherwise
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
V03_NAME = "WLASL_v0.3.json"
CLASS_LIST_NAME = "wlasl_class_list.txt"
NSLT_SIZES = (100, 300, 1000, 2000)
MAX_REJECTED_IN_SUMMARY = 200


@dataclass(frozen=True)
class ClipRecord:
    """One usable clip: an existing video file, its label and the frames that hold the sign."""

    video_id: str
    path: str  # absolute path of videos/<video_id>.mp4 (exists)
    label: int  # index into WlaslIndex.class_names
    split: str  # "train" | "val" | "test"
    frame_start: int  # 0-based, inclusive
    frame_end: int | None  # 0-based, inclusive; None = to the last frame
    bbox: tuple[int, int, int, int] | None  # x1, y1, x2, y2 in pixels
    signer_id: int | None
    # Decodable frames in the file, as `video.scan_clips` verified them (None: not scanned).
    # Every reader samples from this count, so a clip reads the same frames on every path.
    frame_count: int | None = None
    # How the index's frame numbers were applied to the file (see the module doc):
    # "trimmed" (the file holds only the sign), "whole_file" (the range lies inside it) or
    # "raw_cut" (cut from a raw download, annotated frames mapped by time).
    layout: str = "whole_file"


@dataclass
class WlaslIndex:
    """The selected classes and their available clips, plus what was skipped and why.

    ``missing`` counts, per split name, the index entries of the *selected* classes whose video
    file is absent; ``missing_all`` counts the same over the whole index (every class).
    ``unknown_splits`` counts entries whose split is none of train/val/test (they are ignored).
    ``val`` holds the clips of split ``val_split`` (``"val"`` by default) and ``test`` those of
    the ``test`` split, scored once after training and never used for a choice. With
    ``val_split`` ``"test"`` (as in the original study, which validated on it) ``test`` is
    empty: there is no separate test split left to score.
    """

    class_names: list[str]
    train: list[ClipRecord]
    val: list[ClipRecord]
    missing: dict[str, int]
    rejected: list[dict]
    index_file: str
    val_split: str = "val"
    test: list[ClipRecord] = field(default_factory=list)
    missing_all: dict[str, int] = field(default_factory=dict)
    unknown_splits: dict[str, int] = field(default_factory=dict)
    # How clip layouts were told apart: "url" (WLASL_v0.3.json), "range" (nslt index),
    # "raw-videos" (cut from raw downloads).
    layout_rule: str = "url"
    split_mode: str = "index"
    signer_split: dict | None = None  # with split_mode "signer-independent": counts, seed

    def layouts(self) -> dict[str, dict[str, int]]:
        """Per split, how many selected clips are trimmed, whole files or cut from raw videos."""
        clips = {"train": self.train, "val": self.val, "test": self.test}
        return {
            split: {kind: sum(r.layout == kind for r in records) for kind in LAYOUTS}
            for split, records in clips.items()
        }

    def summary_line(self) -> str:
        """One line for the console: classes, clips per split, missing videos, rejected entries."""
        missing = ", ".join(f"{s} {self.missing.get(s, 0)}" for s in SPLITS)
        if self.val_split == "val":
            held_out = f"val {len(self.val)} clips, test {len(self.test)} clips"
        else:
            held_out = (
                f"val ({self.val_split} split) {len(self.val)} clips, "
                "no separate test split (nothing is scored on test)"
            )
        line = (
            f"{Path(self.index_file).name}: {len(self.class_names)} classes, "
            f"train {len(self.train)} clips, {held_out}; "
            f"missing videos: {missing} (whole index: {sum(self.missing_all.values())})"
        )
        totals = Counter()
        for counts in self.layouts().values():
            totals.update(counts)
        line += (
            "; clips "
            + ", ".join(
                f"{kind.replace('_', ' ')} {totals[kind]}" for kind in LAYOUTS if totals[kind]
            )
            + f" (told apart by {self.layout_rule})"
        )
        if self.signer_split:
            signers = self.signer_split["signers"]
            line += (
                f"; re-split by signer (seed {self.signer_split['seed']}): signers "
                + ", ".join(f"{s} {signers[s]}" for s in SPLITS)
                + f", {self.signer_split['no_signer_id']} entries without signer_id left out"
            )
        if self.rejected:
            line += f"; rejected entries: {len(self.rejected)}"
        if self.unknown_splits:
            unknown = ", ".join(f"{k!r} {v}" for k, v in sorted(self.unknown_splits.items()))
            line += f"; ignored splits: {unknown}"
        return line

    def over_whole_clips(self) -> WlaslIndex:
        """The same clips with every frame range widened to the whole file.

        Frames are then sampled from the lead-in and tail too, so a temporal model
        has to find the sign; the annotated ranges stay in this (original) index.
        """
        return replace(
            self,
            train=[replace(r, frame_start=0, frame_end=None) for r in self.train],
            val=[replace(r, frame_start=0, frame_end=None) for r in self.val],
            test=[replace(r, frame_start=0, frame_end=None) for r in self.test],
        )

    def to_summary(self) -> dict:
        """JSON-able description for a run's summary.json."""
        return {
            "index_file": self.index_file,
            "val_split": self.val_split,
            "num_classes": len(self.class_names),
            "class_names": list(self.class_names),
            "clips": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "clips_per_class": {
                "train": _per_class(self.train, len(self.class_names)),
                "val": _per_class(self.val, len(self.class_names)),
                "test": _per_class(self.test, len(self.class_names)),
            },
            "missing": dict(self.missing),
            "missing_all": dict(self.missing_all),
            "unknown_splits": dict(self.unknown_splits),
            "clip_layouts": self.layouts(),
            "layout_rule": self.layout_rule,
            "split_mode": self.split_mode,
            "signer_split": self.signer_split,
            "rejected_count": len(self.rejected),
            "rejected": [dict(r) for r in self.rejected[:MAX_REJECTED_IN_SUMMARY]],
        }


def _per_class(clips: list[ClipRecord], n: int) -> list[int]:
    counts = [0] * n
    for clip in clips:
        counts[clip.label] += 1
    return counts


@dataclass
class _Entry:
    """One index entry before the class selection (label = gloss name, range still 1-based)."""

    video_id: str
    gloss: str
    split: str
    start: int
    end: int
    bbox: tuple[int, int, int, int] | None
    signer_id: int | None
    order: int = 0  # the gloss's place in the index (nslt: its class id)
    url: str | None = None
    source: str | None = None
    fps: float | None = None  # the rate the instance's frame numbers count at

    def is_youtube(self) -> bool:
        # preprocess.py's own test, on the url; `source` where an instance has no url.
        if self.url:
            return "youtube" in self.url or "youtu.be" in self.url
        return (self.source or "").lower() == "youtube"


def load_wlasl(
    data_dir,
    val_split: str = "val",
    limit_classes: int | None = 10,
    class_order: str = "frequency",
    index_file=None,
    split: str = "index",
    split_seed: int = 0,
    raw_videos=None,
) -> WlaslIndex:
    """Load a WLASL index, keep the clips whose video exists, and select classes.

    Args:
        data_dir: folder with the index file(s) and ``videos/<video_id>.mp4``.
        val_split: ``"val"`` (default) or ``"test"``: the split used for validation (choosing
            the best epoch, early stopping). With ``"val"`` the ``test`` split's clips go to
            ``WlaslIndex.test``; with ``"test"`` (the original study's choice) ``test`` is empty.
        limit_classes: keep N classes (``None`` or 0: every class with a training clip).
        class_order: ``"frequency"``: the N glosses with the most available training clips
            (ties alphabetically); ``"alphabetical"``: the first N glosses alphabetically;
            ``"index"``: the first N in the index's own order (nslt: by class id). Only
            glosses with at least one available training clip are eligible. The kept class
            names are sorted alphabetically, labels 0..N-1 in that order, except with
            ``"index"``, where labels follow the index's order (nslt: the class ids' order).
        index_file: an index file to use instead of auto-detection (``WLASL_v0.3.json``, else the
            smallest ``nslt_N.json``); a relative path is tried as given, then inside data_dir.
        split: ``"index"`` (the index's splits) or ``"signer-independent"``: every available
            entry with a ``signer_id`` re-split so that no signer is in two splits, signers
            shuffled by ``split_seed`` and dealt to the split furthest below its share of the
            index's own split sizes (needs ``WLASL_v0.3.json``; entries without a signer are
            left out and counted).
        raw_videos: a folder of WLASL's raw downloads to cut the clips from (module doc);
            needs ``WLASL_v0.3.json`` (the url names a YouTube instance's file).

    Raises:
        UserError: bad arguments, no or malformed index, or no available training clip.
    """
    if split not in SPLIT_MODES:
        raise UserError(f"split must be one of {', '.join(SPLIT_MODES)}; got {split!r}")
    if val_split not in ("val", "test"):
        raise UserError(f"val_split must be 'val' or 'test', got {val_split!r}")
    if class_order not in CLASS_ORDERS:
        raise UserError(
            f"class_order must be one of {', '.join(CLASS_ORDERS)}; got {class_order!r}"
        )
    if limit_classes is not None and (
        isinstance(limit_classes, bool) or not isinstance(limit_classes, int) or limit_classes < 0
    ):
        raise UserError(
            f"limit_classes must be a positive number, 0 or None; got {limit_classes!r}"
        )
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"WLASL data folder {data_dir} does not exist")
    index_path = _find_index(data_dir, index_file)
    entries, rejected, is_v03 = _read_index(index_path, data_dir)
    if not is_v03:
        needs = (
            (split != "index", "--split signer-independent", "signer_id"),
            (raw_videos is not None, "--raw-videos", "url"),
        )
        for wanted, flag, key in needs:
            if wanted:
                raise UserError(
                    f"{flag} needs {V03_NAME} (the {key} of every instance); "
                    f"{index_path.name} has none: pass --index {V03_NAME}"
                )

    if raw_videos is not None:
        videos = Path(raw_videos).resolve()
        if not videos.is_dir():
            raise UserError(f"--raw-videos folder {raw_videos} does not exist")
    else:
        videos = (data_dir / "videos").resolve()

    def file_of(entry: _Entry) -> Path | None:
        if raw_videos is not None and entry.is_youtube():
            # preprocess.py names a YouTube download by the url's last 11 characters.
            name = (entry.url or "")[-11:]
            return videos / f"{name}.mp4" if _YOUTUBE_ID.fullmatch(name) else None
        return videos / f"{entry.video_id}.mp4"

    available: list[_Entry] = []
    missing_entries: list[_Entry] = []
    unknown_splits: Counter = Counter()
    paths: dict[str, Path] = {}
    for entry in entries:
        path = file_of(entry)
        if entry.split not in SPLITS:
            unknown_splits[entry.split] += 1
        elif path is not None and path.is_file():
            available.append(entry)
            paths[entry.video_id] = path
        else:
            missing_entries.append(entry)

    signer_split = None
    if split == "signer-independent":
        available, signer_split = _split_by_signer(available, split_seed)

    class_names = _select_classes(available, limit_classes, class_order)
    if not class_names:
        raise UserError(
            f"{index_path}: no available training clip for any class "
            f"({len(missing_entries)} entries have no file in {videos})"
        )
    labels = {name: i for i, name in enumerate(class_names)}

    layout_rule = "raw-videos" if raw_videos is not None else ("url" if is_v03 else "range")

    def record(e: _Entry) -> ClipRecord:
        path = paths[e.video_id]
        layout, start, end = _clip_range(e, path, layout_rule)
        return ClipRecord(
            video_id=e.video_id,
            path=str(path),
            label=labels[e.gloss],
            split=e.split,
            frame_start=start,
            frame_end=end,
            bbox=e.bbox,
            signer_id=e.signer_id,
            layout=layout,
        )

    selected = [e for e in available if e.gloss in labels]
    return WlaslIndex(
        class_names=class_names,
        train=[record(e) for e in selected if e.split == "train"],
        val=[record(e) for e in selected if e.split == val_split],
        test=[record(e) for e in selected if e.split == "test"] if val_split != "test" else [],
        missing={
            s: sum(e.split == s and e.gloss in labels for e in missing_entries) for s in SPLITS
        },
        rejected=rejected,
        index_file=str(index_path),
        val_split=val_split,
        missing_all={s: sum(e.split == s for e in missing_entries) for s in SPLITS},
        unknown_splits=dict(unknown_splits),
        layout_rule=layout_rule,
        split_mode=split,
        signer_split=signer_split,
    )


def _clip_range(e: _Entry, path: Path, rule: str) -> tuple[str, int, int | None]:
    """`(layout, first, last)`: the 0-based inclusive frames of the sign in `path`."""
    start, end = e.start - 1, None if e.end == -1 else e.end - 1
    if rule == "raw-videos":
        _, fps = probe_video(str(path))
        if fps is not None:  # unreadable: the scan skips it, so the range does not matter
            scale = fps / (e.fps or ANNOTATION_FPS)
            start = int(round(start * scale))
            end = None if end is None else int(round(end * scale))
        return "raw_cut", start, end
    if rule == "url":
        trimmed = e.is_youtube() and end is not None  # frame_end -1: copied whole
    elif start == 0 and end is None:
        trimmed = False  # the whole file either way: nothing to open
    else:
        count, _ = probe_video(str(path))
        trimmed = count is not None and (start > count - 1 or (end or 0) > count - 1)
    if trimmed:
        return "trimmed", 0, None if end is None else end - start
    return "whole_file", start, end


def _split_by_signer(available: list[_Entry], seed: int) -> tuple[list[_Entry], dict]:
    """The entries with a signer, re-split so that each signer is in one split only.

    Signers are shuffled by `seed`, then each goes, with all their entries, to the split
    furthest below its share (the index's own split sizes over these entries).
    """
    signed = [e for e in available if e.signer_id is not None]
    per_signer = Counter(e.signer_id for e in signed)
    wanted = Counter(e.split for e in signed)
    total = sum(wanted.values()) or 1
    signers = sorted(per_signer)
    random.Random(seed).shuffle(signers)
    clips = dict.fromkeys(SPLITS, 0)
    dealt = 0
    split_of: dict[int, str] = {}
    for signer in signers:
        dealt += per_signer[signer]
        split = max(
            (s for s in SPLITS if wanted[s]), key=lambda s: wanted[s] / total * dealt - clips[s]
        )
        split_of[signer] = split
        clips[split] += per_signer[signer]
    info = {
        "seed": seed,
        "signers": {s: sum(v == s for v in split_of.values()) for s in SPLITS},
        "clips": clips,
        "no_signer_id": len(available) - len(signed),
    }
    return [replace(e, split=split_of[e.signer_id]) for e in signed], info


def _select_classes(available: list[_Entry], limit: int | None, order: str) -> list[str]:
    train_counts = Counter(e.gloss for e in available if e.split == "train")
    place = {e.gloss: e.order for e in available}
    if order == "frequency":
        ranked = sorted(train_counts, key=lambda g: (-train_counts[g], g))
    elif order == "index":
        ranked = sorted(train_counts, key=lambda g: (place[g], g))
    else:
        ranked = sorted(train_counts)
    if limit:
        ranked = ranked[:limit]
    return ranked if order == "index" else sorted(ranked)


# ----------------------------------------------------------------------------- index files


def _find_index(data_dir: Path, index_file) -> Path:
    if index_file is not None:
        path = Path(index_file)
        if not path.is_file() and not path.is_absolute() and (data_dir / path).is_file():
            path = data_dir / path
        if not path.is_file():
            raise UserError(f"WLASL index file {index_file} not found (also looked in {data_dir})")
        return path
    if (data_dir / V03_NAME).is_file():
        return data_dir / V03_NAME
    nslt = []
    for path in data_dir.glob("nslt_*.json"):
        size = path.stem[len("nslt_") :]
        if size.isdigit() and path.is_file():
            nslt.append((int(size), path))
    if nslt:
        return min(nslt)[1]
    sizes = ",".join(str(n) for n in NSLT_SIZES)
    raise UserError(
        f"no WLASL index in {data_dir}: looked for {V03_NAME} and nslt_{{{sizes}}}.json "
        f"(with {CLASS_LIST_NAME})"
    )


class _Object(dict):
    """A JSON object that remembers every (key, value) pair, duplicates included."""

    pairs: list


def _object_hook(pairs: list) -> _Object:
    obj = _Object(pairs)
    obj.pairs = pairs
    return obj


def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read: {_one_line(err)}") from None
    try:
        return json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None


def _read_index(path: Path, data_dir: Path) -> tuple[list[_Entry], list[dict], bool]:
    """All well-formed entries in file order (duplicates and unsafe ids removed), the rejects,
    and whether the file is a WLASL_v0.3.json (else an nslt index)."""
    data = _load_json(path)
    if isinstance(data, list):
        raw = _parse_v03(path, data)
    elif isinstance(data, dict):
        raw = _parse_nslt(path, data, _read_class_list(path, data_dir))
    else:
        raise UserError(
            f"{path}: top level is a JSON {type(data).__name__}, expected a list of glosses "
            f"(WLASL_v0.3.json) or an object of video ids (nslt_N.json)"
        )
    entries, rejected = [], []
    first_kept: dict[str, bool] = {}  # video_id -> whether its first entry was kept
    for entry, problem in raw:
        vid = entry.video_id
        unsafe = _unsafe_id(vid)
        if unsafe is None and vid in first_kept:
            # The first entry decides; a later one never stands in for a rejected first one,
            # since the index contradicts itself about that video.
            first = "is kept" if first_kept[vid] else "was rejected too"
            unsafe = f"duplicate video_id (the first entry {first})"
        problem = unsafe or problem or _range_problem(entry.start, entry.end)
        if unsafe is None:  # a safe id seen for the first time
            first_kept[vid] = problem is None
        if problem is not None:
            rejected.append({"video_id": vid, "reason": problem})
        else:
            entries.append(entry)
    return entries, rejected, isinstance(data, list)


def _unsafe_id(vid) -> str | None:
    if not isinstance(vid, str):
        return f"video_id is a {type(vid).__name__}, not a string"
    if not vid:
        return "empty video_id"
    if "\x00" in vid:
        return "video_id contains a NUL character"
    if "/" in vid or "\\" in vid or ".." in vid or os.path.isabs(vid):
        return "video_id would leave videos/ (contains a path separator or '..')"
    return None


def _range_problem(start: int, end: int) -> str | None:
    if start < 1:
        return f"frame_start {start} is below 1 (frames are 1-based)"
    if end != -1 and end < 1:
        return f"frame_end {end} is neither -1 nor a frame number"
    if end != -1 and start > end:
        return f"frame_start {start} after frame_end {end}"
    return None


def _int_field(path: Path, where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{path}: {where} has {name} {value!r}, expected an integer")
    return value


def _parse_v03(path: Path, data: list) -> list[tuple[_Entry, str | None]]:
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{path}: item {i} is a {type(item).__name__}, expected an object")
        for key in ("gloss", "instances"):
            if key not in item:
                raise UserError(f"{path}: item {i} has no {key!r}")
        gloss = item["gloss"]
        if not isinstance(gloss, str) or not gloss:
            raise UserError(f"{path}: item {i} has gloss {gloss!r}, expected a non-empty string")
        instances = item["instances"]
        if not isinstance(instances, list):
            raise UserError(f"{path}: gloss {gloss!r} has 'instances' that is not a list")
        for j, inst in enumerate(instances):
            where = f"gloss {gloss!r} instance {j}"
            if not isinstance(inst, dict):
                raise UserError(f"{path}: {where} is a {type(inst).__name__}, expected an object")
            for key in ("video_id", "split"):
                if key not in inst:
                    raise UserError(f"{path}: {where} has no {key!r}")
            vid = inst["video_id"]
            where = f"gloss {gloss!r} video_id {vid!r}"
            split = inst["split"]
            if not isinstance(split, str):
                raise UserError(f"{path}: {where} has split {split!r}, expected a string")
            start = _int_field(path, where, "frame_start", inst.get("frame_start", 1))
            end = _int_field(path, where, "frame_end", inst.get("frame_end", -1))
            signer = inst.get("signer_id")
            signer = signer if isinstance(signer, int) and not isinstance(signer, bool) else None
            url, source, fps = inst.get("url"), inst.get("source"), inst.get("fps")
            entry = _Entry(
                vid,
                gloss,
                split,
                start,
                end,
                _bbox(inst.get("bbox")),
                signer,
                order=i,
                url=url if isinstance(url, str) else None,
                source=source if isinstance(source, str) else None,
                fps=fps if _is_number(fps) and fps > 0 else None,
            )
            out.append((entry, None))
    return out


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bbox(value) -> tuple[int, int, int, int] | None:
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    return tuple(int(round(v)) for v in value)


def _read_class_list(index_path: Path, data_dir: Path) -> dict[int, str]:
    candidates = [index_path.parent / CLASS_LIST_NAME, data_dir / CLASS_LIST_NAME]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise UserError(f"{index_path}: class list {candidates[-1]} not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read: {_one_line(err)}") from None
    names: dict[int, str] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise UserError(f"{path}: line {n} is {line.strip()!r}, expected 'class_id<TAB>gloss'")
        class_id, gloss = int(parts[0]), parts[1].strip()
        if class_id in names:
            raise UserError(f"{path}: line {n} repeats class id {class_id}")
        names[class_id] = gloss
    if not names:
        raise UserError(f"{path}: no classes listed")
    return names


def _parse_nslt(
    path: Path, data: _Object, names: dict[int, str]
) -> list[tuple[_Entry, str | None]]:
    out = []
    for vid, inst in data.pairs:
        if not isinstance(inst, dict):
            raise UserError(f"{path}: entry {vid!r} is a {type(inst).__name__}, expected an object")
        for key in ("subset", "action"):
            if key not in inst:
                raise UserError(f"{path}: entry {vid!r} has no {key!r}")
        split, action = inst["subset"], inst["action"]
        if not isinstance(split, str):
            raise UserError(f"{path}: entry {vid!r} has subset {split!r}, expected a string")
        if not isinstance(action, list) or len(action) != 3:
            raise UserError(
                f"{path}: entry {vid!r} has action {action!r}, expected [class_id, start, end]"
            )
        class_id, start, end = (
            _int_field(path, f"entry {vid!r}", f"action[{k}]", v) for k, v in enumerate(action)
        )
        problem = None if class_id in names else f"class id {class_id} is not in {CLASS_LIST_NAME}"
        entry = _Entry(vid, names.get(class_id, ""), split, start, end, None, None, order=class_id)
        out.append((entry, problem))
    return out


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
