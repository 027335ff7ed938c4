"""The label-source contract and the one registry of label sources.

A label source turns the labels setting (``SCREENER_SSL_LABELS``, ``build_labels``'
``source``) into label events: rows of ``EVENT_COLUMNS`` (``ticker, pattern,
start_date, end_date``, dtypes :data:`EVENT_SCHEMA`). The label of a decision date D
counts events that *end* before D, so an event's ``end_date`` must be the first bar on
which the whole pattern is visible.

The setting names a source as ``<name>`` or ``<name>:<argument>`` (for a source that
takes one, e.g. ``chart:double_top,cup_with_handle``); a setting that names no source
goes to the source that claims it (the label file claims paths). An unknown name is an
error listing the known sources.

To add a label source: one module in ``screener_ssl/data/label_sources/`` with a
function ``(LabelInputs) -> LabelEvents`` decorated with :func:`register_label_source`.
Modules of this package are imported (and so registered) automatically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import polars as pl

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "pattern": pl.String(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
}


@dataclass(frozen=True)
class LabelInputs:
    """What a label source may read."""

    setting: str  # the labels setting as written, e.g. "chart:double_top"
    argument: str | None  # what follows "<name>:" (None: the bare name, or a setting the source claimed)
    bars_dir: Path  # the validated bars' folder: bars.parquet, source_events.parquet (synthetic market only)
    load_bars: Callable[[], pl.DataFrame]  # the validated bars, read when called


class LabelEvents(NamedTuple):
    events: pl.DataFrame  # EVENT_SCHEMA rows
    patterns: tuple[str, ...]  # the label columns, in order
    description: str  # recorded as labels.json's "source"


@dataclass(frozen=True)
class LabelSource:
    name: str
    build: Callable[[LabelInputs], LabelEvents]
    reads: str  # what it reads, for the list of known sources
    argument: str | None = None  # the form of "<name>:<argument>" when the source takes one
    claims: Callable[[str], bool] | None = None  # settings that name no source but belong to this one

    def usage(self) -> str:
        return self.name if self.argument is None else f"{self.name}[:{self.argument}]"


_REGISTRY: dict[str, LabelSource] = {}


def register_label_source(
    name: str, reads: str, argument: str | None = None, claims: Callable[[str], bool] | None = None
) -> Callable[[Callable[[LabelInputs], LabelEvents]], Callable[[LabelInputs], LabelEvents]]:
    """Register the decorated ``build(LabelInputs) -> LabelEvents`` as label source ``name``."""

    def register(build: Callable[[LabelInputs], LabelEvents]) -> Callable[[LabelInputs], LabelEvents]:
        source = LabelSource(name=name, build=build, reads=reads, argument=argument, claims=claims)
        if name in _REGISTRY and _REGISTRY[name].build is not build:
            raise ValueError(f"label source {name!r} registered twice")
        _REGISTRY[name] = source
        return build

    return register


def label_source_names() -> list[str]:
    return sorted(_REGISTRY)


def known_label_sources() -> str:
    """One line per registered source: its usage and what it reads."""
    return "\n".join(f"  {s.usage()}: {s.reads}" for s in sorted(_REGISTRY.values(), key=lambda s: s.name))


def find_label_source(setting: str) -> tuple[LabelSource, str | None]:
    """The source a labels setting names, and its argument (``None`` when there is none)."""
    if setting in _REGISTRY:
        return _REGISTRY[setting], None
    name, sep, argument = setting.partition(":")
    if sep and name in _REGISTRY and _REGISTRY[name].argument is not None:
        return _REGISTRY[name], argument
    for source in sorted(_REGISTRY.values(), key=lambda s: s.name):
        if source.claims is not None and source.claims(setting):
            return source, None
    raise ValueError(f"unknown label source {setting!r}; the known sources are:\n{known_label_sources()}")


def resolve_label_events(setting: str, bars_dir: Path, load_bars: Callable[[], pl.DataFrame]) -> LabelEvents:
    """The label events of a labels setting, from the source it names."""
    source, argument = find_label_source(setting)
    return source.build(LabelInputs(setting=setting, argument=argument, bars_dir=bars_dir, load_bars=load_bars))
