"""Search spaces as data: each hyperparameter declared once, narrowed from the command line.

A `Space` is an ordered list of `Param`s. The command line narrows it:

    --attention cbam,none      a categorical parameter keeps these choices
    --range lr=1e-4:1e-3       a float parameter keeps this interval
    --fixed dropout=0.2        one value, which must lie in the (narrowed) space

and `Space.declare(hp)` registers it with Keras Tuner. A parameter that only some
choices of another use (the reduction ratio only for channel attention and CBAM)
is declared in a conditional scope, so trials without it do not sample it and
the HParams dashboard leaves its cell empty.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Iterable

from keras_attn.errors import UserError


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter: categorical (`values`) or a float interval (`low`..`high`).

    Categorical parameters with string values have a closed vocabulary (`vocabulary`,
    default `values`); integer ones accept any integer >= `floor`. `parent`/`when`:
    the parameter is used only when `parent` takes one of `when`.
    """

    name: str
    help: str
    default: object
    values: tuple = ()
    vocabulary: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    floor: float = 0.0  # smallest legal value (ints: inclusive; floats: inclusive unless log)
    ceiling: float | None = None  # floats: exclusive upper bound of legal values
    parent: str | None = None
    when: tuple = ()
    fixed: object = None

    @property
    def categorical(self) -> bool:
        return bool(self.values)

    @property
    def integer(self) -> bool:
        return self.categorical and all(isinstance(v, int) for v in self.values)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def effective_default(self):
        """The value Keras Tuner starts from (the default, moved into a narrowed space)."""
        if self.fixed is not None:
            return self.fixed
        if self.categorical:
            return self.default if self.default in self.values else self.values[0]
        return min(max(float(self.default), self.low), self.high)

    def convert(self, text: str, option: str):
        """`text` as a value of this parameter (type only, not whether it is in the space)."""
        text = text.strip()
        if self.integer:
            try:
                value = int(text)
            except ValueError:
                raise UserError(f"{option}: {self.name} takes integers, got {text!r}") from None
            if value < self.floor:
                raise UserError(f"{option}: {self.name} must be >= {int(self.floor)}, got {value}")
            return value
        if self.categorical:
            vocabulary = self.vocabulary or self.values
            if text not in vocabulary:
                raise UserError(
                    f"{option}: unknown {self.name} {text!r}; valid: {', '.join(vocabulary)}"
                )
            return text
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{option}: {self.name} takes a number, got {text!r}") from None
        if not math.isfinite(value) or not self._legal(value):
            raise UserError(f"{option}: {self.name} must be {self._legal_text()}, got {text}")
        return value

    def _legal(self, value: float) -> bool:
        low_ok = value > 0 if self.log else value >= self.floor
        return low_ok and (self.ceiling is None or value < self.ceiling)

    def _legal_text(self) -> str:
        low = "> 0" if self.log else f">= {self.floor:g}"
        return low + ("" if self.ceiling is None else f" and < {self.ceiling:g}")

    def domain_text(self) -> str:
        if self.fixed is not None:
            return f"{self.fixed} (fixed)"
        if self.categorical:
            return ",".join(str(v) for v in self.values)
        scale = ", log" if self.log else (f", step {self.step:g}" if self.step else "")
        return f"{self.low:g}..{self.high:g}{scale}"

    def describe(self) -> dict:
        """A JSON-able description (search.json, --show-space)."""
        out = {"name": self.name}
        if self.fixed is not None:
            out["fixed"] = self.fixed
        elif self.categorical:
            out["values"] = list(self.values)
        else:
            out.update(low=self.low, high=self.high, log=self.log, step=self.step)
        if self.parent:
            out["when"] = {self.parent: list(self.when)}
        return out

    def register(self, hp):
        """Declares this parameter in `hp`; returns its value (None where inactive)."""
        if self.fixed is not None:
            return hp.Fixed(self.name, self.fixed)
        if self.categorical:
            if len(self.values) == 1:
                return hp.Fixed(self.name, self.values[0])
            return hp.Choice(self.name, list(self.values), default=self.effective_default)
        if self.low == self.high:
            return hp.Fixed(self.name, self.low)
        return hp.Float(
            self.name,
            self.low,
            self.high,
            step=self.step,
            sampling="log" if self.log else "linear",
            default=self.effective_default,
        )


