"""Install MONAI Label 0.8.5 into this environment without changing the project's pinned packages.

Usage (in the environment where modan_monai is installed)::

    python scripts/install_monailabel.py

A plain ``pip install monailabel`` downgrades numpy to 1.26 and jsonschema to 3.2 (through ``numpymaxflow`` and
``pydicom-seg`` 0.4.1), pulls mlflow, openslide and SAM2 (which downloads weights) and grows the environment to
about 4 GB. This script instead installs ``monailabel``, ``pydicom-seg`` and ``torchvision`` with ``--no-deps``
and then the packages monailabel's server actually imports (read from its import graph), letting pip keep every
version already installed. Left out on purpose: mlflow/openslide (monai extras) and the requirements in
:data:`LEFT_OUT` (so ``pip check`` lists them), pydicom-seg's ``numpy<2`` / ``jsonschema<4`` pins among them (the
parts the app imports work with numpy 2; see ``modan_monai.apps.monailabel.compat`` for the two import fixes). pip's
resolver report of these ("ERROR: pip's dependency resolver does not currently take into account ...") is captured
and replaced by one line naming them; a conflict outside :data:`LEFT_OUT` is shown as pip wrote it, and a failed pip
shows all its output and ends the script with pip's exit code. It ends by importing the server the way the app does
and printing the start command.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence

NO_DEPS = ["monailabel==0.8.5", "pydicom-seg==0.4.1", "torchvision==0.28.0"]
# what monailabel 0.8.5's server and datastore import, with the lower bounds its setup.cfg declares
RUNTIME = [
    "fastapi>=0.110.2",
    "uvicorn>=0.29.0",
    "pydantic>=2.7.0",
    "pydantic-settings>=2.2.1",
    "python-dotenv>=1.0.1",
    "python-multipart>=0.0.9",
    "requests>=2.31.0",
    "requests-toolbelt>=1.0.0",
    "schedule>=1.2.1",
    "timeloop>=1.0.2",
    "expiring_dict>=1.1.0",
    "cachetools>=5.3.3",
    "watchdog>=4.0.0",
    "dicomweb-client[gcp]>=0.59.1",
    "pynrrd>=1.0.0",
    "shapely>=2.0.4",
    "passlib>=1.7.4",
    "bcrypt>=4.1.2",
    "pyjwt>=2.8.0",
    "SimpleITK",
    "psutil",
    "girder-client>=3.2.3",
    "filelock>=3.11.0",
]
#: requirements of monailabel 0.8.5 and pydicom-seg 0.4.1 left out on purpose, as pip names them (normalised):
#: scribbles (numpymaxflow) and SAM2 (sam2, ninja, einops) apps, packages outside the server's import graph
#: (:data:`RUNTIME`), and pydicom-seg's numpy<2 / jsonschema<4 caps
LEFT_OUT = ("numpymaxflow", "sam2", "ninja", "einops", "httpx", "expiringdict", "pynetdicom", "pyyaml", "numpy",
            "jsonschema")
#: the first line of pip's report of conflicts with packages already installed
RESOLVER_HEADER = "ERROR: pip's dependency resolver does not currently take into account"
#: one conflict of that report: "<dist> <version> requires <req>, which is not installed." or "... has requirement /
#: requires <req>, but you have <name> <version> [which is incompatible]."
CONFLICT = re.compile(r"^(?P<dist>\S+) (?P<version>\S+) (?:requires|has requirement) (?P<requirement>.+?)"
                      r"(?:, which is not installed|, but you have .+?)\.?$")
CHECK = (
    "from modan_monai.apps.monailabel import compat; fixes = compat.apply(); import monailabel.app; "
    "import modan_monai.apps.monailabel.main; print('monailabel imports; compatibility fixes applied:', fixes or 'none')"
)


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string (``"PyYAML>=6.0.1"`` -> ``"pyyaml"``)."""
    name = re.match(r"[A-Za-z0-9._-]*", requirement.strip())[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def filter_pip_output(output: str, left_out: Sequence[str] = LEFT_OUT) -> tuple[list[str], list[str]]:
    """Split pip's output into the lines the user should read and the requirements left out on purpose.

    The resolver report (its ``ERROR: pip's dependency resolver ...`` header and one line per conflict) is taken
    out where every conflict names a requirement in ``left_out``; a conflict outside it keeps the header and its
    line, as pip wrote them. Every other line is kept.

    Args:
        output: pip's stdout and stderr.
        left_out: project names left out on purpose (normalised, as :func:`_name` gives them).

    Returns:
        The lines to show, and the left-out requirements pip reported (``"ninja>=1.11.1.1 (monailabel 0.8.5)"``),
        each once, in pip's order.
    """
    shown: list[str] = []
    header: list[str] = []
    unexpected: list[str] = []
    reported: list[str] = []
    in_report = False
    for line in output.splitlines():
        if line.startswith(RESOLVER_HEADER):
            in_report, header = True, [line]
            continue
        conflict = CONFLICT.match(line) if in_report else None
        if conflict is None:
            in_report = False
            shown.append(line)
        elif _name(conflict["requirement"]) in left_out:
            entry = f"{conflict['requirement']} ({conflict['dist']} {conflict['version']})"
            if entry not in reported:
                reported.append(entry)
        else:
            unexpected.append(line)
    if unexpected:
        shown += [*header, *unexpected]
    return shown, reported


def run_pip(command: Sequence[str]) -> tuple[int, list[str]]:
    """Run pip with its output captured; print what the user should act on (a failed pip: all of its output).

    Returns:
        pip's exit code, and the left-out requirements it reported (see :func:`filter_pip_output`).
    """
    done = subprocess.run(list(command), capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        print(output, end="", file=sys.stderr)
        print(f"install_monailabel: `{' '.join(command)}` failed with exit code {done.returncode} (pip's output "
              "above)", file=sys.stderr)
        return done.returncode, []
    shown, reported = filter_pip_output(output)
    if shown:
        print("\n".join(shown), file=sys.stderr)
    return 0, reported


def main(argv: list[str] | None = None) -> int:
    """Install (unless ``--check``), then check the imports; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the app's imports work")
    args = parser.parse_args(argv)
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    if not args.check:
        reported: list[str] = []
        for command in ([*pip, "--no-deps", *NO_DEPS], [*pip, *RUNTIME]):
            code, found = run_pip(command)
            if code != 0:
                return code
            reported += [entry for entry in found if entry not in reported]
        if reported:
            print(f"install_monailabel: left out on purpose (pip check lists them; nothing to do): "
                  f"{', '.join(reported)}")
    result = subprocess.run([sys.executable, "-c", CHECK])
    if result.returncode != 0:
        print(f"install_monailabel: the MONAI Label app does not import in {sys.executable} (see above)",
              file=sys.stderr)
        return result.returncode
    print("start the server with:\n  python -m modan_monai.apps.monailabel start_server --studies <folder> "
          "--conf segment_model <model.pt> --conf classify_model <model.pt>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
