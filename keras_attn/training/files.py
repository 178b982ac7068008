"""The atomic writers, under their older import path; they live in `keras_attn.files`."""

from keras_attn.files import (
    atomic_path,
    atomic_save_model,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
)

__all__ = [
    "atomic_path",
    "atomic_save_model",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
]
