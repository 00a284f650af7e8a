"""A progress line for long commands (`cardstream rebuild`): done / total, rate, ETA.

`format_progress` is pure. `ProgressLine` writes it to a stream: on a terminal it
redraws one line (at most every `redraw` seconds); elsewhere (a log file, CI) it
writes a plain line every `every` seconds, so logs get no carriage returns.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def format_duration(seconds: float | None) -> str:
    """`75` -> "1m15s", `3725` -> "1h02m05s", `9.4` -> "9s"; None or infinite -> "?"."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def eta_seconds(done: int, total: int, rate: float) -> float | None:
    """Seconds left at `rate` items/s; 0 when done; None when the rate is not known yet."""
    if done >= total:
        return 0.0
    if rate <= 0:
        return None
    return (total - done) / rate


def format_progress(
    label: str, done: int, total: int, rate: float, elapsed: float, bar: bool = True
) -> str:
    """One progress line, e.g. `rebuild [######----] 40% 4,000/10,000 events 812/s ETA 7s`.

    `done` is clamped to `total`; a total of 0 counts as complete.
    """
    shown = min(done, total)
    fraction = 1.0 if total <= 0 else shown / total
    parts = [label]
    if bar:
        filled = math.floor(fraction * BAR_WIDTH)
        parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
    parts.append(f"{math.floor(fraction * 100):3d}%")
    parts.append(f"{shown:,}/{total:,} events")
    parts.append(f"{rate:,.0f}/s")
    parts.append(f"elapsed {format_duration(elapsed)}")
    parts.append(f"ETA {format_duration(eta_seconds(shown, total, rate))}")
    return " ".join(parts)


class ProgressLine:
    """Writes progress to `stream` (stderr): redrawn on a TTY, periodic lines elsewhere.

    The rate is measured over the last `window` seconds of updates.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        total: int,
        every: float = 5.0,
        redraw: float = 0.2,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.tty = stream.isatty()
        self.every = redraw if self.tty else every
        self.window = window
        self.clock = clock
        self.started = clock()
        self.samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.last_written = -math.inf
        self.written: int | None = None
        self.done = 0

    def rate(self) -> float:
        """Items per second over the recent window (0 until two samples differ in time)."""
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, done: int, force: bool = False) -> None:
        """Record `done` items; write a line when due (or when `force`)."""
        now = self.clock()
        self.done = done
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        if force or now - self.last_written >= self.every:
            self.last_written, self.written = now, done
            line = format_progress(
                self.label, done, self.total, self.rate(), now - self.started, bar=self.tty
            )
            if self.tty:
                self.stream.write("\r" + line + "\x1b[K")
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self, done: int, seconds: float) -> None:
        """Write the final line with the overall rate (`done` in `seconds`), and end it."""
        rate = done / seconds if seconds > 0 else 0.0
        line = format_progress(self.label, done, self.total, rate, seconds, bar=self.tty)
        self.stream.write(("\r" + line + "\x1b[K\n") if self.tty else line + "\n")
        self.stream.flush()
        self.done = self.written = done

    def close(self) -> None:
        """Write the final state (unless just written) and end the line."""
        if self.written != self.done:
            self.update(self.done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
