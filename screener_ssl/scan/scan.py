"""The market-wide scan: score every ticker's latest decision window with a probed encoder.

A scored model is a run dir holding its encoder (``encoder.json`` + weights or fitted
state), ``schema.json`` and ``probe_head.json``, or a reference encoder's dir inside a run
(``<run dir>/teacher``: its head, the run's schema, the encoder its objective names).
The head records how the embeddings it was fitted on were made (pooling, normalization,
encoder); the scan embeds through the same :meth:`Encoder.encode_prepared` call the probe
uses, with those settings, and refuses a head whose record does not match the encoder.
:func:`scan_market` loads it, reads only the recent bars
each ticker's window needs (``window_max + volume_lookback + 1`` per ticker, up to
``as_of``), computes the shape features on that small frame, gathers the window
that ends at each ticker's bar on ``as_of`` (open-only, exactly as in training and
probing), embeds them in cache-sized chunks and returns per-pattern scores, alerts
and ranks.

No lookahead: bars after ``as_of`` are filtered out before anything is computed,
and on the ``as_of`` bar only the open is read (its high/low/close/volume are
overwritten with placeholders before the features are computed; the decision bar
is the last row of its ticker, so nothing else reads them). Tickers that cannot be
scored are listed in ``ScanResult.skipped`` with the reason, never dropped silently.
The market on ``as_of`` is every ticker with a bar among its last K trading dates
(K = ``bars_needed(spec)``); a ticker silent for longer has left it and is not listed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field

from screener_ssl.data.bars import _is_sorted_by_ticker_date
from screener_ssl.data.contracts import BAR_COLUMNS
from screener_ssl.data.features import compute_shape_features
from screener_ssl.data.recent_bars import bars_needed, load_latest_bars
from screener_ssl.data.windows import WindowSpec
from screener_ssl.probe.head import HEAD_FILE, ProbeHead
from screener_ssl.probe.metric_names import VAL_MACRO_AUPRC_COLUMN
from screener_ssl.ssl.encoder import encoder_for_head, load_encoder
from screener_ssl.ssl.schema import load_schema

# Models are chosen on val; the test AUPRC is reported, never used to choose.
VAL_AUPRC_COLUMN = VAL_MACRO_AUPRC_COLUMN
# A run's reference encoders (e.g. a distillation teacher) are candidates too, from their own val AUPRC.
REFERENCE_VAL_AUPRC = re.compile(r"^reference\.(?P<name>[^.]+)\." + re.escape(VAL_MACRO_AUPRC_COLUMN) + "$")
SCORE_COLUMNS: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "date": pl.Date(),
    "pattern": pl.String(),
    "score": pl.Float64(),
    "alert": pl.Boolean(),
    "rank": pl.Int64(),
}
SKIPPED_COLUMNS: dict[str, pl.DataType] = {"ticker": pl.String(), "reason": pl.String()}
TIMING_KEYS: tuple[str, ...] = ("model", "load", "features", "gather", "forward", "head", "rank", "total")
_PRICE_FIELDS = ("open", "high", "low", "close")
_CENSORED_BAR_FIELDS = ("high", "low", "close", "volume")  # unknown at the decision bar's open


class ScanConfig(BaseModel):
    """How a market scan runs; none of it changes a score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_size: int = Field(512, ge=1, le=65_536)  # windows per forward; ~cache-sized on CPU
    threads: int = Field(2, ge=1, le=256)  # torch intra-op threads; open the DuckDB connection with as many
    as_of: dt.date | None = None  # decision date; None = the latest date in the bars
    device: Literal["cpu", "cuda"] = "cpu"


@dataclass
class ScanResult:
    """Scores of one scan. ``scores``: one row per ticker x pattern, sorted by (pattern, rank)."""

    scores: pl.DataFrame  # ticker, date, pattern, score, alert (bool), rank (1 = highest score of that pattern)
    skipped: pl.DataFrame  # ticker, reason
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (TIMING_KEYS)
    as_of: dt.date | None = None
    run_dir: Path | None = None


