"""`python -m keras_attn.study slim`: committed runs keep what the claims recompute from."""

import numpy as np
import pytest

from keras_attn.errors import UserError
from keras_attn.study import comparisons
from keras_attn.study.slim import slim


def _run(folder, name, probabilities=True):
    run = folder / "runs" / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    arrays = dict(
        label=rng.integers(0, 10, 5000).astype(np.int16),
        predicted=rng.integers(0, 10, 5000).astype(np.int16),
        predicted_last=rng.integers(0, 10, 5000).astype(np.int16),
    )
    if probabilities:
        arrays["probabilities"] = rng.random((5000, 10)).astype(np.float16)
    np.savez_compressed(run / "test_predictions.npz", **arrays)
    return run, arrays


def test_slim_drops_the_probabilities_and_keeps_every_prediction(tmp_path):
    fat, arrays = _run(tmp_path, "cbam-seed0")
    thin, _ = _run(tmp_path, "none-seed0", probabilities=False)
    (tmp_path / "runs" / "bad-seed0").mkdir()
    (tmp_path / "runs" / "bad-seed0" / "test_predictions.npz").write_bytes(b"not a zip")
    before = (fat / "test_predictions.npz").stat().st_size
    counts = slim(tmp_path)
    assert counts["slimmed"] == 1 and counts["already"] == 1 and counts["unreadable"] == 1
    after = comparisons.test_predictions(fat)
    assert sorted(after) == ["label", "predicted", "predicted_last"]
    for name in after:
        np.testing.assert_array_equal(after[name], arrays[name])
    assert (fat / "test_predictions.npz").stat().st_size < before / 5
    assert counts["saved_bytes"] == before - (fat / "test_predictions.npz").stat().st_size
    assert not list(tmp_path.glob("runs/*/*.partial.npz"))
    assert slim(tmp_path)["slimmed"] == 0  # a second pass has nothing left to drop


def test_slim_of_a_folder_without_runs_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="runs: no such folder"):
        slim(tmp_path)
