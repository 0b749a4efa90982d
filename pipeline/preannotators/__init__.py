"""Pre-annotators: a registry keyed by ``preannotate.model`` in params.yaml.

Each entry is ``"module:Class"``; the module is imported only when the model is built, so importing this
package never imports torch or loads weights. Every class takes ``(params: PreannotateParams, paths: Paths)``,
loads its weights in the constructor and exposes ``spec`` and ``predict(image, context)`` (see
:mod:`pipeline.preannotators.base`). To add a model, write the class and add one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.core.registry import registered_class

if TYPE_CHECKING:
    from pipeline.core.params import Paths
    from pipeline.preannotators.base import PreannotateParams, Preannotator

PREANNOTATORS: dict[str, str] = {
    "grabcut": "pipeline.preannotators.grabcut:GrabCutPreannotator",
    "deeplabv3": "pipeline.preannotators.deeplabv3:DeepLabV3Preannotator",
    "sam": "pipeline.preannotators.sam:SamPreannotator",
    "trained": "pipeline.preannotators.trained:TrainedPreannotator",
}


def preannotator_module(name: str) -> str:
    """The module that defines the pre-annotator ``name`` (its code is part of the stage's code version)."""
    try:
        return PREANNOTATORS[name].partition(":")[0]
    except KeyError:
        raise ValueError(f"unknown pre-annotator {name!r}; choose one of {sorted(PREANNOTATORS)}") from None


def preannotator_class(name: str) -> type:
    """The class registered under ``name`` (ValueError listing the choices when unknown)."""
    return registered_class(PREANNOTATORS, name, "pre-annotator")


def build_preannotator(name: str, params: PreannotateParams, paths: Paths) -> Preannotator:
    """Construct (and load the weights of) the pre-annotator ``name``."""
    return preannotator_class(name)(params, paths)  # type: ignore[no-any-return]