def latest_bars_from_frame(bars: pl.DataFrame, spec: WindowSpec, as_of: dt.date) -> pl.DataFrame:
    """The same rows :func:`~screener_ssl.data.recent_bars.load_latest_bars` returns, from an in-memory bar frame."""
    _check_bar_frame(bars, "bars")
    k = bars_needed(spec)
    recent = bars.select(BAR_COLUMNS).filter(pl.col("date") <= as_of)
    if not _is_sorted_by_ticker_date(recent):
        recent = recent.sort("ticker", "date")
    recent = recent.group_by("ticker", maintain_order=True).tail(k)
    dates = recent.get_column("date").unique().sort(descending=True)
    if dates.len() >= k:  # tickers without a bar in the last K trading dates are not in the market
        recent = recent.filter((pl.col("date").max().over("ticker") >= dates[k - 1]))
    return recent


def _check_bar_frame(bars: pl.DataFrame, what: str) -> None:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"{what} lack bar columns {missing}; expected {BAR_COLUMNS}")
    if bars.schema["date"] != pl.Date:
        raise ValueError(f"{what}: column 'date' must be pl.Date, found {bars.schema['date']}")


# --------------------------------------------------------------------------- windows


def _usable(column: str) -> pl.Expr:
    """A bar field that is present, finite and (prices) positive / (volume) non-negative."""
    col = pl.col(column).cast(pl.Float64)
    ok = col.is_not_null() & col.is_finite()
    return ok & ((col >= 0) if column == "volume" else (col > 0))


def latest_windows(
    bars: pl.DataFrame, spec: WindowSpec, as_of: dt.date, timings: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], pl.DataFrame]:
    """Censored, normalized windows ending at each ticker's bar on ``as_of``.

    ``bars``: sorted by (ticker, date); any history length (the last
    ``bars_needed(spec)`` bars per ticker give the same features as the full history).
    Returns x float32 [n, window_max, C], observed bool [n, window_max, C], the n
    tickers (sorted) and the skipped tickers with their reason. Vectorized over tickers.
    ``timings``, when given, receives the seconds spent on "features" and "gather".
    """
    t_start = time.perf_counter()
    _check_bar_frame(bars, "bars")
    bars = bars.select(BAR_COLUMNS)
    if bars.height and bars.get_column("date").max() > as_of:
        bars = bars.filter(pl.col("date") <= as_of)  # nothing after the decision date exists
    is_decision = pl.col("date") == as_of  # dates are unique per ticker: this is its last row
    # A history bar must be fully valid (a NaN volume would poison every later trailing mean);
    # on the decision bar only the open is read.
    row_ok = pl.when(is_decision).then(_usable("open")).otherwise(
        pl.all_horizontal([_usable(c) for c in (*_PRICE_FIELDS, "volume")])
    )
    bad = bars.filter(~row_ok)
    skipped_rows: list[dict] = []
    if bad.height:
        bad_summary = bad.group_by("ticker").agg(
            pl.len().alias("n_bad"), (pl.col("date") == as_of).any().alias("decision_bad")
        )
        for row in bad_summary.sort("ticker").iter_rows(named=True):
            if row["decision_bad"] and row["n_bad"] == 1:
                reason = f"no usable open on as_of date {as_of}"
            else:
                reason = f"invalid bars up to as_of: {row['n_bad']} rows with missing or non-positive values"
            skipped_rows.append({"ticker": row["ticker"], "reason": reason})
        bars = bars.join(bad_summary.select("ticker"), on="ticker", how="anti")
    # Placeholders for the decision bar's unknown fields: finite, so no NaN spreads, and never read.
    placeholder = {"high": pl.col("open"), "low": pl.col("open"), "close": pl.col("open"), "volume": pl.lit(0.0)}
    bars = bars.with_columns(
        [pl.when(is_decision).then(placeholder[c]).otherwise(pl.col(c)).alias(c) for c in _CENSORED_BAR_FIELDS]
    )
    n_channels = spec.n_features
    empty_x = np.zeros((0, spec.window_max, n_channels), dtype=np.float32)
    if bars.height == 0:
        return empty_x, empty_x.astype(bool), [], _skipped_frame(skipped_rows)

    if not _is_sorted_by_ticker_date(bars):
        bars = bars.sort("ticker", "date")
    # Integer ticker codes in the same order: the feature step then compares ints, not Python strings.
    store = compute_shape_features(
        bars.with_columns(pl.col("ticker").rle_id()), volume_lookback=spec.volume_lookback
    )
    if tuple(store.feature_names) != tuple(spec.feature_names):
        raise ValueError(f"shape features are {store.feature_names}, the window spec expects {spec.feature_names}")
    starts, ends = store.offsets[:-1], store.offsets[1:]
    ticker_names = bars.get_column("ticker").gather(starts).to_list()
    n_bars = ends - starts
    last_date = store.dates[ends - 1]
    has_bar = last_date == np.datetime64(as_of, "D")
    enough = n_bars >= spec.min_history
    scorable = has_bar & enough
    for i in np.flatnonzero(~scorable):  # the few unscorable tickers only
        if not has_bar[i]:
            reason = f"no bar on as_of date {as_of} (last bar {last_date[i]})"
        else:
            reason = f"insufficient_history: {int(n_bars[i])} bars < min_history {spec.min_history}"
        skipped_rows.append({"ticker": ticker_names[i], "reason": reason})
    tickers = [ticker_names[i] for i in np.flatnonzero(scorable)]
    if not tickers:
        return empty_x, empty_x.astype(bool), [], _skipped_frame(skipped_rows)
    t_gather = time.perf_counter()
    x, observed = spec.gather(store.values, starts[scorable], ends[scorable] - 1)
    if timings is not None:
        timings["features"] = t_gather - t_start
        timings["gather"] = time.perf_counter() - t_gather
    return x, observed, tickers, _skipped_frame(skipped_rows)


