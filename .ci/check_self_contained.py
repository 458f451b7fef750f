"""Fails if the repository refers to files outside it or contains process wording.

    python .ci/check_self_contained.py [ROOT]

Scans every text file git knows in ROOT (tracked, or untracked and not
ignored; default: the repository of this script), except this script, for

- references to documents that are not in the repository (the paper notes and
  numerics notes kept beside it, or any ``../shared`` path): the docs must be
  self-contained, so such material belongs in ``docs/`` (e.g.
  ``docs/paper_settings.md``, ``docs/numerics.md``);
- wording about how the work was organised rather than about the code.

Prints ``path:line: text`` for each hit and exits with 1 if there is any.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# (compiled pattern, what it means). File names are matched case-sensitively:
# docs/numerics.md is in the repository, the upper-case file is not.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bNUMERICS\.md\b"), "file outside the repository"),
    (re.compile(r"\bPAPER\.md\b"), "file outside the repository"),
    (re.compile(r"\bCCLS_NOTES\.md\b"), "file outside the repository"),
    (re.compile(r"\.\./shared\b"), "path outside the repository"),
    (re.compile(r"\bthis session\b", re.I), "process wording"),
    (re.compile(r"\bsession had\b", re.I), "process wording"),
    (re.compile(r"\bthe brief\b", re.I), "process wording"),
    (re.compile(r"\bthe task\b", re.I), "process wording"),
    (re.compile(r"\b(?:a|the|another|this) helper\b", re.I), "process wording"),
    (re.compile(r"\bhelpers? (?:session|agent)s?\b", re.I), "process wording"),
)
THIS_FILE = Path(__file__).resolve()


def repository_files(root: Path) -> list[Path]:
    """Tracked files, and untracked ones that are not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [root / name for name in listed.split("\0") if name]


def read_text(path: Path) -> str | None:
    """The file's text, or None for binary, unreadable or missing files."""
    try:
        data = path.read_bytes()
    except OSError:  # deleted in the work tree but still tracked
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def find_hits(root: Path) -> list[str]:
    hits = []
    for path in repository_files(root):
        if path.resolve() == THIS_FILE:
            continue  # its pattern list would match itself
        text = read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for pattern, meaning in PATTERNS:
                if pattern.search(line):
                    rel = path.relative_to(root)
                    hits.append(f"{rel}:{number}: {meaning}: {line.strip()[:160]}")
    return hits


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else THIS_FILE.parents[1]
    hits = find_hits(root)
    for hit in hits:
        print(hit)
    if hits:
        print(
            f"{len(hits)} reference(s) outside the repository or process "
            "wording; the repository must be self-contained.",
            file=sys.stderr,
        )
        return 1
    print(f"self-contained: no reference outside the repository in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
