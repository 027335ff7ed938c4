"""The market scan: same scores as the probe path, no lookahead, open-only decision bars, skips with reasons."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from screener_ssl.data import dataset as ds
from screener_ssl.data.recent_bars import bars_needed, connect_read_only, load_latest_bars
from screener_ssl.data.synthetic import SyntheticMarketConfig
from screener_ssl.data.windows import WindowSpec
from screener_ssl.probe.head import HEAD_FILE, ProbeHead
from screener_ssl.probe.head_fit import fit_probe_head
from screener_ssl.scan.scan import (
    ScanConfig,
    latest_bars_from_frame,
    latest_windows,
    scan_market,
    select_best_run,
)
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.encoder import Encoder, embedding_settings, load_encoder
from screener_ssl.ssl.encoder import embed_positions
from screener_ssl.ssl.schema import SchemaMismatchError, SSLSchema

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
CENSORED = ("high", "low", "close", "volume")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """A 12-ticker synthetic market through the real pipeline, plus a scored model run dir."""
    import torch

    root = tmp_path_factory.mktemp("scan_data")
    ds.ingest_bars(root, "synthetic", SyntheticMarketConfig(n_tickers=12, n_days=400, seed=0, difficulty=0.2))
    ds.build_features(root, SPEC.volume_lookback)
    ds.build_windowed_dataset(root, SPEC)
    ds.build_labels(root, "synthetic", SPEC)
    dataset = ds.load_dataset(root)

    torch.manual_seed(0)
    config = BackboneConfig(kind="tcn", embed_dim=16, hidden_dim=16, n_layers=2)
    run_dir = tmp_path_factory.mktemp("scan_run")
    Encoder(build_backbone(config, SPEC.n_features), normalization="none").save(run_dir)
    schema = SSLSchema(
        window_spec=dataset.spec,
        spec_fingerprint=dataset.spec.fingerprint(),
        dataset_fingerprint=dataset.dataset_fingerprint,
        augmentation=AugmentConfig(),
        objective="masked_recon",
        objective_config={},
        encoder=config,
    )
    (run_dir / "schema.json").write_text(schema.to_json())
    encoder = load_encoder(run_dir)
    train = dataset.index.rows_of("train")[::3]
    head = fit_probe_head(embed_positions(encoder, dataset, train), dataset.labels[train], dataset.patterns)
    # Thresholds at the train 80th percentile so some tickers alert; the last pattern never alerts.
    train_probs = head.predict_proba(embed_positions(encoder, dataset, train))
    thresholds = {p: float(np.quantile(train_probs[:, j], 0.8)) for j, p in enumerate(head.patterns)}
    thresholds[head.patterns[-1]] = float("nan")
    head.set_thresholds(thresholds, target_precision=0.8)
    head.embedding = embedding_settings(encoder)  # as the probe records it
    head.save(run_dir)
    return {
        "root": root,
        "dataset": dataset,
        "run_dir": run_dir,
        "db": root / ds.WAREHOUSE,
        "bars": ds.load_clean_bars(root),
        "encoder": encoder,
        "head": ProbeHead.load(run_dir),
    }


def _decision_dates(dataset) -> np.ndarray:
    return dataset.store.dates[dataset.index.decision_row]


def _probe_path(market, as_of: dt.date) -> pl.DataFrame:
    """Scores of the index windows whose decision date is ``as_of``, via embed_positions + the head."""
    dataset = market["dataset"]
    positions = np.flatnonzero(_decision_dates(dataset) == np.datetime64(as_of, "D"))
    assert positions.size > 0, f"no index window decides on {as_of}"
    probs = market["head"].predict_proba(embed_positions(market["encoder"], dataset, positions))
    tickers = [dataset.store.tickers[i] for i in dataset.index.ticker_id[positions]]
    return pl.DataFrame(
        {
            "ticker": np.repeat(tickers, probs.shape[1]),
            "pattern": np.tile(market["head"].patterns, len(tickers)),
            "expected": probs.reshape(-1),
        }
    )


def _assert_matches_probe_path(market, result, as_of: dt.date) -> None:
    expected = _probe_path(market, as_of)
    joined = expected.join(result.scores, on=["ticker", "pattern"], how="left")
    assert joined.get_column("score").null_count() == 0, "a window of the index is missing from the scan"
    assert result.scores.height == expected.height
    np.testing.assert_allclose(joined.get_column("score").to_numpy(), joined.get_column("expected").to_numpy(),
                               rtol=1e-5, atol=1e-5)
    assert (result.scores.get_column("date") == as_of).all()


def _scan(market, db_path: Path | None = None, **kwargs) -> object:
    """The scan from ``bars=`` when given, else from a read-only connection to ``db_path`` (default: the market's)."""
    kwargs.setdefault("spec", SPEC)
    if "bars" in kwargs:
        return scan_market(market["run_dir"], **kwargs)
    threads = kwargs.get("config", ScanConfig()).threads
    with connect_read_only(db_path or market["db"], threads) as con:
        return scan_market(market["run_dir"], con=con, **kwargs)


def _latest_bars(db_path: Path, as_of) -> pl.DataFrame:
    with connect_read_only(db_path) as con:
        return load_latest_bars(con, SPEC, as_of)


# --------------------------------------------------------------------------- equivalence with the probe


def test_scan_of_the_latest_date_equals_the_probe_path(market):
    result = _scan(market)
    last = market["bars"].get_column("date").max()
    assert result.as_of == last
    _assert_matches_probe_path(market, result, last)
    assert result.skipped.height == 0
    # Alerts are the head's alerts; ranks are 1..n per pattern, by descending score.
    head = market["head"]
    for pattern, group in result.scores.group_by("pattern"):
        pattern = pattern[0]
        group = group.sort("rank")
        assert group.get_column("rank").to_list() == list(range(1, group.height + 1))
        assert (group.get_column("score").diff().drop_nulls() <= 0).all()
        expected_alert = group.get_column("score").to_numpy() >= head.thresholds[pattern]
        assert (group.get_column("alert").to_numpy() == expected_alert).all()
    assert result.scores.filter(pl.col("pattern") == head.patterns[-1]).get_column("alert").sum() == 0
    assert result.scores.get_column("alert").sum() > 0
    assert set(result.timings) >= {"load", "features", "gather", "forward", "head", "total"}


def test_scan_of_an_earlier_date_equals_the_probe_path_from_db_and_frame(market):
    dates = np.unique(_decision_dates(market["dataset"])[market["dataset"].index.rows_of("val")])
    as_of = dates[len(dates) // 2].astype("datetime64[D]").item()
    from_db = _scan(market, config=ScanConfig(as_of=as_of))
    _assert_matches_probe_path(market, from_db, as_of)
    from_frame = _scan(market, bars=market["bars"], config=ScanConfig(as_of=as_of))
    assert_frame_equal(from_frame.scores, from_db.scores)


def test_load_latest_bars_returns_each_tickers_last_bars_including_gaps_and_late_listings(market, tmp_path):
    bars = market["bars"]
    tickers = bars.get_column("ticker").unique().sort().to_list()
    last = bars.get_column("date").max()
    dates = bars.get_column("date").unique().sort()
    halted, stopped, late, gone = tickers[0], tickers[1], tickers[2], tickers[3]
    edited = bars.filter(
        ~((pl.col("ticker") == halted) & pl.col("date").is_between(dates[-30], dates[-20]))  # an 11-day halt
        & ~((pl.col("ticker") == stopped) & (pl.col("date") > dates[-20]))  # last traded 20 days ago
        & ~((pl.col("ticker") == late) & (pl.col("date") < dates[-10]))  # listed 10 days ago
        & ~((pl.col("ticker") == gone) & (pl.col("date") > dates[-200]))  # delisted long before the window
    )
    db = tmp_path / "warehouse.duckdb"
    ds.write_duckdb_tables(db, {"bars": edited})
    k = bars_needed(SPEC)
    loaded = _latest_bars(db, None)
    assert_frame_equal(loaded, latest_bars_from_frame(edited, SPEC, last))
    counts = dict(loaded.group_by("ticker").len().iter_rows())
    assert counts[halted] == k and counts[stopped] == k and counts[late] == 10 and gone not in counts
    assert loaded.filter(pl.col("ticker") == halted).get_column("date").min() < dates[-k]
    # Read through the scan: the halted ticker is scored, two are skipped with their reasons.
    result = _scan(market, db_path=db)
    reasons = dict(result.skipped.iter_rows())
    assert reasons == {
        stopped: f"no bar on as_of date {last} (last bar {dates[-20]})",
        late: f"insufficient_history: 10 bars < min_history {SPEC.min_history}",
    }
    assert halted in result.scores.get_column("ticker").to_list()


@pytest.mark.parametrize("every", [3, 10])
def test_load_latest_bars_on_a_sparse_calendar(market, tmp_path, every):
    """Every 3rd date: the K-th latest date lies beyond the first search span; every 10th: fewer than K dates."""
    bars = market["bars"]
    kept_dates = bars.get_column("date").unique().sort()[::every]
    sparse = bars.filter(pl.col("date").is_in(kept_dates.implode()))
    db = tmp_path / "warehouse.duckdb"
    ds.write_duckdb_tables(db, {"bars": sparse})
    as_of = kept_dates[-1]
    assert_frame_equal(_latest_bars(db, as_of), latest_bars_from_frame(sparse, SPEC, as_of))


# --------------------------------------------------------------------------- skipped tickers


def test_short_history_and_missing_decision_bar_are_skipped_with_reasons(market):
    bars = market["bars"]
    last = bars.get_column("date").max()
    tickers = bars.get_column("ticker").unique().sort().to_list()
    short, absent = tickers[3], tickers[4]
    short_rows = bars.filter(pl.col("ticker") == short).tail(10)
    edited = pl.concat(
        [
            bars.filter(~pl.col("ticker").is_in([short, absent])),
            short_rows,
            bars.filter((pl.col("ticker") == absent) & (pl.col("date") < last)),
        ]
    ).sort("ticker", "date")
    result = _scan(market, bars=edited)
    reasons = dict(result.skipped.iter_rows())
    assert reasons == {
        short: f"insufficient_history: 10 bars < min_history {SPEC.min_history}",
        absent: f"no bar on as_of date {last} (last bar {bars.filter(pl.col('date') < last).get_column('date').max()})",
    }
    scored = set(result.scores.get_column("ticker").unique().to_list())
    assert scored == set(tickers) - {short, absent}
    full = _scan(market, bars=bars)
    assert_frame_equal(
        result.scores.drop("rank").sort("pattern", "ticker"),
        full.scores.filter(~pl.col("ticker").is_in([short, absent])).drop("rank").sort("pattern", "ticker"),
    )


def test_invalid_history_bar_skips_only_that_ticker(market):
    bars = market["bars"]
    last = bars.get_column("date").max()
    bad_ticker = bars.get_column("ticker").unique().sort()[5]
    bad_date = bars.get_column("date").unique().sort()[-5]
    edited = bars.with_columns(
        pl.when((pl.col("ticker") == bad_ticker) & (pl.col("date") == bad_date))
        .then(None)
        .otherwise(pl.col("volume"))
        .alias("volume")
    )
    result = _scan(market, bars=edited)
    assert dict(result.skipped.iter_rows()) == {
        bad_ticker: "invalid bars up to as_of: 1 rows with missing or non-positive values"
    }
    full = _scan(market, bars=bars)
    kept = full.scores.filter(pl.col("ticker") != bad_ticker)
    assert_frame_equal(result.scores.drop("rank").sort("pattern", "ticker"), kept.drop("rank").sort("pattern", "ticker"))
    assert result.as_of == last


# --------------------------------------------------------------------------- decision bar and lookahead


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_open_only_decision_bar_scores_like_the_full_bar(market, missing):
    bars = market["bars"]
    last = bars.get_column("date").max()
    some = bars.get_column("ticker").unique().sort().to_list()[::2]
    on_decision = (pl.col("date") == last) & pl.col("ticker").is_in(some)
    open_only = bars.with_columns(
        [pl.when(on_decision).then(pl.lit(missing, dtype=pl.Float64)).otherwise(pl.col(c)).alias(c) for c in CENSORED]
    )
    assert open_only.filter(on_decision).get_column("close").is_null().all() == (missing is None)
    full = _scan(market, bars=bars)
    censored = _scan(market, bars=open_only)
    assert censored.skipped.height == 0
    assert_frame_equal(censored.scores, full.scores)
    _assert_matches_probe_path(market, censored, last)


def test_decision_bar_without_an_open_is_skipped(market):
    bars = market["bars"]
    last = bars.get_column("date").max()
    ticker = bars.get_column("ticker").unique().sort()[0]
    edited = bars.with_columns(
        pl.when((pl.col("date") == last) & (pl.col("ticker") == ticker)).then(None).otherwise(pl.col("open")).alias("open")
    )
    result = _scan(market, bars=edited)
    assert dict(result.skipped.iter_rows()) == {ticker: f"no usable open on as_of date {last}"}


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_bars_after_as_of_and_censored_fields_do_not_change_the_scan(market, data):
    bars = market["bars"]
    dates = bars.get_column("date").unique().sort()
    as_of = dates[data.draw(st.integers(100, dates.len() - 2), label="as_of position")]
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    after = bars.get_column("date").to_numpy() > np.datetime64(as_of, "D")
    on_decision = bars.get_column("date").to_numpy() == np.datetime64(as_of, "D")
    factor = np.where(after, rng.lognormal(0.0, 0.5, bars.height), 1.0)
    censored_factor = np.where(on_decision, rng.lognormal(0.0, 0.5, bars.height), 1.0)
    perturbed = bars.with_columns(
        pl.col("open") * factor,
        *[pl.col(c) * factor * censored_factor for c in CENSORED],
    )
    drop_future = pl.Series(after & (rng.random(bars.height) < 0.3))
    perturbed = perturbed.filter(~drop_future)
    config = ScanConfig(as_of=as_of)
    reference = _scan(market, bars=bars, config=config)
    assert reference.scores.height == market["dataset"].store.n_tickers * len(market["head"].patterns)
    assert_frame_equal(_scan(market, bars=perturbed, config=config).scores, reference.scores)


def test_future_bars_in_the_database_do_not_change_the_scan(market, tmp_path):
    bars = market["bars"]
    dates = bars.get_column("date").unique().sort()
    as_of = dates[-40]
    rng = np.random.default_rng(3)
    factor = np.where(bars.get_column("date").to_numpy() > np.datetime64(as_of, "D"), rng.lognormal(0, 1, bars.height), 1.0)
    perturbed = bars.with_columns([pl.col(c) * factor for c in ("open", "high", "low", "close", "volume")])
    db = tmp_path / "warehouse.duckdb"
    ds.write_duckdb_tables(db, {"bars": perturbed})
    config = ScanConfig(as_of=as_of)
    changed = _scan(market, db_path=db, config=config)
    assert_frame_equal(changed.scores, _scan(market, config=config).scores)
    _assert_matches_probe_path(market, changed, as_of)


def test_latest_windows_censors_the_decision_bar_to_the_open():
    rng = np.random.default_rng(0)
    days = pl.date_range(dt.date(2021, 1, 1), dt.date(2021, 3, 21), eager=True)  # 80 bars
    rows = []
    for ticker in ("AAA", "BBB"):
        close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, days.len())))
        rows.append(pl.DataFrame({"ticker": ticker, "date": days, "open": close, "high": close * 1.01,
                                  "low": close * 0.99, "close": close, "volume": rng.lognormal(10, 0.3, days.len())}))
    bars_frame = pl.concat(rows)
    x, observed, tickers, skipped = latest_windows(bars_frame, SPEC, days[-1])
    assert tickers == ["AAA", "BBB"] and skipped.height == 0
    assert x.shape == observed.shape == (2, SPEC.window_max, SPEC.n_features)
    assert (observed[:, -1, :] == SPEC.open_known_mask[None, :]).all()
    assert observed[:, :-1, :].all()


