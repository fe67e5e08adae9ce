"""MONAI Label's ASGI app with :mod:`modan_monai.apps.monailabel.compat` applied first.

For ``monailabel start_server --uvicorn_app modan_monai.apps.monailabel.server:app ...`` (what
``python -m modan_monai.apps.monailabel start_server`` amounts to).
"""

from modan_monai.apps.monailabel import compat

compat.apply()

from monailabel.app import app  # noqa: E402

__all__ = ["app"]
