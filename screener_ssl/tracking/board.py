"""The leaderboard as it is read: its columns declared once, in the order that decides.

:data:`COLUMNS` is the one list of the board's columns. The printed board
(:func:`format_leaderboard`), the Parquet written beside the index
(:func:`ordered_board`), the UI's inline table (:func:`table_columns`,
:func:`leaderboard_records`) and the HTML report all read it, so they show the
same columns in the same order: what decides first (objective, kind, whether the
row is current, test AUPRC with its CI, the paired verdicts, the label-budget
columns), then cost, then the rest.

A column names the board frame's column it reads (``source``, the name
:func:`screener_ssl.tracking.leaderboard.leaderboard` gives it); the table may
rename it (``auprc`` is ``test_auprc`` there). ``optional`` columns appear only
when the board has them. The label-budget columns ``labels_<k>_<field>`` are
placed generically: every one present, by budget ``k`` ascending, where
:data:`LABEL_BUDGETS` stands in the list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from screener_ssl.probe.curves import STILL_RISING_TOLERANCE

LABEL_BUDGETS = "labels_{k}_*"
BUDGET_COLUMN = re.compile(r"^labels_(\d+)_(.+)$")
# A budget's fields in the order shown; any other field of a budget follows, sorted by name.
BUDGET_FIELDS = ("auprc", "ci_low", "ci_high", "vs_supervised", "vs_minirocket")
BUDGET_DESCRIPTIONS = {
    "auprc": "Test macro AUPRC with the head fitted on {k} labelled windows",
    "ci_low": "Lower end of the 95% block-bootstrap CI of the AUPRC at {k} labels",
    "ci_high": "Upper end of that CI at {k} labels",
    "vs_supervised": "Paired verdict against the supervised baseline, both at {k} labels",
    "vs_minirocket": "Paired verdict against minirocket, both at {k} labels",
}


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _text(value) -> str:
    """A value of a column without a printer of its own: floats to 3 decimals, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _fmt(value, ".3f")
    return "-" if value is None else str(value)


@dataclass(frozen=True)
class Column:
    """One column of the board: where it comes from, what it is, and how the printed board shows it."""

    name: str  # in the UI table and the report
    type: str  # "string" | "float" | "int" | "bool" (the table's column type)
    description: str
    source: str = ""  # the board frame's column; "" = ``name``
    header: str = ""  # the printed board's header; "" = not a printed column of its own
    width: int = 0
    cell: Callable[[dict], str] | None = None  # the printed cell from the board row (default: the value)
    optional: bool = False  # shown only when the board has it
    lead: bool = False  # one of the columns that decide: in the compact verdict table too

    @property
    def column(self) -> str:
        return self.source or self.name

    def printed(self, row: dict) -> str:
        return self.cell(row) if self.cell else _text(row.get(self.column))


def _test_auprc(row: dict) -> str:
    return f"{_fmt(row.get('auprc'), '.3f')} [{_fmt(row.get('ci_low'), '.3f')}, {_fmt(row.get('ci_high'), '.3f')}]"


def _verdict(prefix: str) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        verdict = row.get(f"{prefix}_verdict")
        return f"{verdict} {_fmt(row.get(f'{prefix}_diff'), '+.3f')}" if verdict else "-"
    return cell


def _seeds(row: dict) -> str:
    return f"{_fmt(row.get('seed_sd'), '.3f')} ({row.get('n_seeds') or 1})"


def _current(row: dict) -> str:
    current = row.get("current")
    return "-" if current is None else "yes" if current else "NO"


def _number(spec: str) -> Callable[[str], Callable[[dict], str]]:
    return lambda source: (lambda row: _fmt(row.get(source), spec))


_f3, _f1, _f0 = _number(".3f"), _number(".1f"), _number(".0f")

