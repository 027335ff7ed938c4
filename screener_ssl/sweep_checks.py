"""Every sweep entry validated when the sweep file is loaded, not when its asset runs.

:func:`validate_point` checks what :class:`~screener_ssl.sweep.SweepPoint` itself cannot:
the names (safe as path parts), the objective (registered in the objective registry, or one
of the baselines), the objective's config against that objective's config model, and the
probe config. :func:`describe_validation_error` turns a pydantic error into lines that name
the file, objective, variant and dotted key, with what was found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from screener_ssl.tracking.names import InvalidNameError, check_name

if TYPE_CHECKING:
    from screener_ssl.sweep import SweepPoint


def where(source: str, objective: str, variant: str) -> str:
    return f"{source}: objective {objective!r}, variant {variant!r}"


def describe_validation_error(exc: ValidationError, source: str, objective: str, variant: str, section: str) -> str:
    """One line per failing key: ``<file>: objective 'o', variant 'v': <section>.<key>: <message> (found <value>)``."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in (section, *error["loc"]) if part != "")
        found = f" (found {error['input']!r})" if error["type"] != "missing" else ""
        lines.append(f"{where(source, objective, variant)}: {key}: {error['msg']}{found}")
    return "\n".join(lines)


def check_names(source: str, objective: str, variant: str) -> list[str]:
    problems = []
    for what, value in (("objective", objective), ("variant", variant)):
        try:
            check_name(value, what)
        except InvalidNameError as err:
            problems.append(f"{where(source, objective, variant)}: {err}")
    return problems


def known_objectives() -> tuple[list[str], tuple[str, ...]]:
    """(registered objectives, baselines): the names a sweep may list."""
    from screener_ssl.ssl.objectives.base import objective_names
    from screener_ssl.ssl.pipeline import BASELINES

    return objective_names(), BASELINES


def _validate(model: type[BaseModel], values: Any, source: str, point: "SweepPoint", section: str) -> list[str]:
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [describe_validation_error(exc, source, point.objective, point.variant, section)]
    return []


def validate_point(point: "SweepPoint", source: str) -> list[str]:
    """Every problem of one sweep entry (empty when it would run), each naming file, objective, variant, key."""
    from screener_ssl.probe.probe import ProbeConfig
    from screener_ssl.ssl.objectives.base import get_objective_class

    here = where(source, point.objective, point.variant)
    problems = check_names(source, point.objective, point.variant)
    registered, baselines = known_objectives()
    if point.objective in registered:
        config_cls = get_objective_class(point.objective).config_cls
        problems += _validate(config_cls, point.objective_config, source, point, "objective")
    elif point.objective == "supervised":
        from screener_ssl.ssl.finetune import FinetuneConfig
        from screener_ssl.ssl.pipeline import _supervised_config

        unknown = sorted(set(point.objective_config) - set(FinetuneConfig.model_fields))
        if unknown:
            problems.append(f"{here}: objective.{unknown[0]}: not a FinetuneConfig setting (unknown keys {unknown})")
        else:
            try:
                _supervised_config(point)
            except ValidationError as exc:
                problems.append(describe_validation_error(exc, source, point.objective, point.variant, "objective"))
    elif point.objective in baselines:
        if point.objective_config:
            problems.append(
                f"{here}: objective: baseline {point.objective!r} takes no objective settings, "
                f"found {sorted(point.objective_config)}"
            )
    else:
        problems.append(
            f"{here}: objectives.{point.objective}: unknown objective; registered objectives "
            f"{registered}, baselines {list(baselines)}"
        )
    problems += _validate(ProbeConfig, point.probe, source, point, "probe")
    return problems
