"""Refinement engines: a registry keyed by ``refine.engine`` in params.yaml (or the assist request).

Each entry is ``"module:Class"``; the module is imported only when the engine is built, so importing this
package never imports torch or loads weights. Every class takes ``(params: RefineParams, paths: Paths)``,
loads its weights in the constructor and exposes ``spec`` and
``refine(item, current_mask, clicks, box=None) -> RefineResult`` (see :mod:`pipeline.refine.base`).
To add an engine, write the class and add one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.core.registry import registered_class

if TYPE_CHECKING:
    from pipeline.core.params import Paths
    from pipeline.refine.base import RefineParams, Refiner

REFINERS: dict[str, str] = {
    "grabcut": "pipeline.refine.grabcut:GrabCutRefiner",
    "sam": "pipeline.refine.sam:SamRefiner",
    "trained": "pipeline.refine.trained:TrainedRefiner",
}


def refiner_class(name: str) -> type:
    """The class registered under ``name`` (ValueError listing the choices when unknown)."""
    return registered_class(REFINERS, name, "refine engine")


def build_refiner(name: str, params: RefineParams, paths: Paths) -> Refiner:
    """Construct (and load the weights of) the refinement engine ``name``."""
    return refiner_class(name)(params, paths)  # type: ignore[no-any-return]
