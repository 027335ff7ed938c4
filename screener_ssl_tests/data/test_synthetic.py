"""The synthetic market: bar contract, determinism, planted ground truth, and the difficulty knob."""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl
import pydantic
import pytest

from screener_ssl.data import synthetic
from screener_ssl.data.contracts import BAR_COLUMNS, PATTERNS
from screener_ssl.data.synthetic import (
    EVENT_FRAME_COLUMNS,
    SyntheticMarket,
    SyntheticMarketConfig,
    business_days,
    generate_market,
    pattern_template,
)

SMALL = SyntheticMarketConfig(n_tickers=20, n_days=400, seed=11)
# Enough spans (~250 events, ~125 distractors) that every pattern and near miss shows up.
MODERATE = SyntheticMarketConfig(n_tickers=30, n_days=600, seed=5, patterns_per_ticker_per_year=4.0)


@pytest.fixture(scope="module")
def small() -> SyntheticMarket:
    return generate_market(SMALL)


@pytest.fixture(scope="module")
def easy() -> SyntheticMarket:
    return generate_market(MODERATE.model_copy(update={"difficulty": 0.0}))


@pytest.fixture(scope="module")
def hard() -> SyntheticMarket:
    return generate_market(MODERATE.model_copy(update={"difficulty": 1.0}))


def log_closes(market: SyntheticMarket) -> dict[str, np.ndarray]:
    """Ticker -> log close ``[T]`` in bar order."""
    return {
        ticker: np.log(frame["close"].to_numpy())
        for (ticker,), frame in market.bars.sort("ticker", "date").group_by("ticker", maintain_order=True)
    }


def spans_of(frame: pl.DataFrame, closes: dict[str, np.ndarray], pattern: str) -> list[np.ndarray]:
    """Log closes ``[L]`` over each span of ``pattern``, start bar through completion bar."""
    rows = frame.filter(pl.col("pattern") == pattern).iter_rows(named=True)
    return [closes[row["ticker"]][row["start_idx"] : row["end_idx"] + 1] for row in rows]


# --- contract ---------------------------------------------------------------------------


