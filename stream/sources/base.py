"""What every capture source is: an object that reads :class:`ColorFrame`s one at a time."""

from __future__ import annotations

from typing import Protocol

from stream.messages import ColorFrame


class SourceError(RuntimeError):
    """A source cannot deliver: missing file, unreadable video, absent camera, bad URL, corrupt data.

    The message always names the source and the problem.
    """


class FrameSource(Protocol):
    """A capture source. ``read`` returns the next frame, or ``None`` at the end of a finite source.

    Sources number frames themselves (``frame_id`` counts captured/decoded frames from 0, including
    frames skipped by stride or pacing, so gaps are visible downstream).
    """

    name: str
    """Human-readable description, used in errors and status messages."""

    @property
    def nominal_fps(self) -> float | None:
        """Native frame rate of the source (video files, synthetic scene), ``None`` if unknown/live."""
        ...

    @property
    def is_live(self) -> bool:
        """True for cameras and streams (they pace themselves), False for replayable sources."""
        ...

    def open(self) -> None:
        """Acquire the device/file/connection; raises :class:`SourceError` with a clear message."""
        ...

    def read(self) -> ColorFrame | None:
        """Next frame (blocking for live sources), ``None`` when a finite source is exhausted."""
        ...

    def skip(self) -> bool:
        """Advance past one frame without decoding it (pacing drops); False at the end."""
        ...

    def close(self) -> None:
        """Release everything; safe to call twice."""
        ...
