"""Issue 14's layout rule, kept: no module of xtalhpc/ or kernels/ over 700 lines, so that a
module's name still says what it owns (split a module that grows past it; docs/architecture.md)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 700


def test_no_module_over_700_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for d in ("xtalhpc", "kernels") for p in (REPO / d).rglob("*.py")}
    assert len(sizes) > 40  # the walk found the package
    too_long = {k: v for k, v in sizes.items() if v > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
