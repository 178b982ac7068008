"""Imports TensorFlow with its C++ start-up chatter hidden.

TF 2.21 prints oneDNN and CUDA-probing lines to stderr before absl logging is
initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide them; they would bury the CLIs'
one-line errors. stderr is closed only for the import itself; a failing import
still raises its Python exception afterwards.
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
