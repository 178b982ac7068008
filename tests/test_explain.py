"""python -m keras_attn.explain: top-k, figures and one-line errors, on real tiny runs."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from cli_runner import module_env, run_cli
from sign_clips import tiny_sign_clips
from test_train_video_cli import _h264

import keras_attn  # noqa: F401  (registers the layers for load_model)
from keras_attn.data.wlasl import load_wlasl
from keras_attn.errors import UserError
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.explain import __main__ as explain_cli
from keras_attn.explain.encoder import check_recorded
from keras_attn.explain.predictions import CSV_COLUMNS, figure_names, softmax, top_k
from keras_attn.explain.source import load_source
from keras_attn.explain.video import VideoExplainer
from keras_attn.models import build_image_model

PROG = "python -m keras_attn.explain"


def _explain(args, cwd):
    """The command in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "keras_attn.explain", *args],
        cwd=cwd,
        env=module_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _explain_here(args, monkeypatch):
    """The command in this process: its exit status (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", [PROG, *args])
    try:
        explain_cli.cli()
    except SystemExit as done:
        return done.code
    return 0


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def _check_figure(path, min_side=150):
    """A real PNG, not an empty canvas: decodes, is large enough, holds more than one colour."""
    assert path.is_file() and path.stat().st_size > 5_000, path
    image = cv2.imread(str(path))
    assert image is not None and min(image.shape[:2]) >= min_side
    assert image.std() > 10


def _errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith(f"{PROG}: ")]


# --- pure functions ---------------------------------------------------------------------


def test_top_k_is_best_first_ties_by_index_and_at_most_the_classes():
    p = np.array([0.1, 0.4, 0.1, 0.4])
    assert top_k(p, 3) == [(1, 0.4), (3, 0.4), (0, 0.1)]
    assert [i for i, _ in top_k(p, 10)] == [1, 3, 0, 2]
    probabilities = softmax(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.isfinite(probabilities).all() and probabilities.sum() == pytest.approx(1.0)


def test_figure_names_are_the_stems_and_never_collide():
    names = figure_names(["a/x.jpg", "b/x.png", "x-2.png", "c/y.mp4", "x.gif"])
    assert names == ["x.png", "x-2.png", "x-2-2.png", "y.png", "x-3.png"]
    assert len(set(names)) == len(names)


def test_the_rebuilt_encoder_must_be_the_one_the_run_recorded():
    check_recorded({"backbone_weights_used": "random"}, "mobilenet_v2", "random")
    check_recorded({}, "mobilenet_v2", "random")  # an old run records nothing: config decides
    with pytest.raises(UserError, match="used weights 'imagenet'"):
        check_recorded({"backbone_weights_used": "imagenet"}, "mobilenet_v2", "random")
    # The frame_encoder record, where a run has one, is checked instead.
    record = {"frame_encoder": {"name": "mobilenet_v2", "weights": "random"}}
    check_recorded({**record, "backbone_weights_used": "x"}, "mobilenet_v2", "random")
    with pytest.raises(UserError, match="has name 'mobilenet_v2'"):
        check_recorded(record, "efficientnet_lite0", "random")


def test_the_command_is_installed_beside_the_others():
    import tomllib

    from cli_runner import ROOT

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["keras-attn-explain"] == "keras_attn.explain.__main__:cli"


# --- in this process: bad arguments, untrained models -----------------------------------


def test_help_names_the_arguments(monkeypatch, capsys):
    assert _explain_here(["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "RUN_OR_MODEL" in out and "--top" in out and "--out" in out


def test_a_bad_run_or_model_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not a zip")
    foreign = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    foreign.save(tmp_path / "foreign.keras")
    cases = {
        "nowhere": "no such run directory or model file",
        "empty_run": "no best.keras",
        "notes.txt": "not a run directory or a .keras model file",
        "broken.keras": "cannot load it as a keras-attn model",
        "foreign.keras": "not a model of this project",
    }
    for argument, message in cases.items():
        assert _explain_here([argument, "x.png"], monkeypatch) == 2, argument
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert _explain_here(["empty_run", "x.png", "--top", "0"], monkeypatch) == 2
    assert "--top: must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "explain").exists()


def test_an_image_model_file_explains_good_inputs_and_names_each_bad_one(
    tmp_path, monkeypatch, capsys
):
    """Channel attention (a gate, drawn as bars) in a small CNN, untrained, saved alone:
    numbered class names; a good image, one with an odd size, a broken one, a text file."""
    monkeypatch.chdir(tmp_path)
    model = build_image_model(3, 32, attention="channel", widths=(8, 8, 8), seed=0)
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    cv2.imwrite("good.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    cv2.imwrite("wide.jpg", rng.integers(0, 255, (40, 90, 3), dtype=np.uint8))
    Path("broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    Path("notes.txt").write_text("hello")
    inputs = ["good.png", "broken.png", "wide.jpg", "notes.txt", "missing.png"]
    assert _explain_here(["model.keras", *inputs, "--top", "2"], monkeypatch) == 1
    captured = capsys.readouterr()
    errors = _errors(captured.err)
    assert len(errors) == 3 and "Traceback" not in captured.err
    assert errors[0].startswith(f"{PROG}: broken.png: cannot decode the image")
    assert errors[1].startswith(f"{PROG}: notes.txt: unsupported format '.txt'")
    assert errors[2] == f"{PROG}: missing.png: file not found"
    assert "2 of 5 inputs explained" in captured.out
    for name in ("good", "wide"):
        _check_figure(tmp_path / "explain" / f"{name}.png")
    assert sorted(p.name for p in (tmp_path / "explain").iterdir()) == [
        "good.png",
        "predictions.csv",
        "wide.png",
    ]
    rows = _rows(tmp_path / "explain" / "predictions.csv")
    assert [(r["input"], r["rank"]) for r in rows] == [
        ("good.png", "1"),
        ("good.png", "2"),
        ("wide.jpg", "1"),
        ("wide.jpg", "2"),
    ]
    assert {r["class"] for r in rows} <= {"class 0", "class 1", "class 2"}
    # The probabilities are the model's own, on the image as the folder loader reads it.
    image = cv2.cvtColor(cv2.imread("good.png"), cv2.COLOR_BGR2RGB)[None].astype("float32")
    expected = softmax(model.predict(image, verbose=0))[0]
    best = top_k(expected, 2)
    assert [int(r["class_index"]) for r in rows[:2]] == [i for i, _ in best]
    assert float(rows[0]["probability"]) == pytest.approx(best[0][1], abs=1e-5)


def test_a_video_head_explains_clips_through_the_encoder_rebuilt_from_its_config(
    tmp_path, monkeypatch, capsys
):
    """A head on cached features of a random encoder, untrained, in a hand-made run dir:
    explain rebuilds and calibrates the encoder, and shades the sign of an index clip."""
    data = tiny_sign_clips(tmp_path / "synthetic")
    index = load_wlasl(data)
    spec = VideoExperiment(
        data_dir=str(data), image_size=32, num_frames=3, backbone_weights="none", width=8
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(spec.config_json())
    summary = {"class_names": index.class_names, "backbone_weights_used": "random"}
    (run / "summary.json").write_text(json.dumps(summary))
    video_experiment.head(spec, (1280,), 2).save(run / "best.keras")  # EfficientNet-Lite0: 1280
    monkeypatch.chdir(tmp_path)
    clip = index.val[0]
    Path("empty.mp4").write_bytes(b"")
    assert _explain_here(["run", clip.path, "empty.mp4", "--top", "1"], monkeypatch) == 1
    captured = capsys.readouterr()
    assert _errors(captured.err) == [f"{PROG}: empty.mp4: empty file"]
    _check_figure(tmp_path / "explain" / f"{clip.video_id}.png")
    (row,) = _rows(tmp_path / "explain" / "predictions.csv")
    assert row["true_class"] == index.class_names[clip.label]
    assert row["class"] in index.class_names and 0.5 <= float(row["probability"]) <= 1

    # The sign range of the index is shaded; the frames were sampled inside it, as trained.
    read = VideoExplainer(load_source("run"), warn=pytest.fail).read(clip.path)
    start, end = read.sign
    last = read.frame_count - 1 if clip.frame_end is None else clip.frame_end
    assert (start, end) == (clip.frame_start, last)
    assert start <= read.indices.min() and read.indices.max() <= end
    assert read.frames.shape == (3, 32, 32, 3) and read.mask.all()

    # The run says its encoder had other weights: one line, exit 2, nothing explained.
    (run / "summary.json").write_text(json.dumps({**summary, "backbone_weights_used": "x"}))
    assert _explain_here(["run", clip.path, "--out", "other"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "used weights 'x'" in err
    assert not (tmp_path / "other").exists()


# --- end to end: real one-epoch runs -----------------------------------------------------


@pytest.mark.slow
def test_an_image_run_explains_its_images(tmp_path):
    tiny = ["--synthetic-per-class", "6", "--image-size", "32", "--batch-size", "16"]
    done = run_cli("train_image.py", [*tiny, "--epochs", "1", "--run-dir", "run"], tmp_path)
    assert done.returncode == 0, done.stderr
    class_names = json.loads((tmp_path / "run" / "summary.json").read_text())["class_names"]
    shapes = sorted((tmp_path / "data" / "synthetic").glob("*/val/*/*.png"))
    first, second = shapes[0], shapes[-1]
    shutil.copy(first, tmp_path / "first.png")
    # Another size and format: the loader resizes it to the run's 32 pixels.
    cv2.imwrite(str(tmp_path / "second.jpg"), cv2.resize(cv2.imread(str(second)), (50, 70)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    inputs = ["first.png", "broken.jpg", "second.jpg", "clip.mp4"]
    done = _explain(["run", *inputs, "--out", "figures", "--top", "3"], tmp_path)
    assert done.returncode == 1, done.stderr
    errors = _errors(done.stderr)
    assert len(errors) == 2 and "Traceback" not in done.stderr, done.stderr
    assert errors[0].startswith(f"{PROG}: broken.jpg: ")
    assert errors[1].startswith(f"{PROG}: clip.mp4: unsupported format '.mp4'")
    for name in ("first", "second"):
        _check_figure(tmp_path / "figures" / f"{name}.png")
    rows = _rows(tmp_path / "figures" / "predictions.csv")
    assert [r["input"] for r in rows] == ["first.png"] * 3 + ["second.jpg"] * 3
    assert {r["class"] for r in rows} <= set(class_names)
    for name in ("first.png", "second.jpg"):
        p = [float(r["probability"]) for r in rows if r["input"] == name]
        assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1 + 1e-6
    assert f"first.png: {rows[0]['class']} " in done.stdout


def _wlasl_fixture(root: Path, rng) -> Path:
    """A WLASL_v0.3 folder of H.264 clips: 2 glosses, the class visible only inside the
    annotated sign (frames 6-15 of 20, 1-based), 8 train / 2 val / 2 test clips, 1 missing."""
    (root / "videos").mkdir(parents=True)
    glosses = [{"gloss": g, "instances": []} for g in ("book", "drink")]
    for i in range(13):
        label = i % 2
        split = "train" if i < 8 else "val" if i < 10 else "test" if i < 12 else "train"
        video_id = f"{i:05d}"
        glosses[label]["instances"].append(
            {
                "video_id": video_id,
                "split": split,
                "frame_start": 6,
                "frame_end": 15,
                "signer_id": i % 3,
                "source": "aslsignbank",
                "url": f"https://aslsignbank.example/{video_id}.mp4",
            }
        )
        if i == 12:
            continue  # listed but missing, as in WLASL
        frames = rng.integers(0, 40, (20, 48, 64, 3), dtype=np.uint8)
        frames[5:15, :, :, label] += 150
        _h264(root / "videos" / f"{video_id}.mp4", frames, fps=25)
    (root / "WLASL_v0.3.json").write_text(json.dumps(glosses))
    return root


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg makes the H.264 clips")
@pytest.mark.slow
def test_a_video_run_on_cached_features_explains_clips(tmp_path):
    """best.keras is the head on cached features of a random, calibrated encoder: explain
    rebuilds the encoder from config.json and reads clips as training did, so a test clip
    gets the probabilities the run scored it with."""
    rng = np.random.default_rng(0)
    data = _wlasl_fixture(tmp_path / "WLASL", rng)
    args = ["--data-dir", str(data), "--image-size", "32", "--epochs", "1", "--run-dir", "run"]
    args += ["--cache-dir", "cache", "--backbone-weights", "none"]
    done = run_cli("train_video.py", args, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frozen_backbone_is_random"] and summary["num_test"] == 2
    outside = rng.integers(0, 255, (12, 40, 40, 3), dtype=np.uint8)
    _h264(tmp_path / "outside.mp4", outside, fps=30)  # in no index: sampled over the file
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but not a video")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    test_clip = str(data / "videos" / "00010.mp4")
    inputs = [test_clip, "broken.mp4", str(data / "videos" / "00009.mp4"), "outside.mp4"]
    done = _explain(["run", *inputs, "photo.png"], tmp_path)
    assert done.returncode == 1, done.stderr
    errors = _errors(done.stderr)
    assert len(errors) == 2 and "Traceback" not in done.stderr, done.stderr
    assert errors[0].startswith(f"{PROG}: broken.mp4: cannot open as a video")
    assert errors[1].startswith(f"{PROG}: photo.png: unsupported format '.png'")
    for name in ("00010", "00009", "outside"):
        _check_figure(tmp_path / "explain" / f"{name}.png")
    rows = _rows(tmp_path / "explain" / "predictions.csv")
    # Two classes: top-5 is both, and the two probabilities are the whole distribution.
    assert [r["input"] for r in rows] == [inputs[0]] * 2 + [inputs[2]] * 2 + ["outside.mp4"] * 2
    for name in (inputs[0], inputs[2], "outside.mp4"):
        p = [float(r["probability"]) for r in rows if r["input"] == name]
        assert sum(p) == pytest.approx(1.0, abs=1e-5) and p[0] >= p[1]
    truth = {r["input"]: r["true_class"] for r in rows}
    assert truth == {inputs[0]: "book", inputs[2]: "drink", "outside.mp4": ""}
    # The run scored 00010 with the same encoder, frames and head (stored as float16).
    scored = np.load(tmp_path / "run" / "test_predictions.npz")["probabilities"]
    position = summary["test_video_ids"].index("00010")
    by_class = {int(r["class_index"]): float(r["probability"]) for r in rows[:2]}
    assert [by_class[0], by_class[1]] == pytest.approx(scored[position].tolist(), abs=1e-3)
