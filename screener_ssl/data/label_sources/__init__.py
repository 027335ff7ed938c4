"""Label sources, one module per source, registered by name on import (see ``base.py``)."""

import importlib
import pkgutil

from screener_ssl.data.label_sources.base import (
    EVENT_SCHEMA,
    LabelEvents,
    LabelInputs,
    LabelSource,
    find_label_source,
    label_source_names,
    register_label_source,
    resolve_label_events,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "EVENT_SCHEMA",
    "LabelEvents",
    "LabelInputs",
    "LabelSource",
    "find_label_source",
    "label_source_names",
    "register_label_source",
    "resolve_label_events",
]
