"""Repository-level checks: the version's single source, self-contained docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import keras_cc

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / ".ci" / "check_self_contained.py"


def test_version_has_a_single_source() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in config["project"]
    assert config["project"]["dynamic"] == ["version"]
    attr = config["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "keras_cc.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*(\.dev\d+)?", keras_cc.__version__)


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_repository_is_self_contained() -> None:
    result = _check(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_self_contained_check_finds_outside_references(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "ok.md").write_text("See docs/numerics.md, the helpers in tests/.\n")
    assert _check(tmp_path).returncode == 0
    # Built from pieces so that this file itself does not trip the check.
    planted = {
        "a.md": "As in " + "PAPER" + ".md, section 2.\n",
        "b.py": "# numerics: " + "NUMERICS" + ".md section 4\n",
        "c.md": "Read ../" + "shared/notes.md first.\n",
        "d.md": "This sess" + "ion had no GPU.\n",
        "e.py": '"""The ' + 'brief asks for a test."""\n',
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    result = _check(tmp_path)
    assert result.returncode == 1
    flagged = {line.split(":")[0] for line in result.stdout.splitlines()}
    assert flagged == set(planted)
