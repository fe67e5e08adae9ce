"""Install MONAI Label 0.8.5 into this environment without changing the project's pinned packages.

Usage (in the environment where modan_monai is installed)::

    python scripts/install_monailabel.py

A plain ``pip install monailabel`` downgrades numpy to 1.26 and jsonschema to 3.2 (through ``numpymaxflow`` and
``pydicom-seg`` 0.4.1), pulls mlflow, openslide and SAM2 (which downloads weights) and grows the environment to
about 4 GB. This script instead installs ``monailabel``, ``pydicom-seg`` and ``torchvision`` with ``--no-deps``
and then the packages monailabel's server actually imports (read from its import graph), letting pip keep every
version already installed. Left out on purpose (so ``pip check`` lists them): ``numpymaxflow`` (scribbles apps),
``sam2`` (SAM2 tasks), ``ninja``, mlflow/openslide (monai extras), and pydicom-seg's ``numpy<2`` /
``jsonschema<4`` pins (the parts the app imports work with numpy 2; see ``modan_monai.apps.monailabel.compat``
for the two import fixes). It ends by importing the server the way the app does and printing the start command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

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
CHECK = (
    "from modan_monai.apps.monailabel import compat; fixes = compat.apply(); import monailabel.app; "
    "import modan_monai.apps.monailabel.main; print('monailabel imports; compatibility fixes applied:', fixes or 'none')"
)


def main(argv: list[str] | None = None) -> int:
    """Install (unless ``--check``), then check the imports; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the app's imports work")
    args = parser.parse_args(argv)
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    if not args.check:
        subprocess.run([*pip, "--no-deps", *NO_DEPS], check=True)
        subprocess.run([*pip, *RUNTIME], check=True)
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
