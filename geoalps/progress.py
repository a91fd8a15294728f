"""Progress for people (a tqdm bar on stderr) or for the QGIS plugin (``geoalps-progress:`` lines).

The line contract the plugin parses: ``geoalps-progress: <percent 0-100> <free text>``, one record
per line on stderr. Every long-running command (label, pretrain, train, predict, classes) reports
through :class:`Progress`, so bars and lines look the same everywhere.
"""
from __future__ import annotations

import sys

PREFIX = "geoalps-progress:"


def emit_line(percent: float, message: str) -> None:
    """One machine-readable progress record on stderr."""
    print(f"{PREFIX} {percent:.1f} {message}", file=sys.stderr, flush=True)


class Progress:
    """A step counter reported as a tqdm bar, as ``geoalps-progress:`` lines, or not at all.

    Args:
        total: steps for the end of this counter's span.
        desc: label shown with the bar and in each line.
        unit: what a step is ("tile", "step"), for the bar's rate.
        lines: print progress lines instead of a bar.
        enabled: False silences everything (library use, ``--quiet``).
        done: steps already done (a resumed run).
        start_pct / span_pct: the share of the whole command this counter covers in lines
            (labelling's tiles are 0-90 %, assembling 90-95 %).
        leave: keep the finished bar on screen.
    """

    def __init__(self, total: int, desc: str = "", *, unit: str = "step", lines: bool = False,
                 enabled: bool = True, done: int = 0, start_pct: float = 0.0, span_pct: float = 100.0,
                 leave: bool = True) -> None:
        self.total = max(int(total), 1)
        self.desc, self.lines, self.enabled = desc, lines, enabled
        self.count = done
        self.start_pct, self.span_pct = start_pct, span_pct
        self._last_line_pct: float | None = None
        self._bar = None
        if enabled and not lines:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=done, desc=desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True, leave=leave)

    @property
    def percent(self) -> float:
        return self.start_pct + self.span_pct * self.count / self.total

    def set_total(self, total: int) -> None:
        """Change the end mark once the amount of work is known (e.g. the number of tiles)."""
        self.total = max(int(total), 1)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: int = 1, message: str = "", **postfix: float | str) -> None:
        """Advance by ``n`` steps; ``postfix`` values (loss, img/s) go on the bar or into the line.

        A line is printed when the percentage (to 0.1) changes, at the end, or for ``n == 0``
        with a message (a phase announcement), so 20,000 tiles do not print 20,000 lines."""
        self.count = min(self.count + n, self.total)
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        percent = round(self.percent, 1)
        if percent != self._last_line_pct or self.count == self.total or (n == 0 and message):
            self._last_line_pct = percent
            extra = " ".join(f"{k}={v}" for k, v in postfix.items())
            emit_line(percent, " ".join(t for t in (self.desc, message, extra) if t))

    def write(self, message: str) -> None:
        """A whole line (a per-epoch summary) that does not break the bar; a progress line with ``lines``."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            emit_line(self.percent, message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
