"""Ctrl-C that stops training even when Python drops its KeyboardInterrupt.

Python raises KeyboardInterrupt in whatever Python code runs when SIGINT arrives. When that
is a garbage-collector or weakref callback, Python prints "Exception ignored in ..." and
drops it. TensorFlow imports JAX where it is installed, and JAX registers such a callback;
tracing a model makes a lot of garbage. So a Ctrl-C pressed while a run starts was often
lost, and the run (or a whole tuner search) went on to the end.
"""

from __future__ import annotations

import signal
import threading

import keras


class InterruptCheck(keras.callbacks.Callback):
    """Re-raises a dropped Ctrl-C at the next batch's end.

    Used as a context manager around `fit`: inside it, SIGINT is recorded before Python's
    default handler raises KeyboardInterrupt, and the callback raises it again if training
    goes on. Where SIGINT is not Python's default (ignored under nohup, or handled by
    someone else) or off the main thread, nothing changes.
    """

    def __init__(self):
        super().__init__()
        self.pressed = False
        self._previous = None

    def _record(self, signum, frame):
        self.pressed = True
        signal.default_int_handler(signum, frame)

    def __enter__(self) -> InterruptCheck:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._record)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _check(self, *args, **kwargs) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = _check