# The board's columns, in the order every view shows them.
COLUMNS: list[Column] = [
    Column("rank", "int", "Rank by val macro AUPRC (test never chooses)", header="#", width=2, lead=True),
    Column("objective", "string", "SSL objective, baseline or reference encoder; '(finetuned)' for the finetuned "
           "classifier", header="objective", width=22, lead=True),
    Column("variant", "string", "Declared sweep variant (seed replicates pooled)", header="variant", width=9, lead=True),
    Column("kind", "string", "objective, baseline or reference (a run's reference encoder, e.g. a distillation "
           "teacher), from the objective registry", header="kind", width=9, lead=True),
    Column("current", "bool", "Computed on the current windowed dataset and the current sweep point (every run "
           "of the row); false = out of date, rerun before reading it", header="current", width=7, cell=_current,
           optional=True, lead=True),
    Column("test_auprc", "float", "Test macro AUPRC, mean over seeds", source="auprc",
           header="test AUPRC [95% CI]", width=22, cell=_test_auprc, lead=True),
    Column("test_ci_low", "float", "Lower end of the 95% block-bootstrap CI of the test seed-mean", source="ci_low"),
    Column("test_ci_high", "float", "Upper end of that CI", source="ci_high"),
    Column("still_rising", "string", f"yes when val macro AUPRC rose by more than {STILL_RISING_TOLERANCE} between "
           "the last two encoder snapshots (seed mean): not converged at its training budget; empty for fixed "
           "encoders", header="rising", width=6, optional=True, lead=True),
    Column("curve_rise", "float", "Val macro AUPRC of the last encoder snapshot minus the one before (seed mean)",
           optional=True),
    Column("vs_reference", "string", "Paired verdict against masked_recon (same variant where it exists)",
           source="vs_reference_verdict", header="vs masked_recon", width=17, cell=_verdict("vs_reference"), lead=True),
    Column("vs_minirocket", "string", "Paired verdict against minirocket (same variant and backbone where it exists)",
           source="vs_minirocket_verdict", header="vs minirocket", width=17, cell=_verdict("vs_minirocket"), lead=True),
    Column("vs_baseline", "string", "Paired verdict against the best baseline by val", source="vs_baseline_verdict",
           header="vs best baseline", width=17, cell=_verdict("vs_baseline"), lead=True),
    Column("label_efficiency", "float", "Test macro AUPRC at the smallest label budget (few labelled tickers)",
           header="label eff.", width=10, optional=True, lead=True),
    Column("label_efficiency_budget", "int", "The smallest label budget, in labelled train tickers", optional=True),
    Column(LABEL_BUDGETS, "float", "Per label budget k: AUPRC, its CI and paired verdicts at k labels"),
    Column("pretrain_s", "float", "Pretraining wall seconds", header="pretrain s", width=10, cell=_f1("pretrain_s")),
    Column("windows_seen", "int", "Windows the encoder saw while pretraining"),
    Column("windows_per_s", "float", "Pretraining throughput"),
    Column("embed_s", "float", "Probe embedding seconds", header="embed s", width=8, cell=_f1("embed_s")),
    Column("head_s", "float", "Probe head fitting seconds", header="head s", width=7, cell=_f1("head_s")),
    Column("parameters", "int", "Encoder parameters", header="params", width=8, cell=_f0("parameters")),
    Column("val_auprc", "float", "Val macro AUPRC, mean over seeds (ranks the board)", header="val AUPRC", width=9,
           cell=_f3("val_auprc")),
    Column("seed_sd", "float", "Standard deviation of test AUPRC over seeds (null with one seed)",
           header="seeds: sd (n)", width=13, cell=_seeds),
    Column("n_seeds", "int", "Seeds pooled in this row"),
    Column("vs_reference_diff", "float", "Paired test macro AUPRC difference against masked_recon"),
    Column("vs_minirocket_diff", "float", "Paired test macro AUPRC difference against minirocket"),
    Column("vs_baseline_diff", "float", "Paired test macro AUPRC difference against the best baseline"),
    Column("baseline", "string", "The best baseline by val, objective|variant, that vs_baseline compares against",
           source="vs_baseline_against"),
    Column("backbone", "string", "Encoder backbone", header="backbone", width=9),
    Column("recall_at_60pct", "float", "Recall at the val threshold with 60% of the pattern visible",
           header="recall@60%", width=10, cell=_f3("recall_at_60pct")),
    Column("ece", "float", "Expected calibration error on test", header="ECE", width=6, cell=_f3("ece")),
]


def _budget_key(name: str) -> tuple[int, int, str]:
    k, field = BUDGET_COLUMN.match(name).groups()
    return int(k), BUDGET_FIELDS.index(field) if field in BUDGET_FIELDS else len(BUDGET_FIELDS), field


