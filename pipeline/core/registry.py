"""Registries: a name in params -> a class named by ``"module:Class"``, imported only when it is chosen.

The pre-annotators (:mod:`pipeline.preannotators`), the refinement engines (:mod:`pipeline.refine`) and the
annotation backends keep such a table; this module resolves an entry, and checks the device setting they share.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def registered_class(registry: Mapping[str, str], name: str, kind: str) -> type:
    """The class registered under ``name`` (ValueError naming the ``kind`` and listing the choices when unknown)."""
    try:
        target = registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def check_device(device: str, key: str = "device") -> None:
    """Refuse a device setting other than ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``key`` names the setting)."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"{key} must be auto, cpu, cuda or cuda:N, got {device!r}")
