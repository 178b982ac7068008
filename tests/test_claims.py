"""`python -m keras_attn.study check`: the README's findings recomputed from committed data."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keras_attn.errors import UserError
from keras_attn.study import claims

ROOT = Path(__file__).resolve().parents[1]


def _study(folder: Path) -> None:
    """Two variants x 3 seeds; b beats a by 0.1 best val acc at every seed, and on test
    b answers 20 more of 100 examples."""
    rows = []
    for seed in range(3):
        for variant, acc in (("a", 0.5 + 0.01 * seed), ("b", 0.6 + 0.01 * seed)):
            run = f"{variant}-seed{seed}"
            rows.append(
                dict(
                    variant=variant,
                    seed=seed,
                    status="completed",
                    lr=0.01,
                    best_val_accuracy=acc,
                    run_dir=f"/elsewhere/runs/{run}",
                )
            )
            label = np.arange(100) % 4
            predicted = label.copy()
            wrong = 40 if variant == "a" else 20
            predicted[:wrong] = (label[:wrong] + 1) % 4
            (folder / "runs" / run).mkdir(parents=True)
            np.savez_compressed(
                folder / "runs" / run / "test_predictions.npz", label=label, predicted=predicted
            )
    rows.append(
        dict(
            variant="b",
            seed=0,
            status="completed",
            lr=0.1,
            best_val_accuracy=0.1,
            run_dir="/elsewhere/runs/b-lr0.1-seed0",
        )
    )
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)


def _findings(tmp_path, readme_text, **texts):
    _study(tmp_path / "toy")
    (tmp_path / "README.md").write_text(readme_text)
    (tmp_path / "findings.toml").write_text(f'''readme = "README.md"

[[claim]]
study = "toy"
statistic = "mean_std_ci"
variant = "b"
where = {{ lr = 0.01 }}
text = "{texts.get("mean", "0.610 ± 0.010 [0.59, 0.63]")}"

[[claim]]
study = "toy"
statistic = "paired_difference"
variant = "b"
baseline = "a"
where = {{ lr = 0.01 }}
text = "{texts.get("paired", "+0.100 [0.100, 0.100]")}"

[[claim]]
study = "toy"
statistic = "test_difference"
metric = "test_accuracy"
variant = "b"
baseline = "a"
where = {{ lr = 0.01 }}
text = "{texts.get("test", "+0.200 [0.120, 0.280]")}"
''')
    return tmp_path


def test_claims_recompute_from_the_data_and_hold_when_the_readme_quotes_them(tmp_path, capsys):
    folder = _findings(tmp_path, "")
    listed, _ = claims.read_claims(folder)
    got = [claims.recompute(folder, c) for c in listed]
    assert got[0] == "0.610 ± 0.010 [0.59, 0.63]"  # the lr 0.1 run is filtered out
    assert got[1] == "+0.100 [0.100, 0.100]"
    # 0.8 − 0.6 on test; the bootstrap interval is over seeds and the 100 examples.
    assert got[2] == "+0.200 [0.120, 0.280]"
    (folder / "README.md").write_text(f"b: {got[0]}; b − a: {got[1]}; test: {got[2]}")
    assert claims.check(folder) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 of 3 claims hold"


def test_in_a_study_that_tuned_the_rate_only_the_chosen_rate_s_runs_count(tmp_path):
    # b ran at 0.01 (mean best val 0.61) and once at 0.1 (0.1): with study.json saying the
    # rate was tuned, b's figures are its 0.01 runs' without any `where`, as in the report.
    folder = _findings(tmp_path, "")
    toml = folder / "findings.toml"
    toml.write_text(toml.read_text().replace("where = { lr = 0.01 }\n", ""))
    listed, _ = claims.read_claims(folder)
    untuned = claims.recompute(folder, listed[0])
    assert untuned != "0.610 ± 0.010 [0.59, 0.63]"  # the 0.1 run counts: nothing says tuned
    meta = dict(axes=dict(lr=[0.01, 0.1]), tuned=["lr"])
    (folder / "toy" / "study.json").write_text(json.dumps(dict(kind="image", meta=meta)))
    assert [claims.recompute(folder, c) for c in listed] == [
        "0.610 ± 0.010 [0.59, 0.63]",
        "+0.100 [0.100, 0.100]",
        "+0.200 [0.120, 0.280]",
    ]
    (folder / "toy" / "study.json").write_text("{not json")
    with pytest.raises(UserError, match="study.json: not a readable study file"):
        claims.recompute(folder, listed[0])


def test_a_readme_figure_the_data_do_not_give_or_the_readme_lacks_fails(tmp_path, capsys):
    folder = _findings(tmp_path, "b: 0.610 ± 0.010 [0.59, 0.63]", paired="+0.120 [0.100, 0.140]")
    assert claims.check(folder) == 2  # the paired figure is wrong; the test one is not quoted
    out = capsys.readouterr().out
    assert "FAIL toy: paired_difference of b − a" in out and "'+0.100 [0.100, 0.100]'" in out
    assert "FAIL toy: test_difference of b − a" in out and "is not in" in out
    assert out.splitlines()[-1] == "1 of 3 claims hold"


def test_bad_claims_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="findings.toml: no such file"):
        claims.read_claims(tmp_path)
    (tmp_path / "findings.toml").write_text("[[claim]]\nstudy = 'x'\nstatistic = 'median'\n")
    with pytest.raises(UserError, match="claim 1: .*unexpected|missing"):
        claims.read_claims(tmp_path)
    (tmp_path / "findings.toml").write_text(
        "[[claim]]\nstudy='x'\nstatistic='median'\nvariant='a'\ntext='1'\n"
    )
    with pytest.raises(UserError, match="unknown statistic 'median'"):
        claims.read_claims(tmp_path)
    (tmp_path / "findings.toml").write_text("[[claim]\n")
    with pytest.raises(UserError, match="not a readable TOML file"):
        claims.read_claims(tmp_path)


def _check(folder: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keras_attn.study", "check", folder],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )


def test_one_committed_study_s_claims_hold_and_the_cli_says_so(tmp_path):
    # Every committed claim is recomputed by CI's own `study check docs/findings` step
    # (.ci/run, about 90 s); here the CLI runs end to end on one study's real data, the
    # data-size grid, whose claims use all six statistics.
    findings = ROOT / "docs" / "findings"
    blocks = findings.joinpath("findings.toml").read_text().split("[[claim]]")
    kept = [b for b in blocks[1:] if '\nstudy = "datasize"\n' in b]
    assert {claims.Claim(**tomllib.loads(b)).statistic for b in kept} == set(claims.STATISTICS)
    (tmp_path / "findings.toml").write_text(
        f"readme = {str(ROOT / 'README.md')!r}\n" + "".join("[[claim]]" + b for b in kept)
    )
    (tmp_path / "datasize").symlink_to(findings / "datasize")
    done = _check(str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == f"{len(kept)} of {len(kept)} claims hold"
    assert "FAIL" not in done.stdout
    missing = _check("no/such/folder")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .endswith("no/such/folder/findings.toml: no such file (the findings' claims)")
    )


def test_an_interaction_claim_is_the_slope_of_the_paired_test_difference_on_its_axis(
    tmp_path, capsys
):
    # b − a on test grows by 0.01 per 4 distractors at every seed; a seed-specific offset
    # (the same at every clutter level) leaves the slope, and its interval, exact.
    rows = [
        dict(
            variant=variant,
            seed=seed,
            distractors=d,
            status="completed",
            test_accuracy=0.9 - 0.01 * d + 0.02 * seed + (0.0025 * d if variant == "b" else 0),
        )
        for seed in range(3)
        for d in (0, 4, 8)
        for variant in ("a", "b")
    ]
    rows.append(dict(variant="b", seed=0, distractors=8, status="failed", test_accuracy=0.0))
    (tmp_path / "toy").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "toy" / "results.csv", index=False)
    claim = """[[claim]]
