"""The run lock the example studies share (examples/_run_lock.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from examples._run_lock import RunLock


def _finished_pid() -> int:
    """The pid of a process that has already exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_lock_is_taken_then_released(tmp_path: Path) -> None:
    with RunLock(tmp_path) as locked:
        assert locked
        assert (tmp_path / "lock").read_text().strip().isdigit()
    assert not (tmp_path / "lock").exists()


def test_lock_of_a_live_process_keeps_a_second_runner_out(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "lock").write_text(str(other.pid))
        with RunLock(tmp_path) as locked:
            assert not locked
        assert (tmp_path / "lock").read_text() == str(other.pid)  # left alone
    finally:
        other.kill()
        other.wait()


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text(str(_finished_pid()))
    with RunLock(tmp_path) as locked:
        assert locked
    assert not (tmp_path / "lock").exists()
