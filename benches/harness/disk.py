"""Sizes of what the tools write, and removing it between runs."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any


def dir_bytes(path: Path) -> int:
    """Apparent size: a file's size, or the sum of all file sizes below a directory."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class TempWatch:
    """Polls a directory's size during a run and keeps the peak."""

    def __init__(self, path: Path):
        self.path = path
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, dir_bytes(self.path))
            time.sleep(0.005)

    def __enter__(self) -> "TempWatch":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, dir_bytes(self.path))
