"""Progress for people (a tqdm bar) or for the QGIS plugin (``geoalps-progress: <pct> <msg>`` lines)."""
from __future__ import annotations

import sys


class Progress:
    """A counter that reports either through tqdm or as parseable lines on stderr.

    Args:
        total: number of steps for 100 %.
        desc: a short label shown with the bar or in each line.
        lines: print ``geoalps-progress: <percent> <message>`` lines instead of a bar.
        enabled: False silences everything (library use, tests).
    """

    def __init__(self, total: int, desc: str = "", lines: bool = False, enabled: bool = True) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.lines = lines
        self.enabled = enabled
        self.count = 0
        self._last_pct = -1
        self._bar = None
        if enabled and not lines:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def set_total(self, total: int) -> None:
        """Change the 100 % mark once the amount of work is known (e.g. the number of tiles)."""
        self.total = max(int(total), 1)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: int = 1, message: str = "", **postfix: float | str) -> None:
        """Advance by ``n`` steps; ``postfix`` values (loss, img/s) go on the bar or into the line."""
        self.count = min(self.count + n, self.total)
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        pct = int(100 * self.count / self.total)
        if pct != self._last_pct or self.count == self.total or (n == 0 and message):
            self._last_pct = pct
            extra = " ".join(f"{k}={v}" for k, v in postfix.items())
            text = " ".join(t for t in (self.desc, message, extra) if t)
            print(f"geoalps-progress: {pct} {text}", file=sys.stderr, flush=True)

    def write(self, message: str) -> None:
        """A whole line (per-epoch summary) that does not break the bar; as a progress line with ``lines``."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(f"geoalps-progress: {int(100 * self.count / self.total)} {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
