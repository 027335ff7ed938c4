"""The sweep file: dataset settings, run defaults, and objectives x named hyperparameter variants.

A variant is a named point: either written out under ``variants`` or expanded
from a ``grids`` entry (every combination of the listed values becomes one
named point, ``<grid>-<value>[-<value>...]``). Each point overrides the
defaults section by section (``backbone``, ``train``, ``augment``,
``objective``, ``probe``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.ssl.trainer import TrainConfig

DEFAULT_SWEEP = Path(__file__).resolve().parents[2] / "sweeps" / "default.yaml"
SECTIONS = ("backbone", "train", "augment", "objective", "probe")


class SweepError(ValueError):
    """The sweep file is malformed; the message names the file and the key."""


class DatasetSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    synthetic: SyntheticMarketConfig = SyntheticMarketConfig()
    window: WindowSpec = WindowSpec()


class ObjectiveEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"base": {}})
    grids: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: DatasetSection = DatasetSection()
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)
    objectives: dict[str, ObjectiveEntry]


class SweepPoint(BaseModel):
    """Everything one (objective, variant) partition runs with."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    objective: str
    variant: str
    backbone: BackboneConfig
    train: TrainConfig
    augment: AugmentConfig
    objective_config: dict[str, Any]
    probe: dict[str, Any]

    @property
    def partition_key(self) -> str:
        return f"{self.objective}|{self.variant}"


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _dotted_to_nested(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _fmt(value: Any) -> str:
    return str(value).replace(" ", "").replace("|", "_").replace(",", "_")


class Sweep:
    """A loaded sweep file with its grids expanded."""

    def __init__(self, spec: SweepFile, source: str) -> None:
        self.spec = spec
        self.source = source
        self.points: dict[tuple[str, str], SweepPoint] = {}
        for objective, entry in spec.objectives.items():
            named = dict(entry.variants)
            for grid_name, axes in entry.grids.items():
                keys = list(axes)
                for combo in itertools.product(*(axes[k] for k in keys)):
                    name = "-".join([grid_name, *(_fmt(v) for v in combo)])
                    if name in named:
                        raise SweepError(f"{source}: objectives.{objective}: grid point {name!r} clashes with a variant")
                    named[name] = _dotted_to_nested(dict(zip(keys, combo)))
            for variant, overrides in named.items():
                unknown = set(overrides) - set(SECTIONS)
                if unknown:
                    raise SweepError(
                        f"{source}: objectives.{objective}.variants.{variant}: unknown sections {sorted(unknown)}; "
                        f"expected {SECTIONS}"
                    )
                merged = {s: _merge(spec.defaults.get(s, {}), overrides.get(s, {})) for s in SECTIONS}
                try:
                    point = SweepPoint(
                        objective=objective,
                        variant=variant,
                        backbone=BackboneConfig.model_validate(merged["backbone"]),
                        train=TrainConfig.model_validate(merged["train"]),
                        augment=AugmentConfig.model_validate(merged["augment"]),
                        objective_config=merged["objective"],
                        probe=merged["probe"],
                    )
                except ValidationError as exc:
                    raise SweepError(f"{source}: objectives.{objective}, variant {variant!r}: {exc}") from exc
                self.points[(objective, variant)] = point

    @property
    def objectives(self) -> list[str]:
        return list(self.spec.objectives)

    @property
    def variants(self) -> list[str]:
        return sorted({v for _, v in self.points})

    def point(self, objective: str, variant: str) -> SweepPoint:
        if (objective, variant) not in self.points:
            defined = sorted(v for o, v in self.points if o == objective)
            raise SweepError(
                f"{self.source}: variant {variant!r} is not defined for objective {objective!r}"
                + (f"; defined: {defined}" if defined else f"; objectives in the sweep: {self.objectives}")
            )
        return self.points[(objective, variant)]

    def partition_keys(self, variant: str | None = None) -> list[str]:
        return [p.partition_key for (o, v), p in self.points.items() if variant is None or v == variant]


def load_sweep(path: str | Path | None = None) -> Sweep:
    path = Path(path) if path else DEFAULT_SWEEP
    if not path.exists():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        spec = SweepFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise SweepError(f"{path}: {exc}") from exc
    return Sweep(spec, str(path))