study = "toy"
statistic = "interaction"
metric = "test_accuracy"
variant = "b"
baseline = "a"
axis = "distractors"
text = "{}"
"""
    (tmp_path / "findings.toml").write_text('readme = "README.md"\n' + claim.format("+0.0025"))
    listed, _ = claims.read_claims(tmp_path)
    assert claims.recompute(tmp_path, listed[0]) == "+0.0025 [0.0025, 0.0025]"
    (tmp_path / "README.md").write_text("slope +0.0025 [0.0025, 0.0025] per distractor")
    (tmp_path / "findings.toml").write_text(
        'readme = "README.md"\n' + claim.format("+0.0025 [0.0025, 0.0025]")
    )
    assert claims.check(tmp_path) == 0
    (tmp_path / "README.md").write_text("slope +0.0030 [0.0025, 0.0025] per distractor")
    assert claims.check(tmp_path) == 1  # a hand-edited README figure fails
    assert "is not in" in capsys.readouterr().out
    (tmp_path / "findings.toml").write_text(
        'readme = "README.md"\n' + claim.format("1").replace('axis = "distractors"\n', "")
    )
    with pytest.raises(UserError, match="interaction needs an `axis`"):
        claims.read_claims(tmp_path)


def test_an_interaction_claim_on_two_named_values_goes_from_the_grids_first_to_its_second(
    tmp_path,
):
    # b − a is −0.01 on resnet_small and −0.04 on small_cnn at every seed. The grid lists
    # small_cnn first, so the change is +0.03, not the −0.03 an alphabetical order gives.
    rows = [
        dict(
            variant=variant,
            seed=seed,
            backbone=backbone,
            status="completed",
            test_accuracy=0.9 + 0.01 * seed - (cost if variant == "b" else 0.0),
        )
        for seed in range(3)
        for backbone, cost in (("small_cnn", 0.04), ("resnet_small", 0.01))
        for variant in ("a", "b")
    ]
    (tmp_path / "toy").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "toy" / "results.csv", index=False)
    axes = {"backbone": ["small_cnn", "resnet_small"]}
    (tmp_path / "toy" / "study.json").write_text(json.dumps({"meta": {"axes": axes}}))
    (tmp_path / "findings.toml").write_text(
        'readme = "README.md"\n[[claim]]\nstudy = "toy"\nstatistic = "interaction"\n'
        'metric = "test_accuracy"\nvariant = "b"\nbaseline = "a"\naxis = "backbone"\n'
        'text = "?"\n'
    )
    listed, _ = claims.read_claims(tmp_path)
    assert claims.recompute(tmp_path, listed[0]) == "+0.0300 [0.0300, 0.0300]"


def test_a_variance_ratio_claim_pools_the_seed_variance_within_its_axis(tmp_path):
    # At each size b scatters over seeds exactly twice as far as a around that size's own
    # mean (variance 4x), while the sizes' means differ a lot: pooled within sizes the
    # ratio is exactly 4 on 4 + 4 degrees of freedom; unpooled, the means' spread swamps it.
    rows = [
        dict(variant=v, seed=seed, size=size, status="completed", test_accuracy=y)
        for size, mean in ((50, 0.5), (200, 0.9))
        for seed, step in enumerate((-1, 0, 1))
        for v, y in (("a", mean + 0.01 * step), ("b", mean - 0.1 + 0.02 * step))
    ]
    rows.append(dict(variant="b", seed=3, size=200, status="failed", test_accuracy=0.0))
    (tmp_path / "toy").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "toy" / "results.csv", index=False)
    claim = """[[claim]]
