"""modan_monai: metadata- and anatomy-aware self-supervised pretraining as a MONAI plugin.

Subpackages mirror MONAI: ``data`` (manifests, vocabularies, readers, demo corpus),
``transforms``, ``losses``, ``networks``, ``engines``, ``handlers`` and ``evaluation``.
"""

from __future__ import annotations

from . import _excepthook

__version__ = "0.1.0"

# a failed `python -m monai.bundle run` ends with this project's message, not MONAI's generic wrapper
_excepthook.install()

__all__ = ["__version__"]
