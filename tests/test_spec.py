"""The experiment specs: one declaration per setting, and everything derived from it."""

import argparse
import dataclasses
import json
import re
import subprocess
import sys

import pytest
from cli_runner import ROOT

from keras_attn.cli import Parser, spec_from_args
from keras_attn.errors import UserError
from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.training.config import TrainingSpec

SPECS = (ImageExperiment, VideoExperiment)


def _parse(spec_class, argv):
    parser = Parser(prog="test")
    spec_class.add_flags(parser)
    return spec_class.from_args(parser.parse_args(argv))


@pytest.mark.parametrize("spec_class", SPECS)
def test_every_setting_has_help_a_valid_default_and_a_flag(spec_class):
    spec = spec_class()
    spec.validate()
    parser = Parser(prog="test")
    spec_class.add_flags(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    for field in dataclasses.fields(spec_class):
        assert field.metadata["help"], field.name
        assert "--" + field.name.replace("_", "-") in flags, field.name


def test_precedence_is_flags_then_config_then_preset_then_defaults(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lr": 0.05, "epochs": 7, "preset": "seed"}))
    spec = _parse(ImageExperiment, ["--preset", "seed", "--config", str(config), "--epochs", "3"])
    assert spec.epochs == 3  # the flag
    assert spec.lr == 0.05  # the config file
    assert spec.backbone == "densenet" and spec.seed == 42  # the preset
    assert spec.dropout == ImageExperiment().dropout  # the default
    assert _parse(ImageExperiment, []).epochs == 20  # the image experiment's own default
    assert _parse(VideoExperiment, []).epochs == 20 and TrainingSpec().epochs == 100


def test_a_run_config_read_back_is_the_same_spec_and_the_same_run_name(tmp_path):
    spec = _parse(
        ImageExperiment, ["--attention", "spatial", "--lr", "1e-3", "--warmup-epochs", "2"]
    )
    path = tmp_path / "config.json"
    path.write_text(spec.config_json())
    again = _parse(ImageExperiment, ["--config", str(path)])
    assert again == spec
    assert again.run_name() == spec.run_name()
    assert spec.run_name().startswith("synthetic-small_cnn-spatial-seed0-")
    assert spec.replace(lr=2e-3).run_name() != spec.run_name()
    # Where a run goes is not part of what it computes.
    assert spec.replace(run_dir="elsewhere", overwrite=True).run_name() == spec.run_name()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": 0}, "--lr must be positive"),
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"attention": "sparse"}, "unknown attention 'sparse'; valid: none, channel"),
        ({"label_smoothing": 1.0}, "--label-smoothing must be in"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"lr": "fast"}, "--lr: expected float"),
        ({"bogus": 1}, "unknown setting(s) for the ImageExperiment: bogus"),
        ({"backbone_weights": "imagenet"}, "only efficientnet_lite0, mobilenet_v2"),
    ],
)
def test_a_bad_value_is_a_user_error_naming_its_flag(values, message):
    with pytest.raises(UserError, match=re.escape(message)):
        ImageExperiment.from_dict(values)


def test_json_numbers_are_read_as_the_settings_types():
    spec = ImageExperiment.from_dict({"epochs": 3.0, "lr": 1, "warmup_epochs": 0})
    assert isinstance(spec.epochs, int) and spec.epochs == 3
    assert isinstance(spec.lr, float) and isinstance(spec.warmup_epochs, float)


def test_help_shows_each_default_once_and_the_spec_help_text():
    parser = Parser(prog="test")
    VideoExperiment.add_flags(parser)
    text = parser.format_help()
    assert "frames sampled per clip (default: 8)" in text
    assert "training steps per call into TensorFlow" in text and "(default: 32)" in text


def test_print_config_prints_the_resolved_spec_and_exits(capsys):
    parser = Parser(prog="test")
    ImageExperiment.add_flags(parser)
    with pytest.raises(SystemExit) as exit_info:
        spec_from_args(ImageExperiment, parser.parse_args(["--print-config", "--lr", "0.01"]))
    assert exit_info.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ImageExperiment(lr=0.01).config()
    assert "run_dir" not in printed and "overwrite" not in printed


@pytest.mark.slow
def test_train_image_print_config_in_a_fresh_process():
    done = subprocess.run(
        [sys.executable, str(ROOT / "train_image.py"), "--print-config", "--preset", "seed"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)
        == ImageExperiment.from_dict({**ImageExperiment.PRESETS["seed"], "preset": "seed"}).config()
    )


def test_no_module_reads_a_setting_by_string_key():
    # Settings are typed attributes of a spec; only the spec itself handles them by name.
    names = {f.name for spec in SPECS for f in dataclasses.fields(spec)}
    holders = r"\b(settings|s|values|cfg|config|defaults|DEFAULTS|preset|spec|run_settings)"
    pattern = re.compile(holders + r"""\[["'](""" + "|".join(sorted(names)) + r""")["']\]""")
    files = [
        *(ROOT / "keras_attn").rglob("*.py"),
        *(ROOT / "tuning").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
        ROOT / "train_image.py",
        ROOT / "train_video.py",
    ]
    # data/ has its own generators' parameters (not run settings); spec.py is the spec.
    skipped = {ROOT / "keras_attn" / "spec.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path not in skipped and "data" not in path.relative_to(ROOT).parts[1:2]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_a_setting_is_one_field_and_shows_up_everywhere():
    # The tuner and the study take their flags from the same declaration.
    from keras_attn.study.__main__ import parser as study_parser
    from tuning.__main__ import parser as tuning_parser

    for parser in (tuning_parser, study_parser):
        text = argparse.ArgumentParser.format_help(
            parser._subparsers._group_actions[0].choices["image"]
        )
        assert "--focal-gamma" in text and "focal loss: the focusing exponent" in text


def test_the_augment_setting_reaches_the_training_pipeline(tmp_path, monkeypatch):
    from keras_attn.experiments.image import load_data

    monkeypatch.chdir(tmp_path)
    small = dict(train_per_class=2, image_size=16)
    assert load_data(ImageExperiment(**small)).augment == "crop_pad"  # the source's own
    assert load_data(ImageExperiment(**small, augment="none")).augment == "none"
    assert ImageExperiment(augment="none").run_name() != ImageExperiment().run_name()
