"""A small synthetic sign-language video set in the WLASL layout, generated in seconds.

Each clip shows a signer (head, torso, arm) on a noisy background. The hand rests low, rises,
goes through an ordered pair of hand shapes (the sign), and returns to rest. Classes come in
mirrored pairs that use the same two shapes in opposite order (class 0: fist -> flat, class 1:
flat -> fist, class 2: v -> point, ...). Each shape is held at its own place in front of the
body (as ASL signs combine hand shape, location and movement) and the hand's path is symmetric
in time, so a sign and its mirror show the same frames in reverse order: a model that averages
frames cannot tell a pair apart, one that models time can.

The set is written as ``WLASL_v0.3.json`` plus ``videos/<video_id>.mp4`` (MPEG-4, ``mp4v``), so
``keras_attn.data.wlasl.load_wlasl`` reads it like the real thing, including the sign's frame
range, signer ids and boxes, and a few index entries whose video is missing (as in WLASL).

Splits are by signer, so both held-out splits measure signers unseen in training: of
``num_signers`` signers (default 10) the last ``test_signers`` (default 2) sign every ``test``
clip, the ``val_signers`` (default 2) before them every ``val`` clip, and the rest every
``train`` clip; no signer appears in two splits. Clip ``j`` of each class is signed by signer
``j % num_signers``: with the default signers, 100 clips per class (``train_video.py``'s
default) give 60 train, 20 val and 20 test clips per class, before the few missing files.

    python -m keras_attn.data.synthetic_video --strip /tmp/signs_strip.png
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from keras_attn.cli import Parser
from keras_attn.errors import UserError
from keras_attn.files import atomic_directory, atomic_path

GENERATOR_VERSION = 2  # 2: val and test clips each from their own unseen signers
FPS = 25
MISSING_FRACTION = 0.03
# Hand shapes: classes use the disjoint pairs (fist, flat), (v, point), (l, spread), (y, o)
# first, then every other pair.
SHAPES = ("fist", "flat", "v", "point", "l", "spread", "y", "o")
NEUTRAL = "rest"
HAND_FRACTION = 0.30  # hand height / frame height
TEXTURE_STD = 12.0  # static background texture, per clip
NOISE_STD = 3.0  # sensor noise, per frame


def shape_pairs() -> list[tuple[str, str]]:
    """Shape pairs, disjoint ones first: pair p gives classes 2p (a->b) and 2p+1 (b->a)."""
    disjoint = [(SHAPES[i], SHAPES[i + 1]) for i in range(0, len(SHAPES), 2)]
    rest = [p for p in itertools.combinations(SHAPES, 2) if p not in disjoint]
    return disjoint + rest


MAX_CLASSES = 2 * len(shape_pairs())


def class_shapes(class_id: int) -> tuple[str, str]:
    """The ordered pair of hand shapes signed by ``class_id``."""
    a, b = shape_pairs()[class_id // 2]
    return (a, b) if class_id % 2 == 0 else (b, a)


def class_gloss(class_id: int) -> str:
    a, b = class_shapes(class_id)
    return f"{a}-{b}"


# ----------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Signer:
    """How a signer looks in one clip (colours RGB, lengths in pixels).

    Skin tone and build belong to the signer; shirt and background change per recording
    session (``dress``).
    """

    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    background: tuple[int, int, int]
    body_x: float  # torso centre
    torso_top: float
    torso_half_width: float
    head_radius: float
    hand_size: float  # hand height (shape box) in pixels

    def signing_space(self, size: int) -> np.ndarray:
        """Centre of the signing space (x, y): in front of the chest, on the dominant side."""
        return np.array([self.body_x + 0.06 * size, self.torso_top + 0.45 * self.hand_size])

    def bbox(self, size: int) -> tuple[int, int, int, int]:
        """x1, y1, x2, y2 around head, torso and the hand's reach, as a person detector would."""
        places = np.array(list(PLACES.values())) * size + self.signing_space(size)
        reach = 0.6 * self.hand_size
        box = (
            min(self.body_x - self.torso_half_width, places[:, 0].min() - reach),
            min(self.torso_top - 2.2 * self.head_radius, places[:, 1].min() - 0.04 * size - reach),
            max(self.body_x + self.torso_half_width, places[:, 0].max() + reach),
            size - 1,
        )
        return tuple(int(np.clip(round(v), 0, size - 1)) for v in box)


