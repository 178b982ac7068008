"""train_image.py as a user runs it: errors, a smoke run, resume, the saved model."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import pandas as pd
import pytest
from cli_runner import OFFLINE, ROOT, interrupt, run_cli, run_main, run_to_the_end

import keras_attn  # noqa: F401  (registers the layers for load_model)
from keras_attn.experiments import image as image_experiment

TINY = ["--synthetic-per-class", "6", "--image-size", "32", "--batch-size", "16"]


def _cli(args, cwd):
    return run_cli("train_image.py", args, cwd)


def _main(args, monkeypatch, tmp_path):
    return run_main("train_image.py", args, monkeypatch, tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attention", "sparse"], "unknown attention 'sparse'; valid: none, channel"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--data", "folder"], "--data-dir"),
        (["--data", "folder", "--data-dir", "missing_dir"], "missing_dir"),
        (["--epochs", "zero"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(args, message, monkeypatch, tmp_path, capsys):
    assert _main(args, monkeypatch, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "data").exists()  # refused before any data is generated


def test_folder_with_one_class_and_an_empty_folder_are_refused(monkeypatch, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    assert _main(["--data", "folder", "--data-dir", "empty"], monkeypatch, tmp_path) == 2
    one = tmp_path / "one" / "cat"
    one.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(one / f"{i}.png")
    assert _main(["--data", "folder", "--data-dir", "one"], monkeypatch, tmp_path) == 2
    err = capsys.readouterr().err
    assert "class" in err and "Traceback" not in err


def test_the_script_hands_the_trainer_the_model_data_and_run_dir(monkeypatch, tmp_path, capsys):
    """The fast twin of the smoke run: train_image.py's main in this process up to
    run_training, which only checks what it is given (one batch through the model)."""
    given = {}

    def trainer(build, train_data, val_data, steps, spec, run_dir, summary_extra, **options):
        model = build()
        (x, y), *_ = train_data(0, 1).take(1)
        given.update(
            logits=tuple(model(x).shape),
            batch=(tuple(x.shape), tuple(y.shape)),
            val=tuple(next(iter(val_data))[0].shape),
            steps=steps,
            spec=spec,
            run_dir=run_dir,
            extra=summary_extra,
            options=options,
        )
        return {"status": "completed"}

    monkeypatch.setattr(image_experiment, "run_training", trainer)
    run_to_the_end("train_image.py", [*TINY, "--epochs", "1"], monkeypatch, tmp_path)
    assert given["logits"] == (16, 6)  # 6 synthetic classes
    assert given["batch"] == ((16, 32, 32, 3), (16,)) and given["val"] == (16, 32, 32, 3)
    assert given["steps"] == 3  # 36 training images in batches of 16
    spec = given["spec"]
    assert (spec.attention, spec.image_size, spec.epochs, spec.batch_size) == ("cbam", 32, 1, 16)
    assert given["run_dir"] == Path("runs", "image", spec.run_name())
    assert given["extra"]["num_train"] == 36 and len(given["extra"]["class_names"]) == 6
    assert given["extra"]["skipped_files"] == []
    assert f"Run directory: {given['run_dir']}" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # the trainer writes it, and it wrote nothing


def test_a_finished_run_is_reported_without_loading_its_data(monkeypatch, tmp_path, capsys):
    from keras_attn.training.run import finished_run

    spec = image_experiment.resolved(image_experiment.ImageExperiment(epochs=1, run_dir="run"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(spec.config(), default=str))
    (run / "best.keras").write_bytes(b"")
    summary = dict(status="completed", epochs_completed=1, best_val_accuracy=0.5)
    (run / "summary.json").write_text(json.dumps(summary))
    # Not scored on test yet: only run_training can do that, with the data.
    assert finished_run(run, spec, test_scored=True) is None
    (run / "summary.json").write_text(json.dumps({**summary, "test_accuracy": 0.4}))
    assert finished_run(run, spec.replace(lr=1.0), test_scored=True) is None  # refused later
    monkeypatch.setattr(image_experiment, "load_data", lambda *a, **k: pytest.fail("data loaded"))
    run_to_the_end("train_image.py", ["--epochs", "1", "--run-dir", "run"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "run is already complete; nothing to do.\nBest val_acc = 0.5000" in out


@pytest.mark.slow
def test_one_epoch_smoke_run_writes_a_complete_run_directory(tmp_path):
    done = _cli([*TINY, "--epochs", "1", "--run-dir", "run"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Epoch 01/1 | loss=" in done.stdout and "Best val_acc = " in done.stdout
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["attention"] == "cbam" and config["image_size"] == 32
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    assert summary["skipped_files"] == [] and summary["wall_seconds"] > 0
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]
    assert list((run / "logs").rglob("events.out.tfevents.*"))
    # best.keras loads in a fresh process after `import keras_attn` alone, safe mode on.
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, keras, numpy as np, keras_attn\n"
            "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "print(model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape)",
            str(run / "best.keras"),
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **OFFLINE},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip().splitlines()[-1] == "(2, 6)"
    # Re-running the finished command only reports it.
    again = _cli([*TINY, "--epochs", "1", "--run-dir", "run"], tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout


@pytest.mark.slow
def test_killed_run_resumes_and_every_epoch_appears_once(tmp_path):
    args = [*TINY, "--epochs", "3", "--run-dir", "run", "--attention", "none"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **OFFLINE}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_image.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metadata = tmp_path / "run" / "backup" / "training_metadata.json"
    for line in proc.stdout:  # kill it inside epoch 2, once epoch 1's backup is written
        if line.startswith("Epoch 01/3"):
            deadline = time.monotonic() + 120
            while not metadata.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0
    resumed = _cli(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_completed"] == 3


@pytest.mark.slow
def test_killed_at_random_points_it_resumes_with_every_epoch_once_and_a_loadable_model(tmp_path):
    """kill -9 at seeded random moments (inside epochs, during checkpoint and backup writes),
    re-running the same command each time: every epoch once, best.keras always loadable,
    and with --deterministic the same history and best model as an uninterrupted run
    (dropout and augmentation included: cbam's head has dropout)."""
    import numpy as np

    args = [*TINY, "--epochs", "4", "--attention", "cbam", "--deterministic"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **OFFLINE}
    rng = np.random.default_rng(7)
    summary_path = tmp_path / "killed" / "summary.json"
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train_image.py"), *args, "--run-dir", "killed"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in proc.stdout:  # training has started: kill within the next second or so
            if line.startswith(("Epoch", "Resuming")):
                time.sleep(rng.uniform(0.0, 1.5))
                break
        proc.kill()
        proc.wait(timeout=60)
        kills += proc.returncode != 0
        if (tmp_path / "killed" / "best.keras").exists():
            keras.saving.load_model(tmp_path / "killed" / "best.keras")  # never half-written
        if summary_path.exists() and json.loads(summary_path.read_text())["status"] == "completed":
            break
    assert kills >= 2  # the test killed some runs, it did not just watch them finish
    finished = _cli([*args, "--run-dir", "killed"], tmp_path)
    assert finished.returncode == 0, finished.stderr

    history = pd.read_csv(tmp_path / "killed" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert json.loads(summary_path.read_text())["status"] == "completed"
    killed_model = keras.saving.load_model(tmp_path / "killed" / "best.keras")
    assert not (tmp_path / "killed" / "backup").exists()  # dropped once training ended

    straight = _cli([*args, "--run-dir", "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr
    expected = pd.read_csv(tmp_path / "straight" / "history.csv")
    measured = [c for c in expected.columns if c != "epoch_seconds"]
    pd.testing.assert_frame_equal(history[measured], expected[measured], rtol=1e-6)
    straight_model = keras.saving.load_model(tmp_path / "straight" / "best.keras")
    for got, want in zip(killed_model.get_weights(), straight_model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    import signal

    args = [*TINY, "--epochs", "30", "--run-dir", "run", "--attention", "none"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **OFFLINE}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_image.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell that starts jobs in the background (nohup, &) makes them ignore SIGINT,
        # and Python keeps an ignored SIGINT ignored: give the child the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("Epoch 02/30"):  # epoch 1 and all its callbacks are done
            interrupt(proc)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] >= 1
