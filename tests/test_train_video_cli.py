"""train_video.py as a user runs it: errors, a smoke run, a WLASL-shaped folder of H.264 clips."""

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import run_cli, run_main, run_to_the_end
from sign_clips import tiny_sign_clips

from keras_attn.data.wlasl import load_wlasl
from keras_attn.experiments import video as video_experiment


def _cli(args, cwd):
    return run_cli("train_video.py", args, cwd)


def _main(args, monkeypatch, tmp_path):
    return run_main("train_video.py", args, monkeypatch, tmp_path)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("{not json", "WLASL_v0.3.json"),
        ('[{"gloss": "book"}]', "instances"),
        ('{"a": 1}', None),
    ],
)
def test_malformed_index_is_one_line_and_exit_2(index, message, monkeypatch, tmp_path, capsys):
    data = tmp_path / "wlasl"
    (data / "videos").mkdir(parents=True)
    (data / "WLASL_v0.3.json").write_text(index)
    assert (
        _main(["--data-dir", str(data), "--backbone-weights", "none"], monkeypatch, tmp_path) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    if message:
        assert message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temporal", "lstm"], "unknown temporal 'lstm'; valid: avg"),
        (["--num-frames", "0"], "--num-frames must be at least 1"),
        (["--data-dir", "nowhere"], "nowhere"),
        (["--lr", "0"], "--lr must be positive"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args, message, monkeypatch, tmp_path, capsys):
    assert _main(args, monkeypatch, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_script_hands_the_trainer_cached_features_and_the_head(monkeypatch, tmp_path, capsys):
    """The fast twin of the smoke run: train_video.py's main in this process, frozen
    features computed and cached, up to run_training, which only checks what it is given."""
    data = tiny_sign_clips(tmp_path / "synthetic")
    given = {}

    def trainer(build, train_data, val_data, steps, spec, run_dir, summary_extra, **options):
        model = build()
        ((x, mask), y), *_ = train_data(0, 1).take(1)
        given.update(
            logits=tuple(model([x, mask]).shape),
            batch=(tuple(x.shape), tuple(mask.shape), tuple(y.shape)),
            steps=steps,
            spec=spec,
            run_dir=run_dir,
            extra=summary_extra,
            val_labels=[int(v) for _, y in val_data for v in y],
            test_labels=[int(v) for _, y in options["test_data"] for v in y],
        )
        return {"status": "completed"}

    monkeypatch.setattr(video_experiment, "run_training", trainer)
    args = ["--data-dir", str(data), "--image-size", "32", "--num-frames", "2", "--epochs", "1"]
    args += ["--backbone-weights", "none", "--cache-dir", "cache", "--batch-size", "4"]
    run_to_the_end("train_video.py", args, monkeypatch, tmp_path)
    out = capsys.readouterr().out
    spec, extra = given["spec"], given["extra"]
    assert (spec.num_frames, spec.image_size, spec.temporal) == (2, 32, "tcn")
    assert given["logits"] == (4, 2)
    x_shape, mask_shape, y_shape = given["batch"]
    assert x_shape[:2] == (4, 2) and mask_shape == (4, 2) and y_shape == (4,)
    assert given["run_dir"] == Path("runs", "video", spec.run_name())
    assert extra["class_names"] == sorted(extra["class_names"]) and len(extra["class_names"]) == 2
    assert extra["frozen_backbone_is_random"]  # --backbone-weights none: said so
    assert sum(extra["index"]["missing"].values()) >= 1 and "missing" in out
    clips = extra["index"]["clips"]
    assert given["steps"] == -(-clips["train"] // 4)
    # By default it validates on the val split and hands the test split over to be scored.
    index = load_wlasl(data)
    assert spec.val_split == "val" and extra["index"]["val_split"] == "val"
    assert given["val_labels"] == [c.label for c in index.val]
    assert given["test_labels"] == [c.label for c in index.test] and index.test
    assert {c.split for c in index.test} == {"test"}
    # Every readable clip went through the frozen encoder once, into the cache.
    every = clips["train"] + clips["val"] + clips["test"]
    assert extra["feature_cache"] == {"hits": 0, "misses": every}
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == every
    assert not (tmp_path / "runs").exists()


def test_a_run_scores_the_readable_test_clips_once(monkeypatch, tmp_path, capsys):
    """A real (tiny) run: the best-val model is scored on the test split's readable clips,
    once, after training; a corrupt test clip is named and counted, never scored."""
    data = tiny_sign_clips(tmp_path / "synthetic")
    index = load_wlasl(data)
    bad, *good = index.test
    assert len(good) >= 2
    Path(bad.path).write_bytes(b"\x00\x00\x00\x18ftypmp42 but not a video")
    args = ["--data-dir", str(data), "--image-size", "32", "--num-frames", "2", "--epochs", "2"]
    args += ["--backbone-weights", "none", "--cache-dir", "cache", "--batch-size", "4"]
    args += ["--temporal", "avg", "--width", "8", "--run-dir", "run"]
    run_to_the_end("train_video.py", args, monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert f"val {len(index.val)} clips, test {len(index.test)} clips" in out
    assert "Test (best-val model, epoch" in out
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["num_test"] == len(good)  # the readable test clips, the corrupt one left out
    assert summary["readable_clips"]["test"] == len(good)
    assert summary["test_video_ids"] == [c.video_id for c in good]
    assert [s["path"] for s in summary["skipped_files"]] == [bad.path]
    assert summary["index"]["clips"]["test"] == len(index.test)
    predictions = np.load(run / "test_predictions.npz")
    assert predictions["label"].tolist() == [c.label for c in good]
    assert predictions["probabilities"].shape == (len(good), 2)
    hits = predictions["predicted"] == predictions["label"]
    assert summary["test_accuracy"] == pytest.approx(hits.mean())
    hits_last = predictions["predicted_last"] == predictions["label"]
    assert summary["test_accuracy_last"] == pytest.approx(hits_last.mean())
    assert np.isfinite(summary["test_loss"]) and np.isfinite(summary["test_loss_last"])
    assert json.loads((run / "config.json").read_text())["val_split"] == "val"
    # The selected model's top-k on val and test: with 2 classes only k = 1 is below the
    # class count; its top-1 is the test accuracy scored above, and on val the best epoch's.
    assert summary["test_top1_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert summary["val_top1_accuracy"] == pytest.approx(summary["best_val_accuracy"])
    per_class_test = [hits[predictions["label"] == c].mean() for c in (0, 1)]
    assert summary["test_class_top1_accuracy"] == pytest.approx(np.mean(per_class_test))
    assert not [k for k in summary if "top5" in k or "top10" in k]
    history = pd.read_csv(run / "history.csv")
    assert history["val_top1_accuracy"].tolist() == pytest.approx(history["val_accuracy"].tolist())
    assert "val_class_acc=" in out
    table = pd.read_csv(run / "per_class.csv")
    assert table.columns.tolist() == ["split", "class_index", "gloss", "support", "top1_accuracy"]
    test_rows = table[table["split"] == "test"]
    assert test_rows["support"].tolist() == [int((predictions["label"] == c).sum()) for c in (0, 1)]
    assert test_rows["top1_accuracy"].tolist() == pytest.approx(per_class_test)
    assert (run / "confusion_val.png").stat().st_size > 0
    assert (run / "confusion_test.png").stat().st_size > 0
    encoder = summary["frame_encoder"]
    assert encoder["name"] == "efficientnet_lite0" and encoder["weights"] == "random"
    assert len(encoder["key_sha256"]) == 64 and encoder["key"].startswith("efficientnet_lite0-")

    # --val-split test validates on the test split, as the original study did: then no
    # separate test split is left, and no test metric is written.
    run_to_the_end(
        "train_video.py",
        [*args[:-2], "--val-split", "test", "--run-dir", "on_test"],
        monkeypatch,
        tmp_path,
    )
    captured = capsys.readouterr()
    out = captured.out
    assert "--val-split test chooses the best epoch" in captured.err
    assert f"val (test split) {len(index.test)} clips, no separate test split" in out
    assert "No test metrics: --val-split test validates on the test split" in out
    assert "Test (best-val model" not in out
    summary = json.loads((tmp_path / "on_test" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_val_accuracy"] is not None
    assert not {"test_accuracy", "test_loss", "test_accuracy_last", "num_test"} & set(summary)
    assert not (tmp_path / "on_test" / "test_predictions.npz").exists()
    assert summary["index"]["val_split"] == "test" and summary["index"]["clips"]["test"] == 0
    assert summary["readable_clips"] == {"train": len(index.train), "val": len(good), "test": 0}


@pytest.mark.slow
def test_one_epoch_smoke_run_and_a_warm_second_run(tmp_path):
    data = tiny_sign_clips(tmp_path / "synthetic")
    args = [
        "--data-dir",
        str(data),
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--run-dir",
        "run",
        "--cache-dir",
        "cache",
    ]
    done = _cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "missing" in done.stdout and "Epoch 01/1 | loss=" in done.stdout
    # Offline, the default encoder is still ImageNet-pretrained: its weights ship with the
    # requirements (EfficientNet-Lite0), so there is no warning about a random encoder.
    assert "RANDOM" not in done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and not summary["frozen_backbone_is_random"]
    assert summary["backbone_weights_used"] == "imagenet-579344248a93e230"
    assert summary["num_test"] == summary["readable_clips"]["test"] > 0
    assert 0 <= summary["test_accuracy"] <= 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone"] == "efficientnet_lite0" and config["backbone_weights"] == "imagenet"
    assert summary["feature_cache"]["hits"] == 0 and summary["feature_cache"]["misses"] > 0
    assert sum(summary["index"]["missing"].values()) >= 1
    # Another run on the same data starts warm: every clip from the cache.
    again = _cli(
        [*args[:-4], "--temporal", "avg", "--run-dir", "run2", "--cache-dir", "cache"], tmp_path
    )
    assert again.returncode == 0, again.stderr
    warm = json.loads((tmp_path / "run2" / "summary.json").read_text())["feature_cache"]
    assert warm["misses"] == 0 and warm["hits"] == summary["feature_cache"]["misses"]
    # Without the cache the frozen encoder runs inside the model, here on feature maps.
    uncached = _cli(
        [*args[:-4], "--feature-cache", "off", "--frame-attention", "spatial", "--run-dir", "run3"],
        tmp_path,
    )
    assert uncached.returncode == 0, uncached.stderr
    summary3 = json.loads((tmp_path / "run3" / "summary.json").read_text())
    assert summary3["feature_cache"] == "off" and summary3["epochs_completed"] == 1


def _h264(path, frames, fps):
    height, width = frames.shape[1:3]
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-r",
            str(fps),
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        input=frames.tobytes(),
        check=True,
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg makes the H.264 clips")
@pytest.mark.slow
def test_a_wlasl_folder_in_nslt_format_with_h264_clips_trains_unchanged(tmp_path):
    """Varied length, frame rate and size; missing files; frame_end past the end; nslt index."""
    data = tmp_path / "WLASL"
    (data / "videos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    index, shapes = {}, [(48, 64), (64, 48), (50, 70)]
    for i in range(12):
        label, split = i % 2, ("train" if i < 8 else "val" if i < 10 else "test")
        video_id = f"{i:05d}"
        index[video_id] = {"subset": split, "action": [label, 1, 200 if i == 0 else -1]}
        if i == 5:
            continue  # listed but missing, as in WLASL
        length = 10 + 3 * i
        frames = rng.integers(0, 40, (length, *shapes[i % 3], 3), dtype=np.uint8)
        frames[:, :, :, label] += 150  # the class is visible
        _h264(data / "videos" / f"{video_id}.mp4", frames, fps=(25, 30, 24)[i % 3])
    (data / "nslt_100.json").write_text(json.dumps(index))
    (data / "wlasl_class_list.txt").write_text("0\tbook\n1\tdrink\n")
    done = _cli(
        [
            "--data-dir",
            str(data),
            "--image-size",
            "32",
            "--epochs",
            "2",
            "--run-dir",
            "run",
            "--cache-dir",
            "cache",
            "--backbone-weights",
            "none",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "missing videos: train 1" in done.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["class_names"] == ["book", "drink"] and summary["skipped_files"] == []
    assert summary["num_test"] == 2  # 00010 and 00011, scored once at the end
    labels = np.load(tmp_path / "run" / "test_predictions.npz")["label"]
    assert labels.tolist() == [0, 1]
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [1, 2]


def test_preset_seed_help_shows_the_original_settings(monkeypatch, tmp_path, capsys):
    assert _main(["--preset", "seed", "--help"], monkeypatch, tmp_path) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "(default: nslt_100.json)",
        "(default: alphabetical)",
        "sample (default: center)",
        "(0: off) (default: 5)",
        "epochs to train (default: 20)",
        "examples per training step (default: 4)",
    ):
        assert shown in text
    spec = video_experiment.VideoExperiment.from_args(argparse.Namespace(preset="seed"))
    assert (spec.val_split, spec.lr, spec.temporal, spec.limit_classes) == ("test", 1e-3, "tcn", 10)


def test_signer_split_with_an_nslt_index_is_one_line(monkeypatch, tmp_path, capsys):
    data = tmp_path / "wlasl"
    (data / "videos").mkdir(parents=True)
    (data / "nslt_100.json").write_text('{"00001": {"subset": "train", "action": [0, 1, 5]}}')
    (data / "wlasl_class_list.txt").write_text("0\tbook\n")
    args = ["--data-dir", str(data), "--split", "signer-independent"]
    assert _main(args, monkeypatch, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith(
        "--split signer-independent needs WLASL_v0.3.json (the signer_id of every instance); "
        "nslt_100.json has none: pass --index WLASL_v0.3.json"
    )
