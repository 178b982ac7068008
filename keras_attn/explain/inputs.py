"""The checks every input goes through before it is decoded: exists, is of a readable kind."""

from __future__ import annotations

from pathlib import Path


def unreadable(path: str, extensions: tuple[str, ...], model: str) -> str | None:
    """Why `path` cannot be an input of `model` ("an image model", "a video model"), or None.

    The extension decides the format (as the data loaders' scans do), so a video given to
    an image model is named as such instead of failing inside a decoder.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in extensions:
        return (
            f"unsupported format '{suffix or 'no extension'}' for {model} "
            f"(reads {', '.join(extensions)})"
        )
    if not Path(path).exists():
        return "file not found"
    if not Path(path).is_file():
        return "not a file"
    return None