study = "toy"
statistic = "variance_ratio"
metric = "test_accuracy"
variant = "b"
baseline = "a"
{axis}text = "?"
"""
    toml = tmp_path / "findings.toml"
    toml.write_text('readme = "README.md"\n' + claim.format(axis='axis = "size"\n'))
    listed, _ = claims.read_claims(tmp_path)
    # F(4, 4) quantiles: 0.025 -> 0.1041, 0.975 -> 9.6045.
    assert claims.recompute(tmp_path, listed[0]) == "4.00 [0.42, 38.42]"
    toml.write_text('readme = "README.md"\n' + claim.format(axis=""))
    listed, _ = claims.read_claims(tmp_path)
    unpooled = claims.recompute(tmp_path, listed[0])
    assert unpooled.startswith("1.0") and unpooled != "4.00 [0.42, 38.42]"
    toml.write_text('readme = "README.md"\n' + claim.format(axis='axis = "width"\n'))
    listed, _ = claims.read_claims(tmp_path)
    with pytest.raises(UserError, match="no column 'width'"):
        claims.recompute(tmp_path, listed[0])
    bad = claim.format(axis='axis = "size"\n').replace("variance_ratio", "mean_std_ci")
    toml.write_text('readme = "README.md"\n' + bad)
    with pytest.raises(UserError, match="`axis` goes only with interaction or variance_ratio"):
        claims.read_claims(tmp_path)


def test_a_focus_claim_is_the_final_epoch_s_focus_against_chance_paired_by_seed(tmp_path):
    # Final-epoch focus of b: 0.6, 0.7, 0.8 against chance 0.5 at every seed (+0.2 on
    # average, t-interval over 3 seeds); its earlier epochs and a at 0.3 must not count.
    rows = []
    for seed in range(3):
        for variant, final in (("a", 0.3), ("b", 0.6 + 0.1 * seed)):
            rows += [
                dict(variant=variant, seed=seed, epoch=e, focus_temporal=value)
                | dict(focus_temporal_chance=0.5, val_accuracy=0.5, loss=1.0)
                for e, value in ((1, 0.9), (2, final))
            ]
    (tmp_path / "toy").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "toy" / "curves.csv", index=False)
    runs = [
        dict(variant=v, seed=seed, status="completed", best_val_accuracy=0.5, best_epoch=2)
        for seed in range(3)
        for v in ("a", "b")
    ]
    pd.DataFrame(runs).to_csv(tmp_path / "toy" / "results.csv", index=False)
    claim = """[[claim]]
study = "toy"
statistic = "focus"
metric = "focus_temporal"
variant = "{}"
text = "?"
"""
    (tmp_path / "findings.toml").write_text('readme = "README.md"\n' + claim.format("b"))
    listed, _ = claims.read_claims(tmp_path)
    # t(2) 0.975 quantile 4.3027 x std 0.1 / sqrt(3) = 0.248.
    assert claims.recompute(tmp_path, listed[0]) == "0.700 vs 0.500: +0.200 [−0.048, 0.448]"
    (tmp_path / "findings.toml").write_text('readme = "README.md"\n' + claim.format("a"))
    listed, _ = claims.read_claims(tmp_path)
    assert claims.recompute(tmp_path, listed[0]).startswith("0.300 vs 0.500: −0.200")
