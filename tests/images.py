"""Checks that a written plot really is a PNG image of the size the report draws."""

from __future__ import annotations

from pathlib import Path

PNG_SIZE = (800, 450)  # report.FIGSIZE at report.DPI


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk: the file really is a PNG image of that size."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
