"""Optimisers shared by the bundles."""

from __future__ import annotations

from .lars import LARS, lars_param_groups

__all__ = ["LARS", "lars_param_groups"]
