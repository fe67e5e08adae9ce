"""Two import fixes that let monailabel 0.8.5 start next to this project's pinned packages.

Each fix checks for its problem first and does nothing when the problem is absent, so the module becomes a no-op
once upstream is fixed (and can then be deleted):

1. ``pydicom._storage_sopclass_uids``: pydicom 3 moved the storage SOP class UIDs into ``pydicom.uid`` and removed
   that module; ``pydicom-seg`` 0.4.1 (imported by ``monailabel.interfaces.app``), its latest release, still
   imports it (an upstream issue; no release has the fix). When the module is missing, :func:`apply` registers an alias module whose attributes are looked up in ``pydicom.uid``.
2. ``operator torchvision::nms does not exist``: PyPI's torchvision 0.28.0 wheel is built against the CUDA torch,
   so its C extension does not load next to the CPU torch 2.13.0 wheel, and ``import torchvision`` then fails in
   ``torchvision/_meta_registrations.py`` (``register_fake`` on an undefined operator). monailabel imports
   ``torchvision.utils`` (``make_grid``) unconditionally. When that exact error occurs, :func:`apply` declares the
   two operator schemas torchvision registers fake kernels for (``nms``, ``qnms``) and imports torchvision again.
   The pure-Python parts of torchvision then work; its C++ ops (``torchvision.ops.nms`` ...) still raise
   "Couldn't load custom C++ ops" when called, which nothing served by this app does.

:func:`apply` must run before anything imports ``monailabel.interfaces`` or ``torchvision``:
``python -m modan_monai.apps.monailabel start_server`` calls it first, and the app's ``main.py`` calls it for the
worker processes MONAI Label starts for training.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import torch

__all__ = ["apply", "applied_fixes"]

_FIXES: list[str] = []
# the operator declarations must outlive apply(): a torch.library.Library removes its definitions when collected
_TORCHVISION_LIBRARY: list[Any] = []
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _fix_pydicom_storage_uids() -> bool:
    if "pydicom._storage_sopclass_uids" in sys.modules:
        return False
    if importlib.util.find_spec("pydicom") is None:
        return False
    if importlib.util.find_spec("pydicom._storage_sopclass_uids") is not None:
        return False
    import pydicom.uid

    alias = types.ModuleType("pydicom._storage_sopclass_uids")
    alias.__doc__ = "Alias of pydicom.uid registered by modan_monai.apps.monailabel.compat (pydicom 3)."

    def __getattr__(name: str) -> Any:
        try:
            return getattr(pydicom.uid, name)
        except AttributeError:
            raise AttributeError(f"pydicom.uid has no {name!r} (via pydicom._storage_sopclass_uids alias)") from None

    alias.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[alias.__name__] = alias
    return True


def _purge(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


def _fix_torchvision_ops() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision")
        return False
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
    _purge("torchvision")
    library = torch.library.Library("torchvision", "FRAGMENT")  # schemas only, no kernels
    for schema in _TORCHVISION_SCHEMAS:
        library.define(schema)
    _TORCHVISION_LIBRARY.append(library)
    importlib.import_module("torchvision")
    return True


def apply() -> list[str]:
    """Apply the fixes that are needed here (idempotent).

    Returns:
        the names of the fixes applied by this and earlier calls (empty when none was needed).
    """
    if "pydicom_storage_uids" not in _FIXES and _fix_pydicom_storage_uids():
        _FIXES.append("pydicom_storage_uids")
    if "torchvision_ops" not in _FIXES and _fix_torchvision_ops():
        _FIXES.append("torchvision_ops")
    return list(_FIXES)


def applied_fixes() -> list[str]:
    """The fixes :func:`apply` has applied in this process."""
    return list(_FIXES)
