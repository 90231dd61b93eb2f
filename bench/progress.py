"""Sweep progress: a redrawn bar on a terminal, one line per event in logs (CI).

Calls name their run, so parallel executors can report finishes in any order."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.done / max(1, self.total))
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"

    def _emit(self, text: str, *, final: bool) -> None:
        if self.tty:
            end = "\n" if final else ""
            self.stream.write(f"\r\033[K{text}{end}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, label: str) -> None:
        self._emit(f"{self._bar()} {label}", final=not self.tty)

    def epoch(self, label: str, row: dict) -> None:
        val = row.get("val_forces_rmse_mev_per_ang")
        extra = f" · val F-RMSE {val:.1f} meV/Å" if val is not None else ""
        self._emit(f"{self._bar()} {label} · epoch {row['epoch']}/{row.get('epochs', '?')}{extra}",
                   final=not self.tty)

    def finish(self, label: str, status: str, summary: str = "") -> None:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        self._emit(f"{self._bar()} {label} -> {status}{(' ' + summary) if summary else ''}"
                   f" ({elapsed / 60:.1f} min elapsed)", final=True)
