"""Running the training scripts as a user would, from the tests."""

import contextlib
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Nothing listens on port 9: any download attempt fails at once, even on a networked machine.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def module_env() -> dict[str, str]:
    """The environment for `python -m keras_attn...` run from another folder: the checkout
    on the path (a script finds it by its own location, a module only through this)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path, **OFFLINE}


def run_cli(script, args, cwd):
    """The script in a fresh process: its CompletedProcess (stdout, stderr, returncode)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **OFFLINE}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_main(script, args, monkeypatch, cwd):
    """The script in this process (TensorFlow already imported): its exit status."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return exit_info.value.code


def interrupt(proc, timeout=120):
    """Ctrl-C until `proc` exits. TensorFlow imports JAX when it is installed, and a
    KeyboardInterrupt that lands in JAX's garbage-collector callback is swallowed by Python
    ("Exception ignored in _xla_gc_callback"), so one signal is not always enough; a user
    would press Ctrl-C again too."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def run_to_the_end(script, args, monkeypatch, cwd):
    """The script in this process, expected to finish without an error (no SystemExit)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / script), run_name="__main__")
