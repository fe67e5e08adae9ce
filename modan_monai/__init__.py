"""modan_monai: metadata- and anatomy-aware self-supervised pretraining as a MONAI plugin.

Subpackages mirror MONAI: ``data`` (manifests, vocabularies, readers, demo corpus),
``transforms``, ``losses``, ``networks``, ``engines``, ``handlers`` and ``evaluation``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