def make_signer(rng: np.random.Generator, size: int) -> Signer:
    """A signer's skin tone and build (what stays across sessions), dressed for a first session."""
    light, dark = np.array([235, 195, 165]), np.array([105, 65, 45])
    skin = light + rng.uniform(0, 1) * (dark - light) + rng.uniform(-12, 12, 3)
    scale = rng.uniform(0.9, 1.1)
    signer = Signer(
        skin=_rgb(skin),
        shirt=(0, 0, 0),
        background=(0, 0, 0),
        body_x=size * (0.5 + rng.uniform(-0.06, 0.06)),
        torso_top=size * rng.uniform(0.51, 0.57),
        torso_half_width=size * 0.22 * scale,
        head_radius=size * 0.12 * scale,
        hand_size=size * HAND_FRACTION * rng.uniform(0.94, 1.06),
    )
    return dress(signer, rng)


def dress(signer: Signer, rng: np.random.Generator) -> Signer:
    """The same signer in another recording session: new shirt and background colours."""
    skin = np.asarray(signer.skin, float)
    while True:
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(140, 255), rng.uniform(70, 200)]]])
        shirt = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(float)
        if np.abs(shirt - skin).sum() > 160:
            break
    background = rng.uniform(60, 200) + rng.uniform(-30, 30, 3)
    return dataclasses.replace(signer, shirt=_rgb(shirt), background=_rgb(background))


