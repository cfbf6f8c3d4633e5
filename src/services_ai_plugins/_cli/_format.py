"""Text helpers shared by the command groups."""

from __future__ import annotations

__all__ = ["duration"]


def duration(seconds: float) -> str:
    """A duration for people: ``1.25 s`` from a second up, ``12.345 ms`` below."""
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.3f} ms"