class Space:
    """An ordered set of `Param`s (parents before the parameters that depend on them)."""

    def __init__(self, params: Iterable[Param]):
        self.params = {p.name: p for p in params}

    def __iter__(self):
        return iter(self.params.values())

    def names(self) -> list[str]:
        return list(self.params)

    def categorical(self) -> list[Param]:
        return [p for p in self if p.categorical]

    def used_when(self, param: Param) -> tuple:
        """The parent values for which `param` is used; () when it never is."""
        if param.parent is None:
            return (None,)
        parent = self.params[param.parent]
        if not self.used_when(parent):
            return ()
        options = (parent.fixed,) if parent.fixed is not None else parent.values
        return tuple(v for v in options if v in param.when)

    def narrow(
        self,
        choices: dict[str, str] | None = None,
        ranges: Iterable[str] = (),
        fixed: Iterable[str] = (),
    ) -> Space:
        """A new space narrowed by the command line; bad input raises a one-line UserError.

        Args:
            choices: parameter name -> comma-separated values (`--attention cbam,none`).
            ranges: `NAME=LOW:HIGH` items for float parameters (`--range`).
            fixed: `NAME=VALUE` items (`--fixed`), each may hold several, comma-separated.
        """
        params = dict(self.params)
        touched = []
        for name, text in (choices or {}).items():
            if text is None:
                continue
            p = params[name]
            items = [t for t in text.split(",") if t.strip()]
            if not items:
                raise UserError(f"{p.flag} is empty; give one or more of: {p.domain_text()}")
            values = tuple(dict.fromkeys(p.convert(t, p.flag) for t in items))
            vocabulary = p.vocabulary or p.values
            params[name] = dataclasses.replace(p, values=values, vocabulary=vocabulary)
            touched.append((name, p.flag))
        for name, text in _pairs(ranges, "--range", "NAME=LOW:HIGH", self.names()):
            p = params[name]
            if p.categorical:
                raise UserError(
                    f"--range {name}: {name} is categorical; narrow it with {p.flag} A,B"
                )
            low, sep, high = text.partition(":")
            if not sep:
                raise UserError(f"--range {name}={text}: expected LOW:HIGH")
            low, high = p.convert(low, "--range"), p.convert(high, "--range")
            if low > high:
                raise UserError(f"--range {name}={text}: LOW is above HIGH")
            params[name] = dataclasses.replace(p, low=low, high=high)
            touched.append((name, "--range " + name))
        for name, text in _pairs(fixed, "--fixed", "NAME=VALUE", self.names()):
            p = params[name]
            value = p.convert(text, "--fixed")
            inside = (
                value in p.values
                if p.categorical
                else p.low <= value <= p.high or math.isclose(value, p.low)
            )
            if not inside:
                raise UserError(
                    f"--fixed {name}={text} is outside the space ({name}: {p.domain_text()}); "
                    f"widen it with {p.flag if p.categorical else '--range ' + name + '=LOW:HIGH'}"
                )
            params[name] = dataclasses.replace(p, fixed=value)
            touched.append((name, f"--fixed {name}"))
        space = Space(params.values())
        for name, option in touched:
            p = space.params[name]
            if not space.used_when(p):
                parent = space.params[p.parent]
                raise UserError(
                    f"{option}: {name} is only used when {p.parent} is "
                    f"{' or '.join(map(str, p.when))}, which the space excludes "
                    f"({p.parent}: {parent.domain_text()})"
                )
        return space

    def declare(self, hp) -> dict:
        """Registers every parameter in `hp`; returns the active values of this trial."""
        values = {}
        for p in self:
            when = self.used_when(p)
            if not when:
                continue
            if p.parent is None:
                value = p.register(hp)
            else:
                with hp.conditional_scope(p.parent, list(when)):
                    value = p.register(hp)
            if value is not None:
                values[p.name] = value
        return values

    def describe(self) -> list[dict]:
        return [p.describe() for p in self if self.used_when(p)]

    def table(self) -> str:
        rows = [("name", "values", "default", "used when")]
        for p in self:
            when = self.used_when(p)
            if not when:
                continue
            used = "" if p.parent is None else f"{p.parent} in {','.join(map(str, when))}"
            rows.append((p.name, p.domain_text(), str(p.effective_default), used))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )


def _pairs(items: Iterable[str], option: str, form: str, names: list[str]):
    for item in items:
        for pair in item.split(","):
            if not pair.strip():
                continue
            name, sep, value = pair.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or not value.strip():
                raise UserError(f"{option} expects {form}, got {pair!r}")
            if name not in names:
                raise UserError(
                    f"{option} {name}: unknown hyperparameter; valid: {', '.join(names)}"
                )
            yield name, value.strip()


def accepting(registry: dict, option: str) -> tuple[str, ...]:
    """The names in a layer registry whose layer takes constructor argument `option`."""

    def takes(factory) -> bool:
        if isinstance(factory, functools.partial):
            if option in factory.keywords:
                return False
            factory = factory.func
        return option in inspect.signature(factory).parameters

    return tuple(name for name, factory in registry.items() if takes(factory))