# --------------------------------------------------------------------------- schema lock and model choice


def test_schema_lock_refuses_a_different_window_spec(market):
    other = WindowSpec(window_max=48, crop_lengths=(16, 32), min_history=16)
    with pytest.raises(SchemaMismatchError, match="window_max"):
        _scan(market, spec=other)
    with pytest.raises(ValueError, match="exactly one"):
        scan_market(market["run_dir"], spec=SPEC)


def _fake_run(root: Path, name: str, with_head: bool, served_from: Path) -> str:
    import shutil

    run = root / name
    shutil.copytree(served_from, run)
    if not with_head:
        (run / HEAD_FILE).unlink()
    return str(run)


def test_select_best_run_picks_the_highest_val_auprc_with_a_probe_head(market, tmp_path):
    index = pl.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "run_dir": [
                _fake_run(tmp_path, "a", True, market["run_dir"]),
                _fake_run(tmp_path, "b", True, market["run_dir"]),
                _fake_run(tmp_path, "c", False, market["run_dir"]),  # best AUPRC, but never probed
                _fake_run(tmp_path, "d", True, market["run_dir"]),
            ],
            "probe_metrics.val.macro_auprc": [0.31, 0.52, 0.90, None],
            "probe_metrics.macro.auprc": [0.99, 0.40, 0.90, 0.95],  # test: reported, never used to choose
        }
    )
    # a has the best test AUPRC but the worse val one: not chosen.
    assert select_best_run(index) == tmp_path / "b"
    with pytest.raises(FileNotFoundError, match="probe_head.json"):
        select_best_run(index.filter(pl.col("run_id").is_in(["c", "d"])))
    with pytest.raises(ValueError, match="probe_metrics.val.macro_auprc"):
        select_best_run(index.drop("probe_metrics.val.macro_auprc"))
