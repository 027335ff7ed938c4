"""Every sweep entry validated when the sweep file is loaded, not when its asset runs.

:func:`validate_point` checks what :class:`~screener_ssl.runs.sweep.SweepPoint` itself cannot:
the names (safe as path parts), the objective (registered in the one registry of objectives
and baselines), the objective's config through that entry's ``resolve_config``, and the
probe config. :func:`describe_validation_error` turns a pydantic error into lines that name
the file, objective, variant and dotted key, with what was found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from screener_ssl.tracking.names import InvalidNameError, check_name

if TYPE_CHECKING:
    from screener_ssl.runs.sweep import SweepPoint


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


def _validate(model: type[BaseModel], values: Any, source: str, point: "SweepPoint", section: str) -> list[str]:
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [describe_validation_error(exc, source, point.objective, point.variant, section)]
    return []


def validate_point(point: "SweepPoint", source: str) -> list[str]:
    """Every problem of one sweep entry (empty when it would run), each naming file, objective, variant, key."""
    from screener_ssl.probe.probe import ProbeConfig
    from screener_ssl.ssl.objectives.base import get_objective_class, objective_names

    here = where(source, point.objective, point.variant)
    problems = check_names(source, point.objective, point.variant)
    registered = objective_names()  # objectives and baselines: one registry
    if point.objective not in registered:
        problems.append(f"{here}: objectives.{point.objective}: unknown objective; registered: {registered}")
    else:
        entry = get_objective_class(point.objective)
        try:
            # The entry's own resolution: the objective's config model, the supervised baseline's
            # FinetuneConfig, or "no settings" for parameter-free baselines.
            entry.resolve_config(point.objective_config, point.train)
        except ValidationError as exc:
            problems.append(describe_validation_error(exc, source, point.objective, point.variant, "objective"))
        except (TypeError, ValueError) as exc:
            problems.append(f"{here}: objective: {exc}")
    problems += _validate(ProbeConfig, point.probe, source, point, "probe")
    return problems
