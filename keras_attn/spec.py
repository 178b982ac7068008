"""Typed experiment specs: every setting declared once, with its default, help and check.

An experiment is a frozen dataclass whose fields are `setting(...)`s. From the
declaration alone come the command-line flags (and `--help` with defaults), presets,
validation, the run's `config.json` and run-name hash, `--config FILE` and
`--print-config`; the tuner's search spaces and the study's grid read the same fields.

    @dataclasses.dataclass(frozen=True)
    class Example(Spec):
        lr: float = setting(1e-3, "peak learning rate", check=positive)

    spec = Example.from_args(parser.parse_args())   # flags > --config > preset > defaults
    spec.lr, spec.config()                           # typed attributes; config.json

Code outside a spec reads typed attributes (`spec.lr`), never `settings["lr"]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from keras_attn.errors import UserError

Check = Callable[[Any], str | None]


def setting(
    default,
    help: str,
    *,
    choices: Sequence | Callable[[], Sequence] | None = None,
    check: Check | None = None,
    metavar: str | None = None,
    group: str = "training",
    in_config: bool = True,
    flag: bool = True,
    aliases: tuple[str, ...] = (),
):
    """A spec field.

    Args:
        default: the one default.
        help: the flag's help text (the default is appended).
        choices: allowed values, or a function returning them (a registry that fills
            at import time); checked by `validate`, shown by `--help`.
        check: `check(value)` returns an error text ("must be at least 1") or None.
        group: the `--help` section.
        in_config: False for settings that say where a run goes or how to treat an
            old one (`--run-dir`, `--overwrite`), not what it computes.
        flag: False for a setting with no command-line flag (derived ones).
        aliases: other flags for the same setting (an older name).
    """
    metadata = dict(
        help=help,
        choices=choices,
        check=check,
        metavar=metavar,
        group=group,
        in_config=in_config,
        flag=flag,
        aliases=aliases,
    )
    return dataclasses.field(default=default, metadata=metadata)


def like(base: type, name: str, default):
    """The setting `name` of spec `base` with another default (an experiment's own)."""
    field = base.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=field.metadata)


# ----------------------------------------------------------------------------- checks


def at_least(low) -> Check:
    return lambda v: None if v >= low else f"must be at least {low} (got {v})"


def positive(v) -> str | None:
    return None if v > 0 else f"must be positive (got {v})"


def non_negative(v) -> str | None:
    return None if v >= 0 else f"must be >= 0 (got {v})"


def fraction(v) -> str | None:
    return None if 0 <= v < 1 else f"must be in [0, 1) (got {v})"


def open_fraction(v) -> str | None:
    return None if 0 < v < 1 else f"must be in (0, 1) (got {v})"


# ----------------------------------------------------------------------------- specs


GROUP_ORDER = ("data", "model", "training", "run")


