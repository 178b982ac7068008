"""Atomic writes: a run killed mid-write never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, default=None):
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def atomic_save_model(model, path: str | os.PathLike) -> None:
    path = Path(path)
    # Keras picks the format from the suffix, so the temporary name keeps ".keras".
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save(tmp)
    os.replace(tmp, path)
