"""Small torch helpers every model-running stage shares: device selection, thread count, inference mode.

torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> Any:
    """A ``torch.device`` for ``preference``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``
    or ``cuda:N``. Asking for CUDA on a machine without it raises :class:`ConfigError` (one sentence)."""
    import torch

    pref = preference.strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {preference!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
        dev = torch.device(pref)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {preference!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {preference!r}")


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count (``0`` leaves torch's default: one per core)."""
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


@contextmanager
def inference() -> Iterator[None]:
    """``torch.inference_mode()`` as a context manager (no autograd bookkeeping)."""
    import torch

    with torch.inference_mode():
        yield


def device_name(device: Any) -> str:
    """Human-readable name of a device (the GPU model for CUDA, ``cpu`` otherwise)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return str(torch.cuda.get_device_name(device))
    return "cpu"
