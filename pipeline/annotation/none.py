"""Backend ``none`` (the demo default): nothing is pushed anywhere and nothing is pulled.

``maskloop push`` still writes an (empty) receipt and ``maskloop pull`` an empty corrections table, so the
pipeline runs end to end on pre-annotations alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.annotation.base import PullOutcome, PushItem, PushOutcome, ReceiptRow
from pipeline.core.errors import ConfigError
from pipeline.core.params import Paths

log = logging.getLogger(__name__)


class NoneBackend:
    """Pushes nothing, pulls nothing."""

    name = "none"

    def push(self, items: Sequence[PushItem], receipt: Sequence[ReceiptRow]) -> PushOutcome:
        log.info("annotation.backend is 'none': %d items not sent to any annotation tool", len(items))
        return PushOutcome(receipt=(), created=0, updated=0, unchanged=0)

    def pull(self, receipt: Sequence[ReceiptRow]) -> PullOutcome:
        log.info("annotation.backend is 'none': no human corrections to pull")
        return PullOutcome(corrections=())

    def status(self) -> Mapping[str, Any]:
        return {"backend": self.name}


def make_backend(settings: Mapping[str, Any], paths: Paths, where: str = "params.yaml:annotation.none") -> NoneBackend:
    if settings:
        raise ConfigError(f"{where}: backend 'none' takes no settings, got {sorted(settings)}")
    return NoneBackend()