def _type_of(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_numeric():
        return "float"
    return "string"


_VERDICT_MARK = {"better": "+", "worse": "-", "tie": "="}


def _budget_cell(k: int) -> Callable[[dict], str]:
    """``AUPRC [CI] s<mark> m<mark>``: the paired verdicts vs supervised and minirocket at budget k."""
    def cell(row: dict) -> str:
        auprc = row.get(f"labels_{k}_auprc")
        if auprc is None or (isinstance(auprc, float) and math.isnan(auprc)):
            return "-"
        marks = "".join(
            f" {side}{_VERDICT_MARK.get(row.get(f'labels_{k}_vs_{name}') or '', '.')}"
            for side, name in (("s", "supervised"), ("m", "minirocket"))
        )
        return f"{auprc:.3f} [{_fmt(row.get(f'labels_{k}_ci_low'), '.3f')},{_fmt(row.get(f'labels_{k}_ci_high'), '.3f')}]{marks}"
    return cell


def budget_columns(board: pl.DataFrame) -> list[Column]:
    """Every ``labels_<k>_<field>`` column of the board, by budget then field; the AUPRC ones printed."""
    names = sorted((c for c in board.columns if BUDGET_COLUMN.match(c)), key=_budget_key)
    out = []
    for name in names:
        k, _, field = _budget_key(name)
        description = BUDGET_DESCRIPTIONS.get(field, f"{field} at the label budget of {{k}} labels").format(k=k)
        printed = dict(header=f"@{k} tickers: AUPRC [CI] s m", width=32, cell=_budget_cell(k)) if field == "auprc" else {}
        out.append(Column(name, _type_of(board.schema[name]), description, **printed))
    return out


def _has_values(board: pl.DataFrame, name: str) -> bool:
    return name in board.columns and bool(board.get_column(name).is_not_null().any())


def table_columns(board: pl.DataFrame) -> list[Column]:
    """The columns this board shows, in order: :data:`COLUMNS` with the budget columns expanded and the
    optional columns it lacks (or holds no value of) left out."""
    out: list[Column] = []
    for column in COLUMNS:
        if column.name == LABEL_BUDGETS:
            out += budget_columns(board)
        elif not column.optional or _has_values(board, column.column):
            out.append(column)
    return out


# (column, type, description) of every board's table: the columns that are always there.
TABLE_COLUMNS: list[tuple[str, str, str]] = [
    (c.name, c.type, c.description) for c in COLUMNS if not c.optional and c.name != LABEL_BUDGETS
]


def table_schema(board: pl.DataFrame) -> list[tuple[str, str, str]]:
    """(name, type, description) of this board's table, in order (for an inline table)."""
    return [(c.name, c.type, c.description) for c in table_columns(board)]


def ordered_board(board: pl.DataFrame) -> pl.DataFrame:
    """The board frame in the table's column order with its ``rank`` first (the Parquet written beside the
    index); columns no view shows (run ids, CI ends of the verdicts, ...) follow in their own order."""
    if "rank" not in board.columns:
        board = board.with_row_index("rank", offset=1).with_columns(pl.col("rank").cast(pl.Int64))
    shown = [c.column for c in table_columns(board) if c.column in board.columns]
    return board.select(shown + [c for c in board.columns if c not in shown])


def _value(value, kind: str):
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return bool(value)
    return value


def leaderboard_records(board: pl.DataFrame) -> list[dict]:
    """The board's rows as plain dicts keyed by :func:`table_columns`' names, in rank order; absent values are None."""
    columns = table_columns(board)
    records = []
    for i, row in enumerate(board.iter_rows(named=True), 1):
        record = {}
        for column in columns:
            value = row.get("rank", i) if column.name == "rank" else row.get(column.column)
            record[column.name] = _value(value, column.type)
        records.append(record)
    return records


def verdict_columns(board: pl.DataFrame) -> list[Column]:
    """The compact verdict table's columns: the leading printed ones, and the AUPRC at the smallest label budget."""
    budgets = [c for c in budget_columns(board) if c.header]
    smallest = budgets[0].name if budgets else None
    return [c for c in table_columns(board) if c.header and (c.lead or c.name == smallest)]


def verdict_table(board: pl.DataFrame) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """The board's decisive columns as the printed board shows them (CI and diffs inside their cells), narrow
    enough for a first screen: (name, type, description) per column and one record per row, in rank order."""
    columns = verdict_columns(board)
    schema = [(c.header, "int" if c.name == "rank" else "string", c.description) for c in columns]
    records = []
    for i, row in enumerate(board.iter_rows(named=True), 1):
        row = {**row, "rank": row.get("rank", i)}
        records.append({c.header: int(row["rank"]) if c.name == "rank" else c.printed(row) for c in columns})
    return schema, records


def _aligned(column: Column, text: str) -> str:
    if column.cell is None and column.type == "string":
        text = text[: column.width]  # names: clipped to their column
    return f"{text:{column.width}s}" if column.type == "string" else f"{text:>{column.width}s}"


def format_leaderboard(board: pl.DataFrame) -> str:
    """A fixed-width table for the terminal, in :data:`COLUMNS`' order: ranked by val, test reported with its
    pooled CI and seed spread, the paired verdicts beside it."""
    printed = [c for c in table_columns(board) if c.header]
    header = " ".join(_aligned(c, c.header) for c in printed)
    lines = [header, "-" * len(header)]
    for i, row in enumerate(board.iter_rows(named=True), 1):
        row = {**row, "rank": row.get("rank", i)}
        lines.append(" ".join(_aligned(c, c.printed(row)) for c in printed))
    if board.height and "vs_baseline_against" in board.columns:
        against = next((a for a in board.get_column("vs_baseline_against").to_list() if a), None)
        if against:
            lines.append(f"best baseline (by val): {against}; verdicts are paired differences at 95% (block bootstrap)")
    budgets = sorted({_budget_key(c.name)[0] for c in budget_columns(board)})
    if budgets:
        lines.append(
            f"@k tickers: only k train tickers labelled (mean over seeds x draws); s, m: paired verdict vs "
            f"supervised (retrained) and minirocket (head refitted) on the same labelled rows: + better, "
            f"- worse, = tie, . not compared; label eff. = AUPRC @{budgets[0]}"
        )
    if board.height and "still_rising" in board.columns and board.get_column("still_rising").is_not_null().any():
        lines.append(
            f"rising: val macro AUPRC rose by more than {STILL_RISING_TOLERANCE} between the last two encoder "
            "snapshots (seed mean): the run had not converged at its budget"
        )
    return "\n".join(lines)
