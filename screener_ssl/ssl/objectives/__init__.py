"""Self-supervised objectives, one module per family, registered by name on import."""

from screener_ssl.ssl._discover import import_submodules
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch, View
from screener_ssl.ssl.objectives.base import (
    Objective,
    ObjectiveConfig,
    build_objective,
    get_objective_class,
    objective_names,
    register_objective,
)

import_submodules(__name__)

__all__ = [
    "Objective",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "SSLBatch",
    "View",
    "build_objective",
    "get_objective_class",
    "objective_names",
    "register_objective",
]
