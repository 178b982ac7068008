"""python -m tuning as a user runs it: bad input, image and video searches, resume, distributed."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from cli_runner import OFFLINE, ROOT
from sign_clips import tiny_sign_clips
from tensorboard.plugins.hparams import metadata as hparams_metadata

from keras_attn.cli import main_guard
from keras_attn.data.images import load_image_data
from keras_attn.experiments import image as image_experiment
from tuning.__main__ import main
from tuning.hypermodels import IMAGE_SPACE

TINY_IMAGE = ["image", "--synthetic-per-class", "6", "--image-size", "32", "--epochs", "1"]
TIMEOUT = 240  # seconds any one tuning process may take here


def _env(**more):
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **OFFLINE, **more}


def _exit_code(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python -m tuning", *argv])
    try:
        main_guard(lambda: main(argv))
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _kill(process):
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def _session_hparams(log_dir: Path) -> dict:
    """The HParams session a trial's log dir starts with: {name: value}."""
    for path in glob.glob(str(log_dir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == hparams_metadata.SESSION_START_INFO_TAG:
                    content = value.metadata.plugin_data.content
                    info = hparams_metadata.parse_session_start_info_plugin_data(content)
                    return {
                        k: v.string_value or v.number_value or v.bool_value
                        for k, v in info.hparams.items()
                    }
    return {}


def _scalars(log_dir: Path, tag: str) -> list[float]:
    values = []
    for path in sorted(glob.glob(str(log_dir / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append(float(tf.make_ndarray(value.tensor)))
    return values


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["image", "--tuner", "annealing"], "unknown tuner 'annealing'; valid: random"),
        (["image", "--attention", ""], "--attention is empty"),
        (["image", "--attention", "cbam,self"], "unknown attention 'self'"),
        (["image", "--fixed", "lr=1"], "outside the space"),
        (["image", "--attention", "cbam,none", "--fixed", "attention=linear"], "outside the space"),
        (["image", "--fixed", "momentum=0.9"], "unknown hyperparameter"),
        (["image", "--fixed", "lr"], "expects NAME=VALUE"),
        (["image", "--range", "lr=1e-2:1e-4"], "LOW is above HIGH"),
        (["image", "--range", "attention=1:2"], "categorical"),
        (["image", "--attention", "none", "--fixed", "reduction=8"], "only used when attention"),
        (["image", "--tuner", "hyperband", "--max-trials", "3"], "does not apply"),
        (["image", "--epochs", "0"], "--epochs must be at least 1"),
        (["image", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["video", "--num-frames", "0,8"], "num_frames must be >= 1"),
        (["video", "--temporal", "avg", "--fixed", "tcn_kernel=3"], "only used when temporal"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv, message, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_the_space_narrows_and_declares_conditional_parameters(capsys):
    space = IMAGE_SPACE.narrow({"attention": "none,spatial"}, ["lr=1e-3:1e-2"], ["dropout=0.1"])
    hp = kt.HyperParameters()
    values = space.declare(hp)
    # Neither attention takes a reduction ratio; only spatial takes a kernel size.
    assert [p.name for p in hp.space] == [
        "attention",
        "kernel_size",
        "lr",
        "weight_decay",
        "label_smoothing",
        "dropout",
    ]
    assert values["attention"] == "none" and "kernel_size" not in values
    assert values["dropout"] == 0.1 and hp.space[2].min_value == 1e-3
    hp.values["attention"] = "spatial"
    hp.ensure_active_values()  # as the oracle does: a value for each newly active parameter
    assert space.declare(hp)["kernel_size"] in (3, 5, 7)
    main(["image", "--show-space", "--attention", "none", "--fixed", "dropout=0.1"])
    table = capsys.readouterr().out
    assert "reduction" not in table and "0.1 (fixed)" in table


def test_a_chief_port_in_use_or_a_missing_variable_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("no_grpc_proxy", "")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(busy.getsockname()[1]))
        assert _exit_code(TINY_IMAGE, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot listen on 127.0.0.1" in err and len(err.splitlines()) == 1
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT")
    assert _exit_code(TINY_IMAGE, monkeypatch) == 2
    assert "KERASTUNER_ORACLE_PORT is not" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_search_in_this_process_records_every_trial_and_the_best(monkeypatch, tmp_path, capsys):
    """The fast twin of the searches below: the real tuner, oracle, trial directories and
    results; each trial's model is built and compiled, its training is a stand-in that
    writes the history a run would (val accuracy set by the attention)."""
    monkeypatch.chdir(tmp_path)
    accuracy = {"none": 0.25, "channel": 0.75}
    trained = []

    def trainer(build, train_data, val_data, steps, spec, run_dir, model=None, **options):
        assert model is not None and model.output.shape[-1] == 6  # the tuner built it
        trained.append((Path(run_dir).name, spec.attention, spec.lr))
        history = pd.DataFrame(
            dict(
                epoch=[1, 2],
                loss=[1.5, 1.0],
                val_accuracy=[accuracy[spec.attention] / 2, accuracy[spec.attention]],
                grad_norm_mean=[2.0, 1.0],
            )
        )
        history.to_csv(Path(run_dir) / "history.csv", index=False)
        return {"status": "completed", "best_val_accuracy": accuracy[spec.attention]}

    monkeypatch.setattr(image_experiment, "run_training", trainer)
    argv = [*TINY_IMAGE, "--tuner", "grid", "--attention", "none,channel", "--max-trials", "3"]
    argv += ["--fixed", "lr=1e-3,weight_decay=1e-4,label_smoothing=0,dropout=0.1,reduction=8"]
    main(argv)  # the grid has two cells: the search ends after them
    project = tmp_path / "runs" / "tuning" / "image"
    table = pd.read_csv(project / "trials.csv", dtype={"trial_id": str})
    assert sorted(trained) == sorted(
        ("trial_" + trial_id, attention, 1e-3)
        for trial_id, attention in zip(table["trial_id"], table["attention"], strict=True)
    )
    assert (table["status"] == "COMPLETED").all()
    assert table.set_index("attention")["best_val_accuracy"].to_dict() == accuracy
    assert (table["epochs"] == 2).all() and (table["best_epoch"] == 2).all()
    assert (table["grad_norm_mean"] == 1.0).all()  # measured at the best epoch
    best = json.loads((project / "best_hparams.json").read_text())
    assert best["hyperparameters"]["attention"] == "channel" and best["score"] == 0.75
    for _, row in table.iterrows():
        trial_dir = project / f"trial_{row['trial_id']}"
        assert json.loads((trial_dir / "run.json").read_text())["status"] == "completed"
        assert _session_hparams(trial_dir / "logs")["attention"] == row["attention"]
        assert _scalars(trial_dir / "logs", "best_val_accuracy") == [row["best_val_accuracy"]]
    out = capsys.readouterr().out
    assert "Best: trial" in out and "its model is not in this directory" in out


@pytest.mark.slow
def test_interrupted_image_search_resumes_without_rerunning_finished_trials(
    monkeypatch, tmp_path, capsys
):
    # Eight epochs, so the second trial is still training when Ctrl-C arrives (with one, a
    # pressed-again Ctrl-C could come after it had finished and the search exited 0).
    argv = [*TINY_IMAGE, "--epochs", "8", "--max-trials", "2", "--attention", "none,channel,cbam"]
    project = tmp_path / "runs" / "tuning" / "image"
    # Interrupt (Ctrl-C) the search while its second trial trains.
    log = tmp_path / "interrupted.log"
    with open(log, "w") as output:
        search = subprocess.Popen(
            [sys.executable, "-m", "tuning", *argv],
            cwd=tmp_path,
            env=_env(),
            # A shell that starts jobs in the background (nohup, &) makes them ignore SIGINT,
            # and Python keeps an ignored SIGINT ignored: give the child the default back.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    second = project / "trial_1"
    try:
        deadline = time.monotonic() + TIMEOUT
        # history.csv gets its first row when the trial's first epoch ends: it is training.
        while not (second / "history.csv").exists():
            assert search.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(5):
            search.send_signal(signal.SIGINT)
            try:
                search.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                # Python drops a KeyboardInterrupt raised inside a weakref callback
                # ("Exception ignored in ... KeyboardInterrupt"): press Ctrl-C again, as a
                # user would, unless this one is already being handled.
                if any("interrupted" in _text(second / n) for n in ("run.json", "summary.json")):
                    search.wait(timeout=60)
                    break
    finally:
        _kill(search)
    assert search.returncode == 130, log.read_text()
    assert "run the same command again to resume" in log.read_text()
    first = json.loads((project / "trial_0" / "run.json").read_text())
    assert first["status"] == "completed" and first["pid"] == search.pid
    assert json.loads((project / "trial_1" / "run.json").read_text())["status"] == "interrupted"

    # The same command resumes: trial 0 is kept, trial 1 runs again.
    monkeypatch.chdir(tmp_path)
    main(argv)
    out = capsys.readouterr().out
    assert "1 finished trials kept" in out
    assert json.loads((project / "trial_0" / "run.json").read_text()) == first
    again = json.loads((project / "trial_1" / "run.json").read_text())
    assert again["status"] == "completed" and again["pid"] == os.getpid()

    table = pd.read_csv(project / "trials.csv", dtype={"trial_id": str})
    assert table["trial_id"].tolist() == ["0", "1"]
    assert (table["status"] == "COMPLETED").all() and (table["epochs"] == 8).all()
    assert (table["wall_seconds"] > 0).all() and set(table["tuner_id"]) == {"tuner0"}
    assert set(table["attention"]) <= {"none", "channel", "cbam"}
    assert table.loc[0, "wall_seconds"] == first["wall_seconds"]
    best = json.loads((project / "best_hparams.json").read_text())
    assert best["score"] == table["best_val_accuracy"].max()
    best_row = table.set_index("trial_id").loc[best["trial_id"]]
    assert best["hyperparameters"]["attention"] == best_row["attention"]

    # Every trial is an HParams session with its hyperparameters and final metrics.
    for _, row in table.iterrows():
        logs = project / f"trial_{row['trial_id']}" / "logs"
        session = _session_hparams(logs)
        assert session["attention"] == row["attention"]
        assert session["lr"] == pytest.approx(row["lr"])
        assert _scalars(logs, "best_val_accuracy") == [pytest.approx(row["best_val_accuracy"])]
        # One value per epoch: the interrupted attempt's epochs are not logged twice.
        assert len(_scalars(logs / "validation", "epoch_accuracy")) == row["epochs"]

    # Resuming a finished search runs nothing and only rewrites the results.
    main(argv)
    assert "2 finished trials kept" in capsys.readouterr().out
    assert json.loads((project / "trial_1" / "run.json").read_text()) == again
    pd.testing.assert_frame_equal(
        pd.read_csv(project / "trials.csv", dtype={"trial_id": str}), table
    )
    # Another space in the same project is refused, not silently ignored.
    assert _exit_code([*argv[:-1], "none"], monkeypatch) == 2
    assert "differs in: space" in capsys.readouterr().err

    # best.keras loads in a fresh process after `import keras_attn` (safe mode).
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, keras, numpy as np, keras_attn\n"
            "model = keras.saving.load_model(sys.argv[1])\n"
            "print(model.predict(np.zeros((3, 32, 32, 3)), verbose=0).shape)",
            str(project / "best.keras"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().splitlines()[-1] == "(3, 6)"


@pytest.mark.slow
def test_video_search_prepares_features_once_per_number_of_frames(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    data = tiny_sign_clips(tmp_path / "synthetic")
    argv = ["video", "--data-dir", str(data), "--image-size", "32", "--epochs", "1"]
    argv += ["--tuner", "grid", "--max-trials", "3", "--num-frames", "2,4"]
    argv += ["--temporal", "avg,gru", "--frame-attention", "none", "--width", "16"]
    argv += ["--fixed", "lr=1e-3,weight_decay=1e-4,label_smoothing=0,dropout=0.1"]
    argv += ["--backbone-weights", "none", "--cache-dir", "cache"]
    main(argv)
    out = capsys.readouterr().out
    assert out.count("Frozen features:") == 2  # one per distinct --num-frames, not per trial
    project = tmp_path / "runs" / "tuning" / "video"
    table = pd.read_csv(project / "trials.csv", dtype={"trial_id": str})
    assert len(table) == 3 and (table["status"] == "COMPLETED").all()
    assert set(table["num_frames"]) == {2, 4} and set(table["temporal"]) <= {"avg", "gru"}
    assert "temporal_pool" not in table  # only a TCN pools: never active here
    for trial_id in table["trial_id"]:
        trial = project / f"trial_{trial_id}"
        assert _session_hparams(trial / "logs")["width"] == 16
        # A search chooses among its trials: they validate on val and never see test.
        trial_summary = json.loads((trial / "summary.json").read_text())
        assert trial_summary["index"]["val_split"] == "val"
        assert "test_accuracy" not in trial_summary and "num_test" not in trial_summary
        assert not (trial / "test_predictions.npz").exists()
    best = json.loads((project / "best_hparams.json").read_text())
    frames = best["hyperparameters"]["num_frames"]
    model = keras.saving.load_model(project / "best.keras")
    features = np.zeros((3, frames, *model.inputs[0].shape[2:]), "float32")
    assert model.predict([features, np.ones((3, frames), bool)], verbose=0).shape == (3, 2)


@pytest.mark.slow
def test_a_chief_and_two_workers_on_loopback_share_the_trials(tmp_path):
    # The data exists before the workers start, as it would on a shared disk.
    load_image_data("synthetic", str(tmp_path / "data" / "synthetic"), 32, 0, train_per_class=6)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [*TINY_IMAGE, "--max-trials", "4", "--attention", "none,channel"]
    processes = {}
    try:
        for tuner_id in ("chief", "worker0", "worker1"):
            env = _env(
                KERASTUNER_TUNER_ID=tuner_id,
                KERASTUNER_ORACLE_IP="127.0.0.1",
                KERASTUNER_ORACLE_PORT=str(port),
            )
            with open(tmp_path / f"{tuner_id}.log", "w") as output:
                processes[tuner_id] = subprocess.Popen(
                    [sys.executable, "-m", "tuning", *argv],
                    cwd=tmp_path,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
        deadline = time.monotonic() + TIMEOUT
        for process in processes.values():
            process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in processes.values():
            _kill(process)
    outputs = {k: (tmp_path / f"{k}.log").read_text() for k in processes}
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id}:\n{outputs[tuner_id][-3000:]}"

    project = tmp_path / "runs" / "tuning" / "image"
    table = pd.read_csv(project / "trials.csv", dtype={"trial_id": str})  # by the chief
    assert sorted(table["trial_id"]) == ["0", "1", "2", "3"]
    assert (table["status"] == "COMPLETED").all() and (table["wall_seconds"] > 0).all()
    ran = table.groupby("tuner_id")["trial_id"].apply(set).to_dict()
    assert set(ran) == {"worker0", "worker1"}  # each worker ran at least one trial
    for worker, trials in ran.items():
        assert f"ran trials: {', '.join(sorted(trials))}" in outputs[worker]
    assert "Best: trial" in outputs["chief"] and (project / "best.keras").exists()
    for trial_id in table["trial_id"]:  # each trial ran exactly once
        validation = project / f"trial_{trial_id}" / "logs" / "validation"
        assert len(_scalars(validation, "epoch_accuracy")) == 1
