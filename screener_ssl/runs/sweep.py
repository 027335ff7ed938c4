"""The sweep file: dataset settings, run defaults, and objectives x named hyperparameter variants.

A variant is a named point: either written out under ``variants`` or expanded
from a ``grids`` entry (every combination of the listed values becomes one
named point, ``<grid>-<value>[-<value>...]``). Each point overrides the
defaults section by section (``backbone``, ``train``, ``augment``,
``objective``, ``probe``).

Seeds are replicates, each its own run: a variant may name ``seeds: [0, 1, 2]``
(or the file's top-level ``seeds`` applies); a variant with more than one seed
expands into ``<variant>-s<seed>`` points whose ``train.seed`` is that seed
(the probe's own seed stays put, so every replicate is scored on the same rows).
``partition_keys(variant)`` matches either the expanded or the declared name.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.ssl.trainer import TrainConfig
from screener_ssl.runs.sweep_checks import (
    SweepFileError,
    check_names,
    check_step_memory,
    describe_file_error,
    describe_validation_error,
    load_sweep_yaml,
    short_repr,
    validate_point,
)

DEFAULT_SWEEP = Path(__file__).resolve().parents[2] / "sweeps" / "default.yaml"
SECTIONS = ("backbone", "train", "augment", "objective", "probe")
MAX_GRID_POINTS = 10_000  # one partition (and run) each


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
    seeds: list[int] | None = None  # replicates of every variant that names none
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
    declared_variant: str = ""  # the variant's name before seed expansion ("" = same as variant)

    @property
    def base_variant(self) -> str:
        return self.declared_variant or self.variant

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
                n_points = math.prod(len(axes[k]) for k in keys)
                if n_points > MAX_GRID_POINTS:
                    raise SweepError(
                        f"{source}: objectives.{objective}.grids.{grid_name}: {n_points:,} combinations; "
                        f"a grid may expand to at most {MAX_GRID_POINTS:,} points"
                    )
                for combo in itertools.product(*(axes[k] for k in keys)):
                    name = "-".join([grid_name, *(_fmt(v) for v in combo)])
                    if name in named:
                        raise SweepError(f"{source}: objectives.{objective}: grid point {name!r} clashes with a variant")
                    named[name] = _dotted_to_nested(dict(zip(keys, combo)))
            expanded: dict[str, tuple[str, dict]] = {}
            for variant, overrides in named.items():
                overrides = dict(overrides)
                seeds = overrides.pop("seeds", spec.seeds)
                if seeds is not None and (
                    not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and x >= 0 for x in seeds)
                    or len(set(seeds)) != len(seeds)
                ):
                    raise SweepError(
                        f"{source}: objectives.{objective}.variants.{variant}: seeds must be a list of distinct "
                        f"non-negative integers, found {short_repr(seeds)}"
                    )
                if seeds is None or len(seeds) == 1:
                    if seeds:
                        overrides["train"] = {**overrides.get("train", {}), "seed": seeds[0]}
                    expanded[variant] = (variant, overrides)
                    continue
                for seed in seeds:
                    name = f"{variant}-s{seed}"
                    if name in named:
                        raise SweepError(f"{source}: objectives.{objective}: seed point {name!r} clashes with a variant")
                    expanded[name] = (variant, {**overrides, "train": {**overrides.get("train", {}), "seed": seed}})
            for variant, (declared, overrides) in expanded.items():
                unknown = set(overrides) - set(SECTIONS)
                if unknown:
                    raise SweepError(
                        f"{source}: objectives.{objective}.variants.{variant}: unknown sections "
                        f"{short_repr(sorted(map(str, unknown)))}; "
                        f"expected {SECTIONS}"
                    )
                merged = {s: _merge(spec.defaults.get(s, {}), overrides.get(s, {})) for s in SECTIONS}
                problems = check_names(source, objective, variant)
                sections = {}
                for section, model in (("backbone", BackboneConfig), ("train", TrainConfig), ("augment", AugmentConfig)):
                    try:
                        sections[section] = model.model_validate(merged[section])
                    except ValidationError as exc:
                        problems.append(describe_validation_error(exc, source, objective, variant, section))
                if not problems:
                    point = SweepPoint(
                        objective=objective, variant=variant, **sections,
                        objective_config=merged["objective"], probe=merged["probe"],
                        declared_variant="" if declared == variant else declared,
                    )
                    # Objective, its config and the probe config: checked now, not when the asset runs.
                    problems = validate_point(point, source)
                    problems += check_step_memory(point, spec.dataset.window.window_max, source)
                if problems:
                    raise SweepError("\n".join(problems))
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

    def point_fingerprint(self, objective: str, variant: str) -> str:
        """What one partition's run depends on in the sweep file: its resolved point and the dataset section.

        Editing a point's settings (steps, augmentations, probe sizes) or the dataset/window
        settings changes it; editing another point does not.
        """
        return fingerprint(self.point(objective, variant), self.spec.dataset)[:16]

    @property
    def fingerprint(self) -> str:
        """The whole sweep file as parsed: every point and the dataset section."""
        return fingerprint(self.spec)[:16]

    def partition_keys(self, variant: str | None = None) -> list[str]:
        return [
            p.partition_key
            for (o, v), p in self.points.items()
            if variant is None or variant in (v, p.base_variant)
        ]


def load_sweep(path: str | Path | None = None) -> Sweep:
    path = Path(path) if path else DEFAULT_SWEEP
    if not path.exists():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        raw = load_sweep_yaml(path) or {}
    except SweepFileError as exc:
        raise SweepError(str(exc)) from None
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        # Never str(exc): pydantic echoes whole inputs; each line here is bounded.
        raise SweepError(describe_file_error(exc, str(path))) from None
    return Sweep(spec, str(path))
