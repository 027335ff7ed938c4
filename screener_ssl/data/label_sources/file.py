"""Label source: a user file (Parquet or CSV) of label events, or a folder of them.

The file holds one event per row with the columns ``EVENT_COLUMNS``: ``ticker: str,
pattern: str, start_date: date, end_date: date`` (DESIGN.md section 2, "Labels"); its
``end_date`` is the first bar on which the whole pattern is visible. The labels setting
is the file's path (or ``file:<path>``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from screener_ssl.data.bars import BAR_FILE_SUFFIXES, _cast_date_column, _cast_text_column, _read_raw_table, _table_files
from screener_ssl.data.contracts import EVENT_COLUMNS
from screener_ssl.data.label_sources.base import LabelEvents, LabelInputs, register_label_source


class LabelsSchemaError(ValueError):
    """A label file lacks a column, holds bad values or an event ending before it starts."""


def _read_event_file(file: Path) -> pl.DataFrame:
    table = _read_raw_table(file, EVENT_COLUMNS, LabelsSchemaError, "labels")
    events = pl.DataFrame(
        [
            _cast_text_column(table, "ticker", file, LabelsSchemaError),
            _cast_text_column(table, "pattern", file, LabelsSchemaError),
            _cast_date_column(table, "start_date", file, LabelsSchemaError),
            _cast_date_column(table, "end_date", file, LabelsSchemaError),
        ]
    )
    for column in EVENT_COLUMNS:
        null_rows = events.with_row_index("row").filter(pl.col(column).is_null())
        if null_rows.height:
            raise LabelsSchemaError(
                f"labels file {file}: column {column!r} is empty in {null_rows.height} row(s), "
                f"first at data row {null_rows['row'][0]}; every event needs all of "
                f"{list(EVENT_COLUMNS)}"
            )
    backwards = events.filter(pl.col("end_date") < pl.col("start_date"))
    if backwards.height:
        first = backwards.row(0, named=True)
        raise LabelsSchemaError(
            f"labels file {file}: {backwards.height} event(s) end before they start, e.g. "
            f"ticker {first['ticker']!r} pattern {first['pattern']!r}: "
            f"end_date {first['end_date']} < start_date {first['start_date']}"
        )
    return events


def read_label_events(path: str | Path) -> pl.DataFrame:
    """Read label events from a Parquet (.parquet/.pq) or CSV file, or a folder of them.

    The file needs ``EVENT_COLUMNS`` (extra columns are dropped); dates may be Date,
    Datetime or 'YYYY-MM-DD' text.

    Returns:
        Events with the dtypes of ``EVENT_SCHEMA``, sorted by (ticker, end_date, pattern,
        start_date).

    Raises:
        LabelsSchemaError: naming the file and column for a missing column, a value that is
            empty or cannot be parsed, and naming the ticker for an event with
            ``end_date < start_date``.
    """
    files = _table_files(Path(path), LabelsSchemaError, "labels")
    events = pl.concat([_read_event_file(file) for file in files], how="vertical")
    return events.sort("ticker", "end_date", "pattern", "start_date")


def _is_path(setting: str) -> bool:
    """A setting that names no source is a label file when it exists or is written as a path."""
    path = Path(setting)
    return path.exists() or path.suffix.lower() in BAR_FILE_SUFFIXES or "/" in setting or "\\" in setting


@register_label_source(
    "file", reads="a Parquet/CSV file or folder of ticker, pattern, start_date, end_date (the setting may be the bare path)",
    argument="<path>", claims=_is_path,
)
def file_labels(inputs: LabelInputs) -> LabelEvents:
    path = inputs.argument if inputs.argument is not None else inputs.setting
    events = read_label_events(Path(path))
    return LabelEvents(events, tuple(sorted(events.get_column("pattern").unique().to_list())), f"label file {inputs.setting}")