def test_bar_and_event_schemas(small: SyntheticMarket) -> None:
    assert small.bars.columns == list(BAR_COLUMNS)
    assert small.bars.schema == pl.Schema(
        {"ticker": pl.String, "date": pl.Date, **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")}}
    )
    event_schema = pl.Schema(
        {
            "ticker": pl.String,
            "pattern": pl.String,
            "start_date": pl.Date,
            "end_date": pl.Date,
            "start_idx": pl.Int64,
            "end_idx": pl.Int64,
        }
    )
    for name, frame in (("events", small.events), ("distractors", small.distractors)):
        assert frame.columns == list(EVENT_FRAME_COLUMNS), name
        assert frame.schema == event_schema, name
        assert frame.height > 0, f"{name} is empty"
        assert set(frame["pattern"].unique()) <= set(PATTERNS), name
    assert small.bars["ticker"].unique().sort().to_list() == [f"T{i:04d}" for i in range(SMALL.n_tickers)]


def test_ohlc_is_intraday_consistent_positive_and_finite(small: SyntheticMarket) -> None:
    bars = small.bars
    values = bars.select("open", "high", "low", "close", "volume").to_numpy()
    assert np.isfinite(values).all()
    checks = bars.select(
        low_le_body=(pl.col("low") <= pl.min_horizontal("open", "close")).all(),
        high_ge_body=(pl.col("high") >= pl.max_horizontal("open", "close")).all(),
        positive=(pl.col("low") > 0).all(),
        volume_nonnegative=(pl.col("volume") >= 0).all(),
        has_range=(pl.col("high") > pl.col("low")).mean() > 0.99,
    ).row(0, named=True)
    assert all(checks.values()), checks


def test_rows_unique_sorted_on_a_shared_weekday_calendar(small: SyntheticMarket) -> None:
    bars = small.bars
    assert bars.height == SMALL.n_tickers * SMALL.n_days
    assert bars.select(pl.struct("ticker", "date").is_unique().all()).item()
    assert bars.equals(bars.sort("ticker", "date"))
    calendar = business_days(SMALL.start_date, SMALL.n_days)
    assert (np.is_busday(calendar)).all() and (np.diff(calendar.astype(np.int64)) > 0).all()
    per_ticker = bars.group_by("ticker").agg(pl.col("date"))
    expected = pl.Series(calendar, dtype=pl.Date).to_list()
    for ticker, dates in per_ticker.iter_rows():
        assert dates == expected, f"{ticker} does not follow the shared calendar"


def test_weekend_start_rolls_to_monday() -> None:
    dates = business_days(datetime.date(2021, 1, 2), 3)  # a Saturday
    assert dates.tolist() == [datetime.date(2021, 1, 4), datetime.date(2021, 1, 5), datetime.date(2021, 1, 6)]


# --- determinism ------------------------------------------------------------------------


def test_same_config_same_frames_other_seed_other_frames(small: SyntheticMarket) -> None:
    again = generate_market(SMALL)
    assert again.bars.equals(small.bars)
    assert again.events.equals(small.events)
    assert again.distractors.equals(small.distractors)
    other = generate_market(SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    assert not other.bars.equals(small.bars)
    assert not other.events.equals(small.events)


def test_a_ticker_does_not_depend_on_universe_size_or_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SyntheticMarketConfig(n_tickers=3, n_days=150, seed=2)
    three = generate_market(config)
    monkeypatch.setattr(synthetic, "_TICKERS_PER_CHUNK", 2)  # several chunks, one split mid-universe
    seven = generate_market(config.model_copy(update={"n_tickers": 7}))
    first_three = pl.col("ticker").is_in(["T0000", "T0001", "T0002"])
    assert seven.bars.filter(first_three).equals(three.bars)
    assert seven.events.filter(first_three).equals(three.events)
    assert seven.bars.height == 7 * 150


# --- planted ground truth ---------------------------------------------------------------


def test_every_pattern_is_planted_and_imitated(easy: SyntheticMarket) -> None:
    planted = set(easy.events["pattern"])
    imitated = set(easy.distractors["pattern"])
    assert planted == set(PATTERNS), f"missing patterns: {set(PATTERNS) - planted}"
    assert imitated == set(PATTERNS), f"missing distractors: {set(PATTERNS) - imitated}"
    # distractor_rate 1.0: about one near miss per planted pattern.
    assert 0.7 < easy.distractors.height / easy.events.height < 1.4


def test_spans_lie_in_history_with_lengths_in_range_and_never_overlap(easy: SyntheticMarket) -> None:
    config = MODERATE
    calendar = pl.Series(business_days(config.start_date, config.n_days), dtype=pl.Date)
    for name, frame in (("events", easy.events), ("distractors", easy.distractors)):
        assert frame.equals(frame.sort("ticker", "end_date")), f"{name} not sorted by (ticker, end_date)"
        length = frame["end_idx"] - frame["start_idx"] + 1
        assert length.min() >= config.min_pattern_len and length.max() <= config.max_pattern_len, name
        assert frame["start_idx"].min() >= config.warmup_bars and frame["end_idx"].max() < config.n_days, name
        assert frame["start_date"].to_list() == calendar.gather(frame["start_idx"]).to_list(), name
        assert frame["end_date"].to_list() == calendar.gather(frame["end_idx"]).to_list(), name
    # Distractors share the timeline with events: ground truth never sits under a near miss.
    spans = pl.concat([easy.events, easy.distractors]).sort("ticker", "start_idx")
    gaps = spans.select(
        pl.col("ticker"),
        free=pl.col("start_idx") - pl.col("end_idx").shift(1).over("ticker") - 1,
    ).drop_nulls()
    assert gaps.height > 0 and gaps["free"].min() >= config.min_event_gap


def test_double_top_peaks_match_and_close_breaks_the_trough_at_difficulty_0(easy: SyntheticMarket) -> None:
    closes = log_closes(easy)

    def peaks_and_trough(span: np.ndarray) -> tuple[float, float, float]:
        length = len(span)
        first = int(np.argmax(span[: length // 2]))
        second = length // 2 + int(np.argmax(span[length // 2 : length - 2]))
        return span[first], span[second], span[first : second + 1].min()

    tops = [peaks_and_trough(s) + (s[-1],) for s in spans_of(easy.events, closes, "double_top")]
    assert len(tops) >= 5
    # Two peaks at nearly one height, well above the trough, then a close below the trough.
    ok = [abs(p1 - p2) < 0.25 * (min(p1, p2) - trough) and end < trough for p1, p2, trough, end in tops]
    assert np.mean(ok) >= 0.9, f"only {np.mean(ok):.0%} of double tops have matched peaks and a break"

    near_misses = [peaks_and_trough(s) for s in spans_of(easy.distractors, closes, "double_top")]
    assert len(near_misses) >= 2
    lower = [p1 - p2 > 0.25 * (p1 - trough) for p1, p2, trough in near_misses]
    assert np.mean(lower) >= 0.9, "a double-top near miss should have a much lower second peak"


def test_bull_flag_is_a_strong_rise_then_a_gentle_drift_then_a_breakout_at_difficulty_0(
    easy: SyntheticMarket,
) -> None:
    closes = log_closes(easy)
    shapes = []
    for span in spans_of(easy.events, closes, "bull_flag"):
        pole_top = int(np.argmax(span[: len(span) // 2]))
        rise = span[pole_top] - span[0]
        drift = span[-2] - span[pole_top]
        shapes.append(rise > 0 and -0.5 * rise < drift < 0.1 * rise and span[-1] > span[-2])
    assert len(shapes) >= 5
    assert np.mean(shapes) >= 0.9, f"only {np.mean(shapes):.0%} of bull flags have pole, drift and breakout"
    # Without the pole the near miss rises less before its channel than the channel's own range.
    def pole_to_channel(span: np.ndarray) -> float:
        pole_top = int(np.argmax(span[: len(span) // 2]))
        return (span[pole_top] - span[0]) / np.ptp(span[pole_top:])

    ratios = {
        name: np.median([pole_to_channel(s) for s in spans_of(frame, closes, "bull_flag")])
        for name, frame in (("flag", easy.events), ("near_miss", easy.distractors))
    }
    assert ratios["flag"] > 1.5 and ratios["near_miss"] < 1.0, ratios


def test_head_and_shoulders_head_tops_both_shoulders_and_the_neckline_breaks_at_difficulty_0(
    easy: SyntheticMarket,
) -> None:
    closes = log_closes(easy)

    def anatomy(span: np.ndarray) -> tuple[bool, bool]:
        length = len(span)
        at = lambda lo, hi: slice(int(lo * length), int(hi * length))  # noqa: E731
        left, head, right = span[at(0.05, 0.27)].max(), span[at(0.4, 0.6)].max(), span[at(0.74, 0.9)].max()
        neckline = min(span[at(0.25, 0.4)].min(), span[at(0.6, 0.75)].min())
        return head > max(left, right) and min(left, right) > neckline, span[-1] < neckline

    planted = [anatomy(s) for s in spans_of(easy.events, closes, "head_and_shoulders")]
    assert len(planted) >= 5
    assert np.mean([shape and broke for shape, broke in planted]) >= 0.9
    # Inverse pattern = the same anatomy on the mirrored price.
    inverse = [anatomy(-s) for s in spans_of(easy.events, closes, "inverse_head_and_shoulders")]
    assert len(inverse) >= 5 and np.mean([shape and broke for shape, broke in inverse]) >= 0.9
    # The near miss keeps the shoulders and head but never closes through the neckline.
    near_misses = [anatomy(s) for s in spans_of(easy.distractors, closes, "head_and_shoulders")]
    assert len(near_misses) >= 2 and np.mean([shape and not broke for shape, broke in near_misses]) >= 0.9


def _end_bar_volume(market: SyntheticMarket, frame: pl.DataFrame) -> np.ndarray:
    bars = market.bars.with_columns(rel_volume=pl.col("volume").log() - pl.col("volume").log().mean().over("ticker"))
    rel_volume = {t: f["rel_volume"].to_numpy() for (t,), f in bars.group_by("ticker", maintain_order=True)}
    return np.array([rel_volume[t][i] for t, i in frame.select("ticker", "end_idx").iter_rows()])


def test_completion_volume_is_no_tell_unless_breakout_volume_is_asked_for(easy: SyntheticMarket) -> None:
    # Default: the completion bar trades like its near miss's last bar (both end on a move of one size).
    planted, near_miss = _end_bar_volume(easy, easy.events), _end_bar_volume(easy, easy.distractors)
    assert abs(planted.mean() - near_miss.mean()) < 0.15, (planted.mean(), near_miss.mean())
    boosted = generate_market(MODERATE.model_copy(update={"difficulty": 0.0, "breakout_volume_boost": 0.7}))
    assert _end_bar_volume(boosted, boosted.events).mean() > planted.mean() + 0.5  # the documented option


def _volatility_inside_and_outside_spans(market: SyntheticMarket) -> tuple[np.ndarray, np.ndarray]:
    """Mean (|return|, intraday range) / the ticker's return sd, inside spans and outside: two ``[2]`` arrays."""
    closes = log_closes(market)
    bars = {t: f for (t,), f in market.bars.sort("ticker", "date").group_by("ticker", maintain_order=True)}
    spans = pl.concat([market.events, market.distractors])
    inside, outside = [], []
    for ticker, close in closes.items():
        frame = bars[ticker]
        ret = np.abs(np.diff(close))
        vol = np.std(ret)  # the ticker's own scale, so tickers pool
        intraday = np.log(frame["high"].to_numpy() / frame["low"].to_numpy())[1:]
        in_span = np.zeros(len(ret), dtype=bool)
        for start, end in spans.filter(pl.col("ticker") == ticker).select("start_idx", "end_idx").iter_rows():
            in_span[start : end - 1] = True  # return of bar b+1 sits at b; the completion move is tested apart
        inside.append(np.c_[ret[in_span] / vol, intraday[in_span] / vol])
        outside.append(np.c_[ret[~in_span] / vol, intraday[~in_span] / vol])
    return np.concatenate(inside).mean(axis=0), np.concatenate(outside).mean(axis=0)


def test_span_volatility_does_not_mark_span_boundaries(hard: SyntheticMarket) -> None:
    # Where the template's drift is small against the noise, variance matching leaves nothing to see.
    inside, outside = _volatility_inside_and_outside_spans(hard)
    np.testing.assert_allclose(inside, outside, rtol=0.1)
    # At the default difficulty the pattern's own moves raise |return| (price does trace the shape),
    # but nothing is damped: the intraday range is the unscaled one and |return| is never quieter.
    inside, outside = _volatility_inside_and_outside_spans(generate_market(MODERATE))
    assert abs(inside[1] / outside[1] - 1) < 0.1 and 1.0 <= inside[0] / outside[0] < 1.35, (inside, outside)


def test_shape_free_features_stay_near_prevalence_while_shape_is_learnable(tmp_path) -> None:
    """On a small default market: volume/volatility of the last bars <= 2x prevalence; a matched filter >= 10x."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    from screener_ssl.data import dataset as ds
    from screener_ssl.data.contracts import FEATURE_NAMES
    from screener_ssl.data.windows import WindowSpec
    from screener_ssl.probe.config import ProbeConfig
    from screener_ssl.probe.probe import run_probe
    from screener_ssl.ssl.backbones import BackboneConfig, build_backbone
    from screener_ssl.ssl.encoder import Encoder

    spec = WindowSpec()
    ds.ingest_bars(tmp_path, "synthetic", SyntheticMarketConfig(n_tickers=60, n_days=700, seed=0))
    ds.build_features(tmp_path, spec.volume_lookback)
    ds.build_windowed_dataset(tmp_path, spec)
    ds.build_labels(tmp_path, "synthetic", spec)
    dataset = ds.load_dataset(tmp_path)

    shape_free = Encoder(build_backbone(BackboneConfig(kind="shape_free"), len(FEATURE_NAMES)), normalization="none")
    metrics = run_probe(shape_free, dataset, ProbeConfig(n_boot=0, stability_windows=0), log=lambda _: None).metrics
    prevalence = float(np.mean([metrics["prevalence"]["test"][p] for p in metrics["macro"]["patterns"]]))
    assert metrics["macro"]["auprc"] <= 2.0 * prevalence, (metrics["macro"]["auprc"], prevalence)

    # Supervised on shape: correlation of the last L closes, ending 1..5 bars back, with each template.
    log_close = np.cumsum(np.nan_to_num(dataset.store.values[:, FEATURE_NAMES.index("log_return")]).astype(float))

    def matched_filter(split: str) -> np.ndarray:
        rows = dataset.index.decision_row[dataset.index.rows_of(split)]
        columns = []
        for pattern in dataset.patterns:
            for length in (15, 30, 45, 60):
                template = pattern_template(pattern, length)
                template = (template - template.mean()) / template.std()
                best = np.full(rows.shape[0], -1.0)
                for back in range(1, spec.label_horizon + 1):
                    idx = np.maximum(rows[:, None] - back - np.arange(length - 1, -1, -1)[None, :], 0)
                    seg = log_close[idx] - log_close[idx].mean(axis=1, keepdims=True)
                    best = np.maximum(best, seg @ template / (length * (seg.std(axis=1) + 1e-12)))
                columns.append(best)
        return np.stack(columns, axis=1)

    x_train, x_test = matched_filter("train"), matched_filter("test")
    y_train, y_test = (dataset.labels[dataset.index.rows_of(s)] for s in ("train", "test"))
    scores = []
    for p in range(len(dataset.patterns)):
        model = LogisticRegression(max_iter=2000).fit(x_train, y_train[:, p])
        scores.append(average_precision_score(y_test[:, p], model.decision_function(x_test)))
    assert np.mean(scores) >= 10.0 * y_test.mean(axis=0).mean(), (np.mean(scores), y_test.mean(axis=0).mean())


# --- the difficulty knob ----------------------------------------------------------------


def template_correlation(market: SyntheticMarket) -> np.ndarray:
    """Matched filter: correlation of each event's log closes with its canonical template, ``[E]``."""
    closes = log_closes(market)
    return np.array(
        [
            np.corrcoef(closes[t][s : e + 1], pattern_template(p, e - s + 1))[0, 1]
            for t, p, s, e in market.events.select("ticker", "pattern", "start_idx", "end_idx").iter_rows()
        ]
    )


def move_to_noise(market: SyntheticMarket) -> np.ndarray:
    """Range of each event's log closes / (the ticker's vol outside all spans * sqrt(L)), ``[E]``."""
    closes = log_closes(market)
    vol = {}
    for ticker, close in closes.items():
        quiet = np.ones(len(close), dtype=bool)
        for start, end in (
            pl.concat([market.events, market.distractors])
            .filter(pl.col("ticker") == ticker)
            .select("start_idx", "end_idx")
            .iter_rows()
        ):
            quiet[start : end + 1] = False
        vol[ticker] = np.std(np.diff(close)[quiet[1:] & quiet[:-1]])
    return np.array(
        [
            np.ptp(closes[t][s : e + 1]) / (vol[t] * np.sqrt(e - s + 1))
            for t, s, e in market.events.select("ticker", "start_idx", "end_idx").iter_rows()
        ]
    )


def test_difficulty_turns_clear_patterns_faint(easy: SyntheticMarket, hard: SyntheticMarket) -> None:
    # The schedule does not depend on difficulty: the same spans, planted at two strengths.
    assert easy.events.equals(hard.events)
    easy_fit, hard_fit = template_correlation(easy), template_correlation(hard)
    assert np.median(easy_fit) > 0.9, f"difficulty 0 should match the template, median r = {np.median(easy_fit):.2f}"
    assert np.median(hard_fit) < np.median(easy_fit) - 0.3, (np.median(easy_fit), np.median(hard_fit))
    assert np.mean(easy_fit > hard_fit) > 0.8
    assert np.median(move_to_noise(easy)) > 2.0 * np.median(move_to_noise(hard))


# --- the return and volume process ------------------------------------------------------


def returns_matrix(market: SyntheticMarket) -> np.ndarray:
    """Close-to-close log returns ``[tickers, T - 1]``."""
    return np.diff(np.stack(list(log_closes(market).values())), axis=1)


def test_volume_rises_with_absolute_return(small: SyntheticMarket) -> None:
    abs_return = np.abs(returns_matrix(small))
    log_volume = np.log(small.bars.sort("ticker", "date")["volume"].to_numpy().reshape(SMALL.n_tickers, -1)[:, 1:])
    correlation = np.array([np.corrcoef(a, v)[0, 1] for a, v in zip(abs_return, log_volume, strict=True)])
    assert (correlation > 0).all() and correlation.mean() > 0.2, correlation


def test_shared_market_factor_and_volatility_clustering() -> None:
    # Without planted spans, whose idiosyncratic moves would mask the factor.
    plain = generate_market(SMALL.model_copy(update={"patterns_per_ticker_per_year": 0.0, "n_days": 800}))
    returns = returns_matrix(plain)
    pairwise = np.corrcoef(returns)[np.triu_indices(SMALL.n_tickers, k=1)]
    assert pairwise.mean() > 0.1, "tickers should co-move through the market factor"
    abs_returns = np.abs(returns - returns.mean(axis=1, keepdims=True))
    lag_one = [np.corrcoef(a[:-1], a[1:])[0, 1] for a in abs_returns]
    assert np.mean(lag_one) > 0.05, "large moves should cluster (GARCH-like volatility)"


def test_overnight_jumps_follow_gap_prob() -> None:
    def big_gap_share(gap_prob: float) -> float:
        bars = generate_market(SyntheticMarketConfig(n_tickers=10, n_days=300, seed=4, gap_prob=gap_prob)).bars
        gap = bars.select((pl.col("open") / pl.col("close").shift(1).over("ticker")).log().abs().alias("gap"))
        intraday = bars.select((pl.col("close") / pl.col("open")).log().abs().median()).item()
        return float((gap["gap"].drop_nulls() > 3.0 * intraday).mean())

    # Jumps inside pattern spans are damped with the rest of the noise, so fewer than 5% stand out.
    assert big_gap_share(0.0) < 0.002 and big_gap_share(0.05) > 0.01


# --- config edges -----------------------------------------------------------------------


def test_no_patterns_gives_empty_frames_with_the_contract_columns() -> None:
    market = generate_market(SyntheticMarketConfig(n_tickers=2, n_days=120, patterns_per_ticker_per_year=0.0))
    assert market.events.height == 0 and market.distractors.height == 0
    assert market.events.columns == list(EVENT_FRAME_COLUMNS)
    assert market.bars.height == 240


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"min_pattern_len": 40, "max_pattern_len": 30}, "min_pattern_len"),
        ({"n_days": 100, "warmup_bars": 50, "max_pattern_len": 60}, "warmup_bars"),
        ({"garch_alpha": 0.2, "garch_beta": 0.85}, "garch_alpha"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"n_days": 50}, "n_days"),
        ({"n_tickerz": 5}, "n_tickerz"),
    ],
)
def test_config_rejects_bad_values_by_name(update: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SyntheticMarketConfig(**update)


def test_pattern_template_is_a_unit_shape_starting_at_zero() -> None:
    for pattern in PATTERNS:
        shape = pattern_template(pattern, 30)
        assert shape.shape == (30,) and shape[0] == 0.0, pattern
        assert 0.9 <= np.ptp(shape) <= 1.5, (pattern, np.ptp(shape))
    top = pattern_template("double_top", 40)
    assert top[-1] < top[len(top) // 2] < top.max()  # the break closes below the trough
    with pytest.raises(KeyError, match="wedge"):
        pattern_template("wedge", 30)
