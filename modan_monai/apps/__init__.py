"""Applications built on the bundles (``monailabel``: a MONAI Label app)."""