def _group_rank(name: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(name) if name in GROUP_ORDER else len(GROUP_ORDER), name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(annotation) -> type:
    """`int` for `int`, `int | None`; the type a flag's text converts to."""
    hint = eval(annotation, vars(typing)) if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _choices(meta) -> list | None:
    choices = meta["choices"]
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Base of the experiment specs: flags, presets, validation, config and run names."""

    # Named sets of defaults (`--preset NAME`); each experiment fills its own.
    PRESETS: ClassVar[dict[str, dict]] = {}
    # Written before the config's hash in a run's directory name.
    NAME_FIELDS: ClassVar[tuple[str, ...]] = ()
    # Settings renamed since runs were made: old name -> new name (config.json read back).
    RENAMED: ClassVar[dict[str, str]] = {}

    # -- declaration -------------------------------------------------------------------
    @classmethod
    def settings(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in cls.settings()]

    @classmethod
    def setting_type(cls, name: str) -> type:
        return _value_type(cls.__dataclass_fields__[name].type)

    @classmethod
    def help_of(cls, name: str) -> str:
        return cls.__dataclass_fields__[name].metadata["help"]

    @classmethod
    def default_of(cls, name: str):
        return cls.__dataclass_fields__[name].default

    @classmethod
    def choices_of(cls, name: str) -> list | None:
        return _choices(cls.__dataclass_fields__[name].metadata)

    @classmethod
    def listable(cls) -> list[str]:
        """Settings a study can vary as a grid axis: typed scalars in the config whose
        values hold no comma of their own (`--widths 32,64` is one value) and no bools
        (their flags take no value)."""
        return [
            f.name
            for f in cls.settings()
            if f.metadata["flag"]
            and f.metadata["in_config"]
            and cls.setting_type(f.name) in (int, float, str)
            and "," not in str(f.default)
            and f.name != "preset"
        ]

    @classmethod
    def parse_list(cls, name: str, text: str) -> list:
        """`"25,50"` -> `[25, 50]` in the setting's type; a bad or repeated item is a
        one-line error naming the flag."""
        kind = cls.setting_type(name)
        items = [part.strip() for part in str(text).split(",")]
        if not all(items):
            raise UserError(f"{_flag(name)}: empty item in {text!r}")
        try:
            values = [kind(item) for item in items]
        except ValueError:
            raise UserError(f"{_flag(name)}: expected {kind.__name__}s, got {text!r}") from None
        if len(set(values)) != len(values):
            raise UserError(f"{_flag(name)}: a value is listed twice: {text}")
        return values

    # -- command line ------------------------------------------------------------------
    @classmethod
    def add_flags(
        cls,
        parser: argparse.ArgumentParser,
        skip: Sequence[str] = (),
        lists: Sequence[str] = (),
        defaults: dict | None = None,
        config_flags: bool = True,
    ) -> None:
        """One flag per setting, grouped as declared; every flag defaults to None so
        that `from_args` can tell a given flag from a default.

        Args:
            skip: settings without a flag here (the tuner searches them).
            lists: settings that take a comma-separated list here (the study's grid).
            defaults: defaults shown in `--help` instead of the spec's (study, tuner).
            config_flags: add `--config` and `--print-config`.
        """
        shown = {**{f.name: f.default for f in cls.settings()}, **(defaults or {})}
        if config_flags:
            cls._add_config_flags(parser)
        if cls.PRESETS:
            parser.add_argument("--preset", choices=sorted(cls.PRESETS), help=cls.help_of("preset"))
        flagged = [
            f
            for f in cls.settings()
            if f.metadata["flag"] and f.name not in skip and f.name != "preset"
        ]
        # Sections in a fixed order (a subclass's fields come after its base's).
        flagged.sort(key=lambda f: _group_rank(f.metadata["group"]))
        names = sorted({f.metadata["group"] for f in flagged}, key=_group_rank)
        groups = {name: parser.add_argument_group(name) for name in names}
        for field in flagged:
            cls._add_flag(groups[field.metadata["group"]], field, shown[field.name], lists)

    @staticmethod
    def _add_config_flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config",
            metavar="FILE",
            help="read settings from a config.json (a run's: repeats it); flags override it",
        )
        parser.add_argument(
            "--print-config",
            action="store_true",
            help="print the resolved settings as JSON and exit",
        )

    @classmethod
    def _add_flag(cls, group, field: dataclasses.Field, default, lists: Sequence[str]) -> None:
        meta = field.metadata
        help_text = meta["help"] + ("" if default is None else f" (default: {default})")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        kind = cls.setting_type(field.name)
        choices = _choices(meta)
        options: dict[str, Any] = dict(dest=field.name, default=None, help=help_text)
        if field.name in lists:
            options.update(metavar=meta["metavar"] or "A,B", help=help_text + "; comma-separated")
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction)
        else:
            options.update(type=kind, metavar=meta["metavar"])
            if choices is not None and meta["metavar"] is None:
                options["metavar"] = "|".join(map(str, choices))
        group.add_argument(_flag(field.name), *meta["aliases"], **options)

    @classmethod
    def from_args(cls, args: argparse.Namespace, overrides: dict | None = None, **fixed) -> Spec:
        """The spec a command line asks for: flags, else `--config`, else the preset,
        else `overrides` (a study's or tuner's own defaults), else the defaults.

        `fixed` replaces settings outright (the study's variant, a trial's values).
        """
        values = dict(overrides or {})
        preset = getattr(args, "preset", None)
        if preset:
            values.update(cls.PRESETS[preset], preset=preset)
        config_file = getattr(args, "config", None)
        if config_file:
            values.update(cls.read_config(config_file))
        names = set(cls.names())
        values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
        values.update(fixed)
        return cls.from_dict(values)

    @classmethod
    def read_config(cls, path) -> dict:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"--config {path}: no such file") from None
        except (OSError, ValueError) as err:
            raise UserError(f"--config {path}: not a JSON config ({err})") from None
        if not isinstance(data, dict):
            raise UserError(f"--config {path}: not a JSON object")
        return data

    @classmethod
    def upgrade(cls, values: dict) -> dict:
        """Settings as an older version wrote them, under today's names."""
        return {cls.RENAMED.get(k, k): v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict) -> Spec:
        """A validated spec from settings by name; an unknown name is a one-line error."""
        values = cls.upgrade(values)
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise UserError(f"unknown setting(s) for the {cls.__name__}: {', '.join(unknown)}")
        spec = cls(**{k: cls._coerce(k, v) for k, v in values.items()})
        spec.validate()
        return spec

    @classmethod
    def _coerce(cls, name: str, value):
        """JSON gives floats where ints were written (1.0) and lists for tuples."""
        if value is None:
            return None
        kind = cls.setting_type(name)
        try:
            if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if kind is int and isinstance(value, float) and value.is_integer():
                return int(value)
        except (TypeError, ValueError):
            pass
        return value

    # -- validation --------------------------------------------------------------------
    def validate(self) -> None:
        """Raises UserError naming the flag of the first setting that cannot work."""
        for field in self.settings():
            value = getattr(self, field.name)
            meta = field.metadata
            if value is None:
                continue
            kind = self.setting_type(field.name)
            if kind in (int, float, str, bool) and not _is(value, kind):
                raise UserError(f"{_flag(field.name)}: expected {kind.__name__}, got {value!r}")
            choices = _choices(meta)
            if choices is not None and value not in choices:
                raise UserError(
                    f"unknown {field.name.replace('_', ' ')} {value!r}; valid: "
                    + ", ".join(map(str, choices))
                )
            if field.name == "preset" and value not in self.PRESETS:
                raise UserError(
                    f"--preset: unknown preset {value!r}; valid: {', '.join(self.PRESETS)}"
                )
            problem = meta["check"](value) if meta["check"] else None
            if problem:
                raise UserError(f"{_flag(field.name)} {problem}")
        self.check()

    def check(self) -> None:
        """Checks that involve several settings (subclasses)."""

    # -- outputs -----------------------------------------------------------------------
    def replace(self, **changes) -> Spec:
        spec = dataclasses.replace(self, **changes)
        spec.validate()
        return spec

    def config(self) -> dict:
        """What `config.json` holds: every setting that changes what a run computes."""
        return {f.name: getattr(self, f.name) for f in self.settings() if f.metadata["in_config"]}

    def config_json(self) -> str:
        return json.dumps(self.config(), indent=2, sort_keys=True, default=str)

    def run_name(self) -> str:
        """A readable prefix plus a hash of the whole config: the same command resumes
        the same run."""
        digest = hashlib.sha256(
            json.dumps(self.config(), sort_keys=True, default=str).encode()
        ).hexdigest()
        prefix = "-".join(str(getattr(self, n)) for n in self.NAME_FIELDS)
        return f"{prefix}-seed{self.seed}-{digest[:6]}"


def _is(value, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