def _skipped_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SKIPPED_COLUMNS).sort("ticker")


# --------------------------------------------------------------------------- inference


def batched_embeddings(
    backbone: torch.nn.Module,
    x: np.ndarray,
    observed: np.ndarray,
    chunk_size: int,
    device: str = "cpu",
) -> np.ndarray:
    """``x, observed [n, W, C]`` -> embeddings at the decision bar ``[n, D]`` float32, in chunks.

    ``pooled`` computes the last position only (the TCN evaluates just its receptive cone).
    On CUDA the chunks go through pinned memory and come back in one copy at the end.
    """
    n = x.shape[0]
    on_cuda = torch.device(device).type == "cuda"
    out = torch.empty((n, backbone.embed_dim), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for begin in range(0, n, chunk_size):
            xb = torch.from_numpy(x[begin : begin + chunk_size])
            ob = torch.from_numpy(observed[begin : begin + chunk_size])
            if on_cuda:
                xb, ob = xb.pin_memory(), ob.pin_memory()
            xb, ob = xb.to(device, non_blocking=True), ob.to(device, non_blocking=True)
            out[begin : begin + chunk_size] = backbone.pooled(xb, ob).float()
    return out.cpu().numpy()


def _ranked_scores(
    tickers: list[str], as_of: dt.date, probs: np.ndarray, alerts: np.ndarray, patterns: tuple[str, ...]
) -> pl.DataFrame:
    """Long table, sorted by (pattern, rank); ties in score rank by ticker."""
    n, n_patterns = probs.shape
    if n == 0:
        return pl.DataFrame(schema=SCORE_COLUMNS)
    # Tickers arrive sorted, so a stable sort on -score breaks ties by ticker.
    order = np.argsort(-probs, axis=0, kind="stable")  # [n, P]
    ticker_idx = order.T.reshape(-1)  # pattern-major
    pattern_idx = np.repeat(np.arange(n_patterns), n)
    return pl.DataFrame(
        {
            "ticker": pl.Series(tickers, dtype=pl.String).gather(ticker_idx),
            "date": pl.Series([as_of], dtype=pl.Date).gather(np.zeros(n * n_patterns, dtype=np.int64)),
            "pattern": pl.Series(list(patterns), dtype=pl.String).gather(pattern_idx),
            "score": probs[ticker_idx, pattern_idx],
            "alert": alerts[ticker_idx, pattern_idx],
            "rank": np.tile(np.arange(1, n + 1, dtype=np.int64), n_patterns),
        },
        schema=SCORE_COLUMNS,
    )


def schema_path(model_dir: Path) -> Path:
    """The ``schema.json`` of a model dir: its own, or its run's for a reference encoder's dir."""
    model_dir = Path(model_dir)
    own = model_dir / "schema.json"
    if own.exists() or (model_dir / "encoder.json").exists():
        return own
    return model_dir.parent / "schema.json"


def load_probed_encoder(model_dir: Path):
    """The encoder whose probe head is in ``model_dir``: the run's own, or a reference encoder of the run above."""
    model_dir = Path(model_dir)
    if (model_dir / "encoder.json").exists():
        return load_encoder(model_dir)
    run_dir = model_dir.parent
    experiment = run_dir / "experiment.json"
    if experiment.is_file():
        from screener_ssl.ssl.objectives.base import get_objective_class

        objective = json.loads(experiment.read_text()).get("objective")
        references = get_objective_class(str(objective)).reference_encoders(run_dir)
        if model_dir.name in references:
            return references[model_dir.name]
    raise FileNotFoundError(
        f"no encoder for {model_dir}: it has no encoder.json and is not a reference encoder of {run_dir}"
    )


def _load_model(run_dir: Path, spec: WindowSpec):
    """The encoder set up as its probe head records, and the head; checked against each other and the spec."""
    head = ProbeHead.load(run_dir)
    encoder = load_probed_encoder(run_dir)
    encoder = encoder_for_head(encoder, head.embedding, str(Path(run_dir) / HEAD_FILE))
    if encoder.input_channels != spec.n_features:
        raise ValueError(
            f"{run_dir}/encoder.json expects {encoder.input_channels} channels, "
            f"schema.json lists {spec.n_features} features"
        )
    if head.embed_dim != encoder.embed_dim:
        raise ValueError(
            f"{run_dir}/{HEAD_FILE} was fitted on embeddings of width {head.embed_dim}, "
            f"the encoder produces {encoder.embed_dim}"
        )
    return encoder, head


def serving_problem(model_dir: Path) -> str | None:
    """Why the scan cannot serve ``model_dir`` (None when it can): it loads it exactly as the scan does."""
    try:
        _load_model(Path(model_dir), load_schema(schema_path(model_dir)).window_spec)
    except Exception as err:  # any reason at all: a model that does not load is not served
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def scan_market(
    run_dir: Path,
    bars: pl.DataFrame | None = None,
    con=None,
    spec: WindowSpec | None = None,
    config: ScanConfig = ScanConfig(),
) -> ScanResult:
    """Score every ticker's window ending on ``config.as_of`` with the model in ``run_dir``.

    Bars come from ``bars`` (an in-memory frame) or ``con`` (an open DuckDB connection
    with table ``bars``, read by :func:`load_latest_bars` and left open; its thread count
    is the caller's), exactly one. ``spec``: the window spec the caller's data is built with; when given
    and different from the one the model was trained on -> SchemaMismatchError naming
    the differing fields. Windows are always built with the model's spec.
    """
    t_start = time.perf_counter()
    if (bars is None) == (con is None):
        raise ValueError("scan_market needs exactly one of bars= or con=")
    run_dir = Path(run_dir)
    model_spec = load_schema(schema_path(run_dir), expected_spec=spec).window_spec
    timings: dict[str, float] = {"features": 0.0, "gather": 0.0}

    def load_bars() -> tuple[pl.DataFrame, dt.date]:
        t = time.perf_counter()
        if con is not None:
            recent = load_latest_bars(con, model_spec, config.as_of)
            if config.as_of is None and recent.height == 0:
                raise ValueError("scan_market: the bar table has no bars to scan")
            as_of = config.as_of or recent.get_column("date").max()
        else:
            _check_bar_frame(bars, "bars")
            if config.as_of is None and bars.height == 0:
                raise ValueError("scan_market: the bar frame is empty")
            as_of = config.as_of or bars.get_column("date").max()
            recent = latest_bars_from_frame(bars, model_spec, as_of)
        timings["load"] = time.perf_counter() - t
        return recent, as_of

    # The bar query (DuckDB and polars release the GIL) overlaps the model load.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-bars") as pool:
        pending = pool.submit(load_bars)
        t = time.perf_counter()
        encoder, head = _load_model(run_dir, model_spec)
        timings["model"] = time.perf_counter() - t
        recent, as_of = pending.result()

    x, observed, tickers, skipped = latest_windows(recent, model_spec, as_of, timings=timings)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        if config.device != "cpu":
            encoder = encoder.to(config.device)
        t = time.perf_counter()
        # The probe's embedding call, with the settings its head records (the TCN's "last" is its cone).
        embeddings = encoder.encode_prepared(x, observed, batch_size=config.chunk_size)
        timings["forward"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(previous_threads)

    t = time.perf_counter()
    probs = head.predict_proba(embeddings) if embeddings.shape[0] else np.zeros((0, len(head.patterns)))
    alerts = head.alerts(probs)
    timings["head"] = time.perf_counter() - t

    t = time.perf_counter()
    scores = _ranked_scores(tickers, as_of, probs, alerts, head.patterns)
    timings["rank"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    return ScanResult(scores=scores, skipped=skipped, timings=timings, as_of=as_of, run_dir=run_dir)


# --------------------------------------------------------------------------- choosing a model


def select_best_run(index: pl.DataFrame, skipped: list[dict[str, str]] | None = None) -> Path:
    """The model dir of the highest VAL macro AUPRC among those the scan can serve.

    Candidates: every run with a finite ``probe_metrics.val.macro_auprc`` and a
    ``probe_head.json``, and every reference encoder of a run (``<run dir>/<name>``, from
    ``reference.<name>.probe_metrics.val.macro_auprc``). Best first, each is loaded as the scan
    loads it (:func:`serving_problem`); one that does not load is passed over and, when
    ``skipped`` is given, listed there (``model_dir``, ``reason``).
    Test AUPRC plays no part: choosing the deployed model on test would make its
    reported test score optimistic.
    """
    for column in ("run_dir", VAL_AUPRC_COLUMN):
        if column not in index.columns:
            raise ValueError(f"the experiment index has no column {column!r}; run the probe and rebuild the index")
    references = {m.group("name"): c for c in index.columns if (m := REFERENCE_VAL_AUPRC.match(c))}
    run_ids = index.get_column("run_id").cast(pl.String) if "run_id" in index.columns else pl.Series([""] * index.height)
    rows = index.select(
        pl.col("run_dir").cast(pl.String),
        pl.col(VAL_AUPRC_COLUMN).cast(pl.Float64, strict=False).alias("auprc"),
        *[pl.col(c).cast(pl.Float64, strict=False).alias(f"ref:{name}") for name, c in references.items()],
    ).with_columns(run_id=run_ids)
    candidates: list[tuple[float, str, Path]] = []
    with_auprc = 0
    for row in rows.iter_rows(named=True):
        if row["run_dir"] is None:
            continue
        for auprc, model_dir in [(row["auprc"], Path(row["run_dir"]))] + [
            (row[f"ref:{name}"], Path(row["run_dir"]) / name) for name in references
        ]:
            if auprc is None or auprc != auprc:
                continue
            with_auprc += 1
            if (model_dir / HEAD_FILE).is_file():
                candidates.append((auprc, row["run_id"] or "", model_dir))
    if not candidates:
        raise FileNotFoundError(
            f"no run in the experiment index has both a finite {VAL_AUPRC_COLUMN} and a {HEAD_FILE} "
            f"({index.height} rows, {with_auprc} models with a val AUPRC); run probe_metrics first"
        )
    # Highest val AUPRC; among equals the latest run id (ids sort by creation time), then the run's own encoder.
    passed: list[dict[str, str]] = []
    for _, _, model_dir in sorted(candidates, key=lambda c: (c[0], c[1], -len(c[2].parts)), reverse=True):
        problem = serving_problem(model_dir)
        if problem is None:
            if skipped is not None:
                skipped.extend(passed)
            return model_dir
        passed.append({"model_dir": str(model_dir), "reason": problem})
    if skipped is not None:
        skipped.extend(passed)
    raise FileNotFoundError(
        f"none of the {len(candidates)} probed models in the experiment index can be served: "
        + "; ".join(f"{p['model_dir']}: {p['reason']}" for p in passed)
    )
