"""Every ``torch.load`` of the project (package, scripts, tests) passes ``weights_only=True``: no pickle execution."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = re.compile(r"torch\.load\(")


def _calls(text: str) -> list[str]:
    """The argument text of each ``torch.load(...)`` call (balanced parentheses)."""
    calls = []
    for match in LOAD.finditer(text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append(text[match.end() : i - 1])
    return calls


def test_every_torch_load_is_weights_only() -> None:
    offenders = []
    for folder in ("modan_monai", "scripts", "tests", "data_manifests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == Path(__file__).name:
                continue
            for args in _calls(path.read_text()):
                if not re.search(r"weights_only\s*=\s*True", args):
                    offenders.append(f"{path.relative_to(ROOT)}: torch.load({' '.join(args.split())})")
    assert not offenders, "torch.load without weights_only=True:\n" + "\n".join(offenders)


def test_the_check_finds_an_unsafe_call() -> None:
    assert _calls("x = torch.load(path, map_location=f(1))\n") == ["path, map_location=f(1)"]
