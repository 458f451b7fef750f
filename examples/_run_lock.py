"""A lock that keeps two study processes off the same run directory."""

from __future__ import annotations

import os
from pathlib import Path


class RunLock:
    """``<run>/lock`` holds the training process's pid while it trains.

    Several runners may share an ``--out`` (e.g. one per machine or per
    seed range); the lock keeps two of them off the same run. A lock whose
    process is gone (a crash) is taken over.
    """

    def __init__(self, out: Path):
        self.path = out / "lock"
        self.held = False

    def __enter__(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._owner_alive():
                    return False
                self.path.unlink(missing_ok=True)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return True
        return False

    def _owner_alive(self) -> bool:
        try:
            pid = int(self.path.read_text())
        except (OSError, ValueError):
            return False
        if pid == os.getpid():
            return False  # left over by this very process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
