"""keras_attn.study.stats and .report on small hand-built grids with known answers."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from keras_attn.study import report, stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Student t quantile t(0.975, df=2), from a table: pins scipy's use to a hand value.
T_975_DF2 = 4.302652729911275
# Per-seed val accuracy with jitter in the last third; epochs 1..6.
BASE_CURVES = {
    0: [0.20, 0.40, 0.50, 0.56, 0.62, 0.57],
    1: [0.22, 0.41, 0.52, 0.55, 0.63, 0.56],
    2: [0.18, 0.39, 0.51, 0.57, 0.61, 0.58],
}
# Noise that is symmetric across seeds: a paired difference around 0.
SYMMETRIC = {0: 0.02, 1: -0.02, 2: 0.001}


def _curve_rows(variant, seed, val_accuracy, extras=True, status="completed"):
    rows = []
    for epoch, val in enumerate(val_accuracy, start=1):
        row = {"variant": variant, "seed": seed, "epoch": epoch, "val_accuracy": val}
        row["loss"] = 2.0 / epoch
        if extras:
            row.update(
                accuracy=val + 0.2,
                val_loss=2.2 / epoch,
                grad_norm_mean=1.0 + 0.1 * epoch + (50.0 if status == "diverged" else 0.0),
                grad_norm_max=2.0 + 0.2 * epoch,
                batch_loss_std=0.1 / epoch,
                gap_accuracy=0.2,
                focus_gradcam=0.3 + 0.02 * epoch,
                focus_chance=0.25,
            )
            if variant != "none":
                row["focus_attention"] = 0.4 + 0.05 * epoch + 0.01 * seed
        rows.append(row)
    return rows


def _grid(tmp_path=None, extras=True, variants=None):
    """(curves, runs): none (baseline), cbam (+0.05, smooth), se (symmetric noise, 1 diverged)."""
    variants = variants or {
        "none": {s: c for s, c in BASE_CURVES.items()},
        "cbam": {s: [v + 0.05 for v in c[:4]] + [c[4] + 0.05] * 2 for s, c in BASE_CURVES.items()},
        "se": {s: [v + SYMMETRIC[s] for v in c] for s, c in BASE_CURVES.items()},
    }
    curve_rows, run_rows = [], []
    for variant, seeds in variants.items():
        for seed, val in seeds.items():
            status = "diverged" if (variant == "se" and seed == 2) else "completed"
            curve_rows += _curve_rows(variant, seed, val, extras, status)
            run_dir = tmp_path / variant / str(seed) if tmp_path is not None else ""
            run_rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "status": status,
                    "best_val_accuracy": 0.05 if status == "diverged" else max(val),
                    "best_epoch": int(np.argmax(val)) + 1,
                    "final_val_accuracy": val[-1],
                    "epochs_completed": len(val),
                    "wall_seconds": 30.0,
                    "run_dir": str(run_dir),
                    "failure": "loss became NaN at epoch 3" if status == "diverged" else "",
                }
            )
    return pd.DataFrame(curve_rows), pd.DataFrame(run_rows)


def _meta(kind="image", **config):
    return {
        "kind": kind,
        "baseline": "none" if kind == "image" else "avg",
        "command": f"python -m keras_attn.study {kind} --seeds 3 --epochs 6",
        "config": {"epochs": 6, "batch_size": 32, "learning_rate": 3e-4, **config},
        "versions": {"keras": "3.15.1", "tensorflow": "2.21.0"},
        "data": "synthetic shapes: 600 train / 200 val examples, 10 classes",
        "chance": 0.1,
        "out": "unused",
    }


# --------------------------------------------------------------------------- stats


def test_mean_ci_matches_hand_computation():
    mean, std, low, high, n = stats.mean_ci([0.80, 0.82, math.nan, 0.84])
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert n == 3
    assert mean == pytest.approx(0.82)
    assert std == pytest.approx(0.02)
    assert (low, high) == pytest.approx((0.82 - half, 0.82 + half))


def test_mean_ci_one_and_no_values_do_not_crash():
    mean, std, low, high, n = stats.mean_ci([0.7])
    assert (mean, n) == (0.7, 1)
    assert math.isnan(std) and math.isnan(low) and math.isnan(high)
    assert stats.mean_ci([])[4] == 0


def test_fluctuation_uses_the_changes_of_the_last_third():
    # Last ceil(6/3)=2 changes: +0.05 and -0.03, std (ddof=1) = 0.08/sqrt(2).
    assert stats.fluctuation([0.1, 0.3, 0.5, 0.6, 0.65, 0.62]) == pytest.approx(0.08 / math.sqrt(2))
    assert stats.fluctuation([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(stats.fluctuation([0.1, 0.2, 0.3]))  # one change only


def test_epochs_to_90_and_fluctuation_per_variant():
    curves, runs = _grid(
        variants={"v": {0: [0.1, 0.3, 0.5, 0.6, 0.65, 0.62], 1: [0.2, 0.59, 0.6] * 2}}
    )
    table = stats.per_variant_stability(curves, runs)
    # Seed 0: 90% of 0.65 = 0.585, first reached at epoch 4; seed 1: 0.54 at epoch 2.
    assert table.loc["v", "epochs_to_90"] == pytest.approx(3.0)
    flat = np.diff([0.2, 0.59, 0.6] * 2)[-2:].std(ddof=1)
    assert table.loc["v", "fluctuation"] == pytest.approx((0.08 / math.sqrt(2) + flat) / 2)


def test_stability_counts_a_diverged_run_and_leaves_it_out_of_the_means():
    curves, runs = _grid()
    table = stats.per_variant_stability(curves, runs, baseline="none")
    assert list(table.index) == ["none", "cbam", "se"]
    se = table.loc["se"]
    assert (se["n_runs"], se["n_completed"], se["n_failed"]) == (3, 2, 1)
    kept = [max(BASE_CURVES[s]) + SYMMETRIC[s] for s in (0, 1)]
    assert se["best_val_accuracy_mean"] == pytest.approx(np.mean(kept))
    assert se["best_val_accuracy_n"] == 2
    # The diverged run's exploding gradient norm must not leak into the variant's mean.
    assert se["grad_norm_max"] == pytest.approx(2.0 + 0.2 * 6)
    assert table.loc["none", "n_failed"] == 0
    assert table.loc["cbam", "focus_attention"] == pytest.approx(0.7 + 0.01)
    assert table.loc["none", "gap_accuracy"] == pytest.approx(0.2)


def test_seed_spread_is_the_mean_across_seed_std():
    curves, runs = _grid()
    table = stats.per_variant_stability(curves, runs, baseline="none")
    expected = np.mean(np.std(np.array(list(BASE_CURVES.values())), axis=0, ddof=1))
    assert table.loc["none", "seed_spread"] == pytest.approx(expected)


def test_paired_difference_verdicts():
    base = {0: 0.70, 1: 0.75, 2: 0.72}
    rows = [("none", s, v) for s, v in base.items()]
    rows += [("plus", s, v + 0.05 + 0.001 * (s - 1)) for s, v in base.items()]
    rows += [("minus", s, v - 0.05) for s, v in base.items()]
    rows += [("noisy", s, v + SYMMETRIC[s]) for s, v in base.items()]
    rows += [("lonely", 0, 0.9)]
    runs = pd.DataFrame(rows, columns=["variant", "seed", "best_val_accuracy"])
    runs["status"] = "completed"
    table = stats.paired_differences(runs, "none", "best_val_accuracy")
    assert list(table.index) == ["plus", "minus", "noisy", "lonely"]
    assert table["verdict"].to_dict() == {
        "plus": "better",
        "minus": "worse",
        "noisy": "within noise",
        "lonely": "too few seeds",
    }
    assert table.loc["plus", "mean_diff"] == pytest.approx(0.05)
    assert table.loc["plus", "n"] == 3 and table.loc["lonely", "n"] == 1
    assert table.loc["noisy", "low"] < 0 < table.loc["noisy", "high"]


def test_paired_differences_skip_seeds_where_either_run_failed():
    curves, runs = _grid()
    table = stats.paired_differences(runs, "none", "best_val_accuracy")
    assert table.loc["se", "n"] == 2  # seed 2 diverged
    assert table.loc["se", "mean_diff"] == pytest.approx(np.mean([0.02, -0.02]))


def test_paired_fluctuation_lower_is_better():
    curves, runs = _grid()
    table = stats.paired_fluctuation(curves, runs, "none")
    # cbam's last two epochs are flat: fluctuation drops to ~0 on every seed.
    assert table.loc["cbam", "verdict"] == "better"
    assert table.loc["cbam", "mean_diff"] < 0
    # se only shifts each curve by a constant: the same fluctuation as none.
    assert table.loc["se", "mean_diff"] == pytest.approx(0.0, abs=1e-9)


def test_focus_above_chance():
    curves, runs = _grid()
    table = stats.focus_above_chance(curves, runs).set_index(["variant", "measure"])
    assert table.loc[("cbam", "focus_attention"), "verdict"] == "above chance"
    assert ("none", "focus_attention") not in table.index  # no spatial map for the baseline
    assert table.loc[("none", "focus_gradcam"), "mean_diff"] == pytest.approx(0.42 - 0.25)


# --------------------------------------------------------------------------- report


def _write_artifacts(tmp_path):
    rng = np.random.default_rng(0)
    for variant in ("none", "cbam"):
        run_dir = tmp_path / variant / "0"
        run_dir.mkdir(parents=True)
        assert cv2.imwrite(str(run_dir / "focus.png"), rng.integers(0, 255, (32, 128, 3), np.uint8))
        weights = rng.random((20, 8))
        mask = np.ones((20, 8), bool)
        mask[:, 6:] = False
        in_sign = np.zeros((20, 8), bool)
        in_sign[:, 2:5] = True
        np.savez(run_dir / "temporal_weights.npz", weights=weights, in_sign=in_sign, mask=mask)


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 100
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_write_report_full(tmp_path):
    curves, runs = _grid(tmp_path)
    _write_artifacts(tmp_path)
    path = report.write_report(curves, runs, _meta(), tmp_path / "out")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert "python -m keras_attn.study image --seeds 3 --epochs 6" in text
    for variant in ("none", "cbam", "se"):
        assert f"| {variant} | " in text
    assert "loss became NaN at epoch 3" in text  # the diverged run is listed, not dropped
    assert "better" in text and "within noise" in text
    assert "best val acc +0.050 [" in text and "over none across 3 seeds — better" in text
    assert "over none across 2 seeds — within noise" in text  # se: seed 2 diverged
    assert "Lower late-epoch fluctuation than none, with an interval that excludes 0: cbam" in text
    assert "Only the image study was run" in text
    assert "python -m keras_attn.study video" in text
    assert "600 train" in text and "1 of 9 runs diverged or failed (variants: se)" in text
    names = ("learning_curves", "gradients", "focus", "overlays", "temporal_weights")
    for name in names:
        _assert_png(tmp_path / "out" / "figures" / f"{name}.png")
        assert f"(figures/{name}.png)" in text


def test_report_never_claims_a_noise_level_effect(tmp_path):
    curves, runs = _grid(variants={"none": BASE_CURVES, "se": BASE_CURVES})
    runs.loc[runs["variant"] == "se", "best_val_accuracy"] += pd.Series(SYMMETRIC).to_numpy()
    text = report.write_report(curves, runs, _meta(), tmp_path).read_text()
    assert "does not show that attention stabilises training" in text
    assert "more stable" not in text and "— better" not in text


def test_report_without_optional_columns_or_run_dirs(tmp_path):
    curves, runs = _grid(extras=False)
    runs = runs.drop(columns=["run_dir"])
    path = report.write_report(curves, runs, _meta(), tmp_path)
    text = path.read_text()
    assert "No focus measure was logged" in text
    assert "gap (train − val accuracy) was not logged" in text
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["learning_curves.png"]
    _assert_png(tmp_path / "figures" / "learning_curves.png")


def test_report_with_one_seed_and_the_video_study_as_other(tmp_path):
    image = _grid(variants={"none": {0: BASE_CURVES[0]}, "cbam": {0: BASE_CURVES[1]}})
    video_variants = {"avg": BASE_CURVES, "attn": BASE_CURVES}
    v_curves, v_runs = _grid(extras=False, variants=video_variants)
    v_curves["focus_temporal"] = 0.6
    v_curves["focus_temporal_chance"] = 0.4
    video_meta = _meta("video", frozen_backbone_is_random=True)
    text = report.write_report(*image, _meta(), tmp_path, other=(v_curves, v_runs, video_meta))
    text = text.read_text()
    assert "too few seeds" in text
    assert "Too few paired seeds (fewer than 2 per variant)" in text
    assert "does not show that attention stabilises" not in text
    assert "In the image study (baseline none, 1 seed)" in text
    assert "In the video study (baseline avg, 3 seeds)" in text
    assert "Temporal weight on in-sign frames vs chance: avg 0.600 vs 0.400 (above chance)" in text
    # The video study's flag drives its own report's limits, not the image report's.
    assert "random (untrained) weights" not in text
    video_text = report.write_report(v_curves, v_runs, video_meta, tmp_path / "v").read_text()
    assert "random (untrained) weights" in video_text
    assert "python -m keras_attn.study image" in video_text


def test_a_steadier_but_lower_curve_is_not_called_stabilised_without_a_caveat(tmp_path):
    # "flat": below the baseline everywhere and flat late: lower fluctuation, lower accuracy.
    flat = {s: [v - 0.2 for v in c[:4]] + [c[3] - 0.2] * 2 for s, c in BASE_CURVES.items()}
    curves, runs = _grid(variants={"none": dict(BASE_CURVES), "flat": flat})
    text = report.write_report(curves, runs, _meta(), tmp_path).read_text()
    assert "with an interval that excludes 0: flat" in text
    assert "But flat also reached a lower mean best val accuracy" in text
    assert "slower learning rather than stabilisation" in text


def test_limits_name_the_variants_that_fix_their_own_settings(tmp_path):
    curves, runs = _grid(variants={"none": BASE_CURVES, "cbam:lr=0.02": BASE_CURVES})
    text = report.write_report(curves, runs, _meta(), tmp_path / "own").read_text()
    limits = text[text.index("## Limits of this study") :]
    assert "Variants that fix their own settings (cbam:lr=0.02) run at them" in limits
    assert "none was tuned individually" not in limits
    curves, runs = _grid(variants={"none": BASE_CURVES, "cbam": BASE_CURVES})
    text = report.write_report(curves, runs, _meta(), tmp_path / "shared").read_text()
    assert "One shared set of settings for every variant" in text


def test_limits_warn_that_a_bootstrap_over_few_seeds_is_optimistic(tmp_path):
    curves, runs = _grid(variants={"none": BASE_CURVES, "cbam": BASE_CURVES})
    text = report.write_report(curves, runs, _meta(), tmp_path / "three").read_text()
    limits = text[text.index("## Limits of this study") :]
    assert "The test intervals resample 3 seeds" in limits
    five = {s: BASE_CURVES[s % 3] for s in range(5)}
    curves, runs = _grid(variants={"none": five, "cbam": five})
    text = report.write_report(curves, runs, _meta(), tmp_path / "five").read_text()
    assert "The test intervals resample" not in text


def test_the_setup_counts_runs_by_precision_xla_and_threads():
    from keras_attn.study.report.tables import _policies

    runs = pd.DataFrame(
        dict(precision=["float32"] * 3, xla=[False] * 3, intra_op_threads=[1, 1, 2])
    )
    assert _policies(runs) == (
        "float32, no XLA, 1 thread (2 runs); float32, no XLA, 2 threads (1 runs)"
    )
    older = runs.assign(intra_op_threads=[1, None, None])  # runs from before it was recorded
    assert "float32, no XLA, threads unrecorded (2 runs)" in _policies(older)
    assert _policies(runs.drop(columns="intra_op_threads")) == "float32, no XLA (3 runs)"
