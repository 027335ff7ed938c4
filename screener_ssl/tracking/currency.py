"""Whether the leaderboard's rows were computed on the current dataset and the current sweep points.

The index keeps every run ever written; the leaderboard reads the latest probed run of each
partition and model type. Those rows are current when their run recorded the dataset
fingerprint of the windowed dataset on disk now and the fingerprint of the sweep point the
sweep file defines now (``run_meta.sweep_point_fingerprint``, see
:meth:`screener_ssl.runs.sweep.Sweep.point_fingerprint`).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from screener_ssl.probe.metric_names import MACRO_AUPRC_COLUMN

DATASET_COLUMN = "experiment.dataset_fingerprint"
POINT_COLUMN = "run_meta.sweep_point_fingerprint"
PARTITION_COLUMN = "experiment.partition"
SCORE_COLUMN = MACRO_AUPRC_COLUMN


def leaderboard_rows(index: pl.DataFrame) -> pl.DataFrame:
    """The latest probed run per (partition, model type): the rows the leaderboard is built from."""
    if index.height == 0 or SCORE_COLUMN not in index.columns or PARTITION_COLUMN not in index.columns:
        return index.clear()
    probed = index.filter(pl.col(SCORE_COLUMN).is_not_null())
    return probed.sort("run_id").group_by([PARTITION_COLUMN, "model_type"], maintain_order=True).last().sort("run_id")


def _short(value: str | None) -> str:
    return "none" if value is None else value[:12]


def _reasons(row: Mapping, dataset_fingerprint: str | None, point_fingerprints: Mapping[str, str]) -> list[str]:
    """Why one index row was not computed on the current dataset and sweep point (empty: it was)."""
    partition = row.get(PARTITION_COLUMN)
    reasons = []
    recorded_dataset = row.get(DATASET_COLUMN)
    if dataset_fingerprint is None:
        reasons.append("no windowed dataset exists now")
    elif recorded_dataset != dataset_fingerprint:
        reasons.append(f"dataset {_short(recorded_dataset)}, current {_short(dataset_fingerprint)}")
    recorded_point = row.get(POINT_COLUMN)
    if partition not in point_fingerprints:
        reasons.append(f"sweep point {partition} is not in the current sweep")
    elif recorded_point is None:
        reasons.append("no sweep point fingerprint recorded")
    elif recorded_point != point_fingerprints[partition]:
        reasons.append(f"sweep point {_short(recorded_point)}, current {_short(point_fingerprints[partition])}")
    return reasons


def out_of_date_rows(
    index: pl.DataFrame, dataset_fingerprint: str | None, point_fingerprints: Mapping[str, str]
) -> list[dict[str, object]]:
    """The leaderboard's rows computed on another dataset or sweep point than the current ones, with why.

    ``dataset_fingerprint``: the windowed dataset's now (None when it does not exist);
    ``point_fingerprints``: ``objective|variant`` -> the sweep point's fingerprint now.
    Each entry names the run (run_id, model_type, partition, run_dir) and lists its reasons.
    """
    out: list[dict[str, object]] = []
    for row in leaderboard_rows(index).iter_rows(named=True):
        reasons = _reasons(row, dataset_fingerprint, point_fingerprints)
        if reasons:
            out.append({
                "run_id": row["run_id"], "model_type": row["model_type"], "partition": row.get(PARTITION_COLUMN),
                "run_dir": row["run_dir"], "reasons": reasons,
            })
    return out


def with_currency(
    board: pl.DataFrame, index: pl.DataFrame, dataset_fingerprint: str | None, point_fingerprints: Mapping[str, str]
) -> pl.DataFrame:
    """The board with ``current``: every run a row pools (its ``run_ids``) was computed on the current dataset
    and sweep point, by the same reasons :func:`out_of_date_rows` gives. A run the index lacks is not current."""
    if board.width == 0:
        return board
    if board.height == 0 or "run_ids" not in board.columns:
        return board.with_columns(current=pl.lit(None, dtype=pl.Boolean))
    current = {
        row["run_id"]: not _reasons(row, dataset_fingerprint, point_fingerprints)
        for row in index.select(
            [c for c in ("run_id", PARTITION_COLUMN, DATASET_COLUMN, POINT_COLUMN) if c in index.columns]
        ).iter_rows(named=True)
    } if index.height else {}
    flags = [
        all(current.get(run_id, False) for run_id in (run_ids or "").split(",") if run_id) and bool(run_ids)
        for run_ids in board.get_column("run_ids").to_list()
    ]
    return board.with_columns(current=pl.Series(flags, dtype=pl.Boolean))
