"""What the command-line programs share: one-line errors, specs from flags, --print-config."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from keras_attn.errors import UserError
from keras_attn.spec import Spec


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2), without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def spec_from_args(spec_class: type[Spec], args: argparse.Namespace, **options) -> Spec:
    """The spec the command line resolves to; with `--print-config`, prints it and exits."""
    spec = spec_class.from_args(args, **options)
    if getattr(args, "print_config", False):
        print(spec.config_json())
        sys.exit(0)
    return spec


def main_guard(main: Callable[[], None], prog: str | None = None) -> None:
    """Runs a CLI's main: user errors and divergence are one line, never a traceback."""
    from keras_attn.training.run import TrainingDiverged

    prog = prog or os.path.basename(sys.argv[0])
    try:
        main()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        clip = _clip_error(err)
        if clip is None:
            raise
        print(
            f"{prog}: error: {clip}; the clips are scanned again when you rerun the command "
            "(finished epochs are kept)",
            file=sys.stderr,
        )
        sys.exit(2)


def _clip_error(err: Exception) -> str | None:
    """The `VideoDecodeError` line inside a tf.data error (a clip that changed mid-run), if any.

    tf.data wraps an exception raised in `tf.numpy_function` into an `OpError` whose message
    holds the original one and its traceback.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError):
        return None
    found = re.search(r"VideoDecodeError: (.+)", err.message)
    return found.group(1).strip() if found else None
