"""A one-line progress bar on stderr for long imports."""

from __future__ import annotations

import sys
import time

from tcgraph import logs

# A progress bar is only worth drawing for files that take a while.
PROGRESS_MIN_BYTES = 1 << 20


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    _WIDTH = 30

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.unit = "bytes"
        self.drawn = False
        self.last = 0.0

    @classmethod
    def open(cls, label: str, size: int) -> Progress | None:
        """A bar counting `size` bytes, or None: not on a terminal, in JSON log format
        (where every line is an object), or a small file."""
        if size < PROGRESS_MIN_BYTES or not sys.stderr.isatty() or logs.json_format():
            return None
        return cls(label, size)

    def count(self, total: int, unit: str) -> None:
        """Count `unit`s instead of bytes from now on."""
        self.total = total
        self.unit = unit

    def update(self, done: int, *, force: bool = False) -> None:
        """Show `done` of the total (skipped if drawn under 0.1 s ago, unless `force`)."""
        now = time.monotonic()
        if now - self.last < 0.1 and not force:
            return
        self.last = now
        fraction = min(done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self._WIDTH)
        if self.unit == "bytes":
            amount = f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            amount = f"{done:,}/{self.total:,} {self.unit}"
        bar = "#" * filled + "." * (self._WIDTH - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {int(fraction * 100):3d}% {amount}")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        """End the bar's line, so that what follows starts on its own."""
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
