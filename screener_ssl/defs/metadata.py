"""What the catalog shows of every asset: owner, kinds, table schemas, row counts, partitioned checks.

Kept in one place so every asset says the same things the same way: a column schema is
always the schema of the frame actually written, a table's rows are JSON-safe (NaN -> null,
which the UI's table view renders as empty), a check on a partitioned asset always carries
its partitions so each execution records the partition it judged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import dagster as dg
import polars as pl

OWNERS = ["team:screener-ssl"]


def _type_name(dtype: pl.DataType) -> str:
    """``Float64`` -> ``float64``, ``Datetime(time_unit='us', ...)`` -> ``datetime``, ``List(Float64)`` -> ``list``."""
    return (dtype if isinstance(dtype, type) else type(dtype)).__name__.lower()


def table_schema(
    schema: Mapping[str, pl.DataType] | pl.DataFrame, descriptions: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """A Dagster column schema from a polars frame or schema, in column order."""
    if isinstance(schema, pl.DataFrame):
        schema = schema.schema
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[dg.TableColumn(name, _type_name(dtype), descriptions.get(name)) for name, dtype in schema.items()]
    )


def table_metadata(
    frame: pl.DataFrame | Mapping[str, pl.DataType], row_count: int, table_name: str | None = None
) -> dict:
    """``dagster/column_schema``, ``dagster/row_count`` (and ``dagster/table_name`` of a warehouse table)."""
    metadata = {
        "dagster/column_schema": dg.MetadataValue.table_schema(table_schema(frame)),
        "dagster/row_count": dg.MetadataValue.int(int(row_count)),
    }
    if table_name:
        metadata["dagster/table_name"] = table_name
    return metadata


def row_count(rows: int) -> dict:
    return {"dagster/row_count": dg.MetadataValue.int(int(rows))}


def _cell(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # NaN/inf do not survive the UI's JSON parse; null renders as an empty cell
        # A table to read: 4 significant digits (0.2869, 1623, 0.003883); the files keep full precision.
        return float(f"{value:.4g}")
    return value


def table_value(rows: Sequence[Mapping], columns: Sequence[tuple[str, str, str]]) -> dg.TableMetadataValue:
    """An inline table: ``columns`` as (name, type, description), ``rows`` as dicts keyed by column name.

    Floats are shown to 4 significant digits; NaN and inf as empty cells.
    """
    names = [name for name, _, _ in columns]
    for i, row in enumerate(rows):
        missing = set(names) - set(row)
        if missing:
            raise KeyError(f"table row {i} lacks columns {sorted(missing)} (has {sorted(row)})")
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: _cell(row[name]) for name in names}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t, d) for n, t, d in columns]),
    )


def partitioned_check(
    name: str, asset: str, partitions: dg.PartitionsDefinition, **kwargs
) -> dg.AssetCheckSpec:
    """A check spec of a partitioned asset, carrying the asset's partitions (one result per partition)."""
    with warnings.catch_warnings():
        # Partitioned check specs are a preview feature in Dagster 1.13; the warning would print on every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions, **kwargs)
