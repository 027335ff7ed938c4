"""Every sweep entry validated when the sweep file is loaded, not when its asset runs.

:func:`validate_point` checks what :class:`~screener_ssl.runs.sweep.SweepPoint` itself cannot:
the names (safe as path parts), the objective (registered in the one registry of objectives
and baselines), the objective's config through that entry's ``resolve_config``, and the
probe config. :func:`describe_validation_error` turns a pydantic error into lines that name
the file, objective, variant and dotted key, with what was found.

:func:`load_sweep_yaml` reads the file itself with bounds: its size, the number of aliases
(``*name``) and the size of the document once aliases are expanded (a "billion laughs" file is
a few hundred bytes that expand to 10^9 nodes) are checked on the parsed node graph, before
anything is built from it or printed. Duplicate keys are refused with their line. Whatever an
error echoes from the file goes through :func:`short_repr`, bounded in length and work.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from screener_ssl.tracking.names import InvalidNameError, check_name

if TYPE_CHECKING:
    from screener_ssl.runs.sweep import SweepPoint


MAX_SWEEP_BYTES = 1 << 20  # a sweep file is a few KB; 1 MiB leaves room for long grids
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 200_000  # scalars, lists and maps once every alias is expanded
MAX_REPR_CHARS = 200

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


class SweepFileError(ValueError):
    """The sweep file cannot be read as bounded, duplicate-free YAML; names the file and line."""


def short_repr(value: Any, limit: int = MAX_REPR_CHARS) -> str:
    """``repr(value)`` bounded in length and in the work it takes (nested and shared values included)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_text(text: str, limit: int = 2 * MAX_REPR_CHARS) -> str:
    """``text`` cut to ``limit`` characters (a message that may quote a value from the file)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts aliases while composing and refuses duplicate keys."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                line = self.peek_event().start_mark.line + 1
                raise SweepFileError(
                    f"{self.source}: line {line}: more than {MAX_ALIASES} aliases (*name); "
                    f"a sweep file needs few, write the values out"
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # '<<' merges may override; complex keys are refused by validation
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise SweepFileError(
                        f"{self.source}: line {line}: duplicate key {short_repr(key_node.value)} "
                        f"(first at line {seen[key]}); each key may appear once in a mapping"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_nodes(root: yaml.Node, source: str) -> int:
    """Nodes of the document with every alias expanded, counted without expanding (shared nodes memoized)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = [] if isinstance(node, yaml.ScalarNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        )
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_EXPANDED_NODES + 1)
            continue
        if id(node) in on_path:
            raise SweepFileError(f"{source}: line {node.start_mark.line + 1}: an alias refers to its own anchor "
                                 f"(a recursive structure); a sweep file is a tree")
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise SweepFileError(f"{source}: line {child.start_mark.line + 1}: an alias refers to its own anchor "
                                     f"(a recursive structure); a sweep file is a tree")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def load_sweep_yaml(path: Path, max_bytes: int = MAX_SWEEP_BYTES) -> Any:
    """The sweep file at ``path`` parsed with PyYAML's safe loader, within bounds; errors name the file and line.

    Refused: a file over ``max_bytes``, more than :data:`MAX_ALIASES` aliases, a document of more
    than :data:`MAX_EXPANDED_NODES` nodes once aliases are expanded, a recursive alias, nesting
    too deep to parse, and a key repeated in one mapping.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise SweepFileError(f"{path}: {size:,} bytes; a sweep file may hold at most {max_bytes:,}")
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SweepFileError(f"{path}: more than {max_bytes:,} bytes; a sweep file may hold at most {max_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SweepFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    loader = _BoundedLoader(text, str(path))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes = _expanded_nodes(node, str(path))
        if nodes > MAX_EXPANDED_NODES:
            raise SweepFileError(
                f"{path}: more than {MAX_EXPANDED_NODES:,} values once its aliases (*name) are expanded; "
                f"a sweep file is small, and aliases must not multiply it"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise SweepFileError(f"{path}: nested too deeply to read as a sweep file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        context = getattr(exc, "context", None)
        raise SweepFileError(
            f"{path}: {at}not valid YAML: {short_repr(problem)[1:-1] if isinstance(problem, str) else problem}"
            + (f" ({short_repr(context)[1:-1]})" if isinstance(context, str) else "")
        ) from None
    finally:
        loader.dispose()


def describe_file_error(exc: ValidationError, source: str) -> str:
    """One line per failing key of the sweep file's top level, with a bounded echo of what was found."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        found = f" (found {short_repr(error['input'])})" if error["type"] != "missing" else ""
        lines.append(f"{source}: {key}: {error['msg']}{found}")
    return "\n".join(lines)


# Activation memory of one training step, estimated as two views x batch x window x width x layers
# float32 values times this factor (measured peak on CPU: 5-10x for tcn, ssm, patch_transformer).
STEP_MEMORY_FACTOR = 12
MAX_STEP_MEMORY_BYTES = 8 << 30


def step_memory_bytes(batch_size: int, window_max: int, width: int, n_layers: int) -> int:
    """Estimated peak activation memory of one training step (forward and backward), in bytes."""
    return 2 * batch_size * window_max * width * n_layers * 4 * STEP_MEMORY_FACTOR


def check_step_memory(point: "SweepPoint", window_max: int, source: str) -> list[str]:
    """The point's widths together (batch x window x width x layers) fit :data:`MAX_STEP_MEMORY_BYTES`."""
    width = max(point.backbone.hidden_dim, point.backbone.embed_dim)
    need = step_memory_bytes(point.train.batch_size, window_max, width, point.backbone.n_layers)
    if need <= MAX_STEP_MEMORY_BYTES:
        return []
    return [
        f"{where(source, point.objective, point.variant)}: train.batch_size {point.train.batch_size} x "
        f"dataset.window.window_max {window_max} x backbone width {width} x backbone.n_layers "
        f"{point.backbone.n_layers} needs about {need / 2**30:.1f} GiB per training step; at most "
        f"{MAX_STEP_MEMORY_BYTES / 2**30:.0f} GiB: lower one of them"
    ]


def where(source: str, objective: str, variant: str) -> str:
    return f"{source}: objective {objective!r}, variant {variant!r}"


def describe_validation_error(exc: ValidationError, source: str, objective: str, variant: str, section: str) -> str:
    """One line per failing key: ``<file>: objective 'o', variant 'v': <section>.<key>: <message> (found <value>)``."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in (section, *error["loc"]) if part != "")
        found = f" (found {short_repr(error['input'])})" if error["type"] != "missing" else ""
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
    from screener_ssl.probe.config import ProbeConfig
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
            problems.append(f"{here}: objective: {short_text(str(exc))}")
    problems += _validate(ProbeConfig, point.probe, source, point, "probe")
    return problems