def _rgb(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def _draw_shape(mask: np.ndarray, shape: str, cx: float, cy: float, h: float) -> None:
    """Draw hand ``shape`` into ``mask`` (255 = hand): palm centred low, fingers pointing up."""
    u = h / 4.0  # the shape spans about 4u vertically, centred on (cx, cy)
    finger = max(2, int(round(0.5 * u)))

    def p(dx, dy):
        return (int(round(cx + dx * u)), int(round(cy + dy * u)))

    def palm(r=1.0):
        cv2.circle(mask, p(0, 1.0), max(2, int(round(r * u))), 255, -1)

    def fingers(*tips):
        for tx, ty in tips:
            cv2.line(mask, p(0, 0.8), p(tx, ty), 255, finger)

    if shape == "fist":
        cv2.circle(mask, p(0, 0.6), max(2, int(round(1.45 * u))), 255, -1)
    elif shape == "flat":
        palm()
        cv2.rectangle(mask, p(-0.8, -2.0), p(0.8, 1.0), 255, -1)
    elif shape == "v":
        palm()
        fingers((-1.2, -1.9), (1.2, -1.9))
    elif shape == "point":
        palm()
        fingers((0, -2.0))
    elif shape == "l":
        palm()
        fingers((-0.4, -2.0), (1.9, 0.6))
    elif shape == "spread":
        palm(1.1)
        fingers((-1.9, 0.0), (-1.1, -1.8), (0, -2.1), (1.1, -1.8), (1.9, -0.4))
    elif shape == "y":
        palm()
        fingers((-1.9, -0.6), (1.9, -0.6))
    elif shape == "o":
        cv2.circle(mask, p(0, 0), int(round(1.4 * u)), 255, max(2, int(round(0.6 * u))))
    elif shape == NEUTRAL:
        cv2.ellipse(mask, p(0, 1.0), (int(1.2 * u), int(0.7 * u)), 0, 0, 360, 255, -1)
    else:
        raise ValueError(f"unknown hand shape {shape!r}")


@dataclass(frozen=True)
class Timing:
    """Frames before the sign, of the sign, and after it; the clip has lead + sign + tail."""

    lead: int
    sign: int
    tail: int

    @property
    def num_frames(self) -> int:
        return self.lead + self.sign + self.tail


def make_timing(rng: np.random.Generator) -> Timing:
    sign = int(rng.integers(12, 29))
    lead, tail = (int(v) for v in rng.integers(5, 11, size=2))
    tail += max(0, 24 - (lead + sign + tail))
    return Timing(lead, sign, tail)


APPROACH = 3  # frames of the lead (tail) in which the hand rises to (returns from) the sign


# Where each shape is held, relative to the signing space (fractions of the frame size):
# a sign moves the hand from the first shape's place to the second's, as ASL signs combine
# hand shape, location and movement.
PLACES = {
    "fist": (-0.12, 0.06),
    "flat": (0.12, -0.06),
    "v": (-0.12, -0.06),
    "point": (0.12, 0.06),
    "l": (0.0, -0.08),
    "spread": (0.0, 0.08),
    "y": (-0.16, 0.0),
    "o": (0.16, 0.0),
}


def hand_track(signer: Signer, timing: Timing, shapes: tuple[str, str], size: int):
    """(shape, x, y) per frame. During the sign, time-reversing the track of ``shapes`` gives the
    track of ``shapes[::-1]``: the two signs show the same frames in opposite order."""
    rest = np.array([signer.body_x + 0.14 * size, size * 0.9])
    base = signer.signing_space(size)
    place_a = base + size * np.array(PLACES[shapes[0]])
    place_b = base + size * np.array(PLACES[shapes[1]])

    def sign_pos(t):
        # smoothstep from place a to place b around the middle: s(1 - t) = 1 - s(t)
        u = np.clip((t - 0.3) / 0.4, 0, 1)
        s = u * u * (3 - 2 * u)
        arc = np.array([0.0, -0.04 * size * np.sin(np.pi * t)])
        return place_a + s * (place_b - place_a) + arc

    track = []
    start, end = sign_pos(0.0), sign_pos(1.0)
    for i in range(timing.lead):
        a = max(0, i - (timing.lead - APPROACH - 1)) / (APPROACH + 1)
        track.append((NEUTRAL, *(rest + a * (start - rest))))
    for i in range(timing.sign):
        t = (i + 0.5) / timing.sign
        shape = shapes[0] if t < 0.5 else shapes[1] if t > 0.5 else NEUTRAL
        track.append((shape, *sign_pos(t)))
    for i in range(timing.tail):
        a = max(0, APPROACH - i) / (APPROACH + 1)
        track.append((NEUTRAL, *(rest + a * (end - rest))))
    return track


def render_clip(
    shapes: tuple[str, str],
    signer: Signer,
    timing: Timing,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Frames of one clip, (T, size, size, 3) uint8 RGB."""
    texture = rng.normal(0, TEXTURE_STD, (size, size, 3))
    background = np.clip(np.asarray(signer.background, float) + texture, 0, 255).astype(np.uint8)
    hx, hy = signer.body_x, signer.torso_top - 1.05 * signer.head_radius
    cv2.circle(background, (round(hx), round(hy)), round(signer.head_radius), signer.skin, -1)
    x0 = round(signer.body_x - signer.torso_half_width)
    x1 = round(signer.body_x + signer.torso_half_width)
    cv2.rectangle(background, (x0, round(signer.torso_top)), (x1, size), signer.shirt, -1)
    shoulder = (x1 - round(0.04 * size), round(signer.torso_top + 0.06 * size))
    sleeve = _rgb(np.asarray(signer.shirt) * 0.6)
    brightness = rng.uniform(0.85, 1.15)

    frames = np.empty((timing.num_frames, size, size, 3), np.float32)
    mask = np.empty((size, size), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for i, (shape, x, y) in enumerate(hand_track(signer, timing, shapes, size)):
        x, y = x + rng.uniform(-0.6, 0.6), y + rng.uniform(-0.6, 0.6)
        frame = background.copy()
        wrist = (round(x), round(y + 0.3 * signer.hand_size))
        cv2.line(frame, shoulder, wrist, sleeve, max(2, round(0.08 * size)))
        mask[:] = 0
        _draw_shape(mask, shape, x, y, signer.hand_size)
        frame[cv2.dilate(mask, kernel) > 0] = (40, 25, 20)
        frame[mask > 0] = signer.skin
        frames[i] = frame
    frames *= brightness
    # Sensor noise: random shifts of two noise frames (drawing fresh noise per frame is slow).
    bank = NOISE_STD * rng.standard_normal((2, size, size, 3), dtype=np.float32)
    shifts = rng.integers(0, size, (len(frames), 3))
    for frame, (b, dy, dx) in zip(frames, shifts, strict=True):
        frame += np.roll(bank[b % 2], (dy, dx), axis=(0, 1))
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


# ----------------------------------------------------------------------------- the data set


def write_mp4(path, frames: np.ndarray, fps: float = FPS) -> None:
    """Write RGB frames (T, H, W, 3) uint8 as an MPEG-4 (mp4v) file."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with the mp4v codec")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()


NUM_SIGNERS = 10
VAL_SIGNERS = 2
TEST_SIGNERS = 2


def dataset_name(
    num_classes,
    clips_per_class,
    image_size,
    seed,
    num_signers=NUM_SIGNERS,
    val_signers=VAL_SIGNERS,
    test_signers=TEST_SIGNERS,
):
    """The set's folder name. It always names the signer layout (``-p{signers}v{val}t{test}``),
    so no folder of the layout before version 2 (test signers only, val from training
    signers; named without ``t``) is taken for one of this layout."""
    return (
        f"signs-k{num_classes}-n{clips_per_class}-s{image_size}-seed{seed}"
        f"-p{num_signers}v{val_signers}t{test_signers}"
    )


def check_signers(num_signers: int, val_signers: int, test_signers: int) -> None:
    """One line (UserError) unless val and test each get a signer and training keeps one."""
    if not (val_signers >= 1 and test_signers >= 1 and val_signers + test_signers < num_signers):
        raise UserError(
            "need val_signers >= 1, test_signers >= 1 and val_signers + test_signers < "
            f"num_signers, got {val_signers}, {test_signers} and {num_signers}"
        )


def ensure_synthetic_videos(
    root="data/synthetic",
    num_classes: int = 6,
    clips_per_class: int = 40,
    num_signers: int = NUM_SIGNERS,
    val_signers: int = VAL_SIGNERS,
    test_signers: int = TEST_SIGNERS,
    image_size: int = 96,
    seed: int = 0,
) -> Path:
    """Generate the set once (reused when complete) and return its folder, the WLASL ``data_dir``.

    ``val_signers`` signers sign the ``val`` clips and ``test_signers`` others the ``test``
    clips; the remaining signers sign ``train`` (see the module docstring). The folder is
    ``root/signs-k{K}-n{clips}-s{size}-seed{seed}-p{signers}v{val}t{test}``. It is built in a
    temporary sibling folder and renamed into place with its ``COMPLETE`` marker, so an
    interrupted run leaves nothing that looks finished; a folder without a matching marker is
    rebuilt.
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"num_classes must be 1..{MAX_CLASSES}, got {num_classes}")
    check_signers(num_signers, val_signers, test_signers)
    if clips_per_class < num_signers:
        raise UserError(
            f"clips_per_class must be at least num_signers ({num_signers}), so that every "
            f"split has a clip of each class; got {clips_per_class}"
        )
    if image_size < 32 or image_size % 2:
        raise UserError(f"image_size must be an even number >= 32, got {image_size}")
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_classes": num_classes,
        "clips_per_class": clips_per_class,
        "num_signers": num_signers,
        "val_signers": val_signers,
        "test_signers": test_signers,
        "image_size": image_size,
        "seed": seed,
    }
    root = Path(root)
    out = root / dataset_name(
        num_classes, clips_per_class, image_size, seed, num_signers, val_signers, test_signers
    )
    if _is_complete(out, params):
        return out
    # A folder there without a matching marker is half-written or from another generator
    # version: it is replaced.
    with atomic_directory(out, lambda folder: _is_complete(folder, params)) as tmp:
        _generate(tmp, params)
        (tmp / "COMPLETE").write_text(json.dumps(params, indent=1) + "\n")
    return out


def _is_complete(out: Path, params: dict) -> bool:
    try:
        return json.loads((out / "COMPLETE").read_text()) == params
    except (OSError, ValueError):
        return False


def signer_split(signer: int, num_signers: int, val_signers: int, test_signers: int) -> str:
    """The split of every clip of ``signer``: the last signers are test, the ones before val."""
    if signer >= num_signers - test_signers:
        return "test"
    if signer >= num_signers - test_signers - val_signers:
        return "val"
    return "train"


def plan_clips(params: dict) -> tuple[list[dict], set[str]]:
    """Every clip's ``video_id``, class, signer and split, and the ids whose video is left out.

    Cheap (nothing is rendered): the layout ``_generate`` writes for ``params``.
    """
    k, n = params["num_classes"], params["clips_per_class"]
    num_signers = params["num_signers"]
    val_signers, test_signers = params["val_signers"], params["test_signers"]
    split_rng = np.random.default_rng([params["seed"], 2])
    plan = []
    for c in range(k):
        for j in range(n):
            signer = j % num_signers
            split = signer_split(signer, num_signers, val_signers, test_signers)
            plan.append({"class": c, "signer": signer, "split": split})
    for i, clip in enumerate(plan):
        clip["video_id"] = f"{i:05d}"

    # A few entries lose their video, as in WLASL (never the last clip of a class in a split).
    absent = set()
    for i in split_rng.permutation(len(plan))[: max(1, round(MISSING_FRACTION * len(plan)))]:
        clip = plan[int(i)]
        left = [
            q
            for q in plan
            if q["class"] == clip["class"]
            and q["split"] == clip["split"]
            and q["video_id"] not in absent
        ]
        if len(left) > 1:
            absent.add(clip["video_id"])
    return plan, absent


def _generate(out: Path, params: dict) -> None:
    k, size, seed = params["num_classes"], params["image_size"], params["seed"]
    signers = [
        make_signer(np.random.default_rng([seed, 1, s]), size) for s in range(params["num_signers"])
    ]
    plan, absent = plan_clips(params)

    videos = out / "videos"
    videos.mkdir()
    instances: list[list[dict]] = [[] for _ in range(k)]
    for i, clip in enumerate(plan):
        rng = np.random.default_rng([seed, 3, i])
        signer = dress(signers[clip["signer"]], rng)
        timing = make_timing(rng)
        shapes = class_shapes(clip["class"])
        if clip["video_id"] not in absent:
            write_mp4(
                videos / f"{clip['video_id']}.mp4", render_clip(shapes, signer, timing, size, rng)
            )
        instances[clip["class"]].append(
            {
                "video_id": clip["video_id"],
                "split": clip["split"],
                "signer_id": clip["signer"],
                "frame_start": timing.lead + 1,
                "frame_end": timing.lead + timing.sign,
                "num_frames": timing.num_frames,
                "fps": FPS,
                "bbox": list(signer.bbox(size)),
                "hand_shapes": list(shapes),
                "url": "",
                "source": "synthetic",
                "instance_id": len(instances[clip["class"]]),
                "variation_id": 0,
            }
        )
    index = [{"gloss": class_gloss(c), "instances": instances[c]} for c in range(k)]
    (out / "WLASL_v0.3.json").write_text(json.dumps(index, indent=1) + "\n")


# ----------------------------------------------------------------------------- a look at it


def frame_strip(clips: list[np.ndarray], frames_per_clip: int = 12) -> np.ndarray:
    """One row per clip of evenly spaced frames, RGB; for looking at a data set."""
    rows = []
    for clip in clips:
        idx = np.linspace(0, len(clip) - 1, frames_per_clip).round().astype(int)
        rows.append(np.concatenate([np.pad(clip[i], ((1, 1), (1, 1), (0, 0))) for i in idx], 1))
    return np.concatenate(rows, 0)


def main(argv=None) -> None:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--clips-per-class", type=int, default=40, help="clips per class")
    parser.add_argument(
        "--num-signers", type=int, default=NUM_SIGNERS, help="signers in the whole set"
    )
    parser.add_argument(
        "--val-signers", type=int, default=VAL_SIGNERS, help="signers of the val clips only"
    )
    parser.add_argument(
        "--test-signers", type=int, default=TEST_SIGNERS, help="signers of the test clips only"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strip", help="also write the sign frames of a mirrored pair as a PNG")
    args = parser.parse_args(argv)
    try:
        out = ensure_synthetic_videos(
            args.root,
            clips_per_class=args.clips_per_class,
            num_signers=args.num_signers,
            val_signers=args.val_signers,
            test_signers=args.test_signers,
            seed=args.seed,
        )
    except UserError as err:
        parser.error(str(err))
    print(out)
    if args.strip:
        index = json.loads((out / "WLASL_v0.3.json").read_text())
        clips = []
        for gloss in index[:2]:
            inst = next(
                i for i in gloss["instances"] if (out / "videos" / f"{i['video_id']}.mp4").exists()
            )
            frames = read_mp4(out / "videos" / f"{inst['video_id']}.mp4")
            clips.append(frames[inst["frame_start"] - 1 : inst["frame_end"]])
        strip = frame_strip(clips)
        with atomic_path(args.strip) as tmp:
            if not cv2.imwrite(str(tmp), cv2.resize(strip, None, fx=2, fy=2)[:, :, ::-1]):
                raise OSError(f"could not write {args.strip}")
        print(args.strip)


def read_mp4(path) -> np.ndarray:
    """All frames of a video file as RGB uint8 (T, H, W, 3)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    if not frames:
        raise ValueError(f"no frames could be read from {path}")
    return np.stack(frames)


if __name__ == "__main__":
    main()
