"""What a bundle run checks about its own configuration: the config files and id overrides it was given."""

from __future__ import annotations

from .overrides import (
    EXTENDS_METHOD_KEY,
    METHOD_KEY,
    NEW_IDS_KEY,
    RUN_ARGUMENTS,
    check_bundle_arguments,
    check_method_files,
    check_overrides,
    defined_ids,
)

__all__ = [
    "EXTENDS_METHOD_KEY",
    "METHOD_KEY",
    "NEW_IDS_KEY",
    "RUN_ARGUMENTS",
    "check_bundle_arguments",
    "check_method_files",
    "check_overrides",
    "defined_ids",
]
