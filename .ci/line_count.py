"""CI: no source module in gateway/ or plugins/ over 400 lines (STYLE.md: then it is two ideas).

Run from the repository root: ``python .ci/line_count.py``; exits 1 listing each
module over the limit, longest first.
"""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 400
FOLDERS = ("gateway", "plugins")


def too_long(root: Path) -> list[tuple[int, str]]:
    """``(lines, path)`` of every module over `LIMIT`, longest first."""
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > LIMIT:
                found.append((lines, str(path.relative_to(root))))
    return sorted(found, reverse=True)


def main() -> int:
    found = too_long(Path(__file__).resolve().parent.parent)
    for lines, path in found:
        print(f"{path}: {lines} lines (at most {LIMIT})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
