"""``scripts/install_monailabel.py`` prints only what the user should act on (issue 22): pip's resolver report of the
requirements left out on purpose becomes one plain line; a real pip failure shows pip's output and exits non-zero.
pip is never run: its output is a captured text."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from types import ModuleType

import pytest

#: pip 24-26's output for the second install of the script, in this environment (quiet mode; one warning line)
RESOLVER = (
    "ERROR: pip's dependency resolver does not currently take into account all the packages that are installed. "
    "This behaviour is the source of the following dependency conflicts."
)
CONFLICTS = [
    "monailabel 0.8.5 requires einops>=0.7.0, which is not installed.",
    "monailabel 0.8.5 requires expiringdict>=1.2.2, which is not installed.",
    "monailabel 0.8.5 requires httpx>=0.27.0, which is not installed.",
    "monailabel 0.8.5 requires ninja>=1.11.1.1, which is not installed.",
    "monailabel 0.8.5 requires numpymaxflow>=0.0.7, which is not installed.",
    "monailabel 0.8.5 requires pynetdicom>=2.0.2, which is not installed.",
    "monailabel 0.8.5 requires PyYAML>=6.0.1, which is not installed.",
    'monailabel 0.8.5 requires sam2>=0.4.1; python_version >= "3.10", which is not installed.',
    "pydicom-seg 0.4.1 requires jsonschema<4.0.0,>=3.2.0, but you have jsonschema 4.26.0 which is incompatible.",
    "pydicom-seg 0.4.1 has requirement numpy<2.0.0,>=1.18.0, but you have numpy 2.4.6.",
]
WARNING = "WARNING: Running pip as the 'root' user can result in broken permissions."
LISTED = [
    "einops>=0.7.0 (monailabel 0.8.5)", "expiringdict>=1.2.2 (monailabel 0.8.5)", "httpx>=0.27.0 (monailabel 0.8.5)",
    "ninja>=1.11.1.1 (monailabel 0.8.5)", "numpymaxflow>=0.0.7 (monailabel 0.8.5)",
    "pynetdicom>=2.0.2 (monailabel 0.8.5)", "PyYAML>=6.0.1 (monailabel 0.8.5)",
    'sam2>=0.4.1; python_version >= "3.10" (monailabel 0.8.5)', "jsonschema<4.0.0,>=3.2.0 (pydicom-seg 0.4.1)",
    "numpy<2.0.0,>=1.18.0 (pydicom-seg 0.4.1)",
]


@pytest.fixture
def script(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("install_monailabel")


def test_left_out_requirements_replace_the_resolver_report(script: ModuleType) -> None:
    shown, reported = script.filter_pip_output("\n".join([RESOLVER, *CONFLICTS, WARNING]) + "\n")
    assert shown == [WARNING]
    assert reported == LISTED


def test_a_conflict_not_left_out_on_purpose_is_shown_as_pip_wrote_it(script: ModuleType) -> None:
    other = "fastapi 0.110.2 requires starlette<0.38.0,>=0.37.2, but you have starlette 0.45.0 which is incompatible."
    shown, reported = script.filter_pip_output("\n".join([RESOLVER, CONFLICTS[3], other]))
    assert shown == [RESOLVER, other]
    assert reported == ["ninja>=1.11.1.1 (monailabel 0.8.5)"]


def fake_run(pip_results: list[tuple[int, str]]) -> Callable[..., subprocess.CompletedProcess]:
    """``subprocess.run`` answering pip installs in turn with ``(exit code, output)``, and the import check with 0."""

    def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        if "pip" in command:
            code, output = pip_results.pop(0)
            return subprocess.CompletedProcess(command, code, stdout="", stderr=output)
        return subprocess.CompletedProcess(command, 0)

    return run


def test_install_prints_one_line_for_the_left_out_requirements(script: ModuleType, monkeypatch, capsys) -> None:
    first = "\n".join([RESOLVER, CONFLICTS[8], CONFLICTS[9]]) + "\n"  # the --no-deps install reports the caps too
    monkeypatch.setattr(script.subprocess, "run", fake_run([(0, first), (0, "\n".join([RESOLVER, *CONFLICTS]))]))
    assert script.main([]) == 0
    printed = capsys.readouterr()
    assert "ERROR" not in printed.out + printed.err and printed.err == ""
    left_out = [line for line in printed.out.splitlines() if "left out on purpose" in line]
    assert left_out == ["install_monailabel: left out on purpose (pip check lists them; nothing to do): "
                        + ", ".join(LISTED[8:] + LISTED[:8])]


def test_a_failed_pip_shows_its_output_and_exits_with_its_code(script: ModuleType, monkeypatch, capsys) -> None:
    failure = "ERROR: Could not find a version that satisfies the requirement monailabel==0.8.5 (from versions: none)"
    monkeypatch.setattr(script.subprocess, "run", fake_run([(1, failure + "\n")]))
    assert script.main([]) == 1
    err = capsys.readouterr().err.splitlines()
    assert failure in err
    assert err[-1].startswith("install_monailabel: `") and err[-1].endswith("failed with exit code 1 (pip's output "
                                                                            "above)")
    assert "--no-deps monailabel==0.8.5" in err[-1]
