"""Sweep files are read within bounds: size, aliases, expanded size, duplicate keys, bounded error text."""

from __future__ import annotations

import resource

import pytest

from screener_ssl.runs import sweep_checks
from screener_ssl.runs.sweep import SweepError, load_sweep

GOOD = """
objectives:
  masked_recon:
    variants: {base: {}}
"""


def _laughs(levels: int = 9, top_level: bool = False) -> str:
    """The classic 'billion laughs': 10 aliases per level, 10^levels strings once expanded."""
    lines = ['a0: &a0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    if not top_level:
        lines.append("objectives: {masked_recon: {variants: {base: {train: {seed: *a%d}}}}}" % levels)
    return "\n".join(lines) + "\n"


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("top_level", [True, False])
def test_a_billion_laughs_fails_at_once_with_a_short_error(tmp_path, top_level):
    path = tmp_path / "bomb.yaml"
    path.write_text(_laughs(top_level=top_level))
    before = _max_rss_mb()
    with pytest.raises(SweepError, match=r"bomb.yaml: more than 200,000 values once its aliases") as err:
        load_sweep(path)
    assert len(str(err.value)) < 500
    assert _max_rss_mb() - before < 200  # expanding it would take gigabytes


def test_too_many_aliases_are_refused_with_the_line(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("x: &x 1\nys: [" + ", ".join(["*x"] * (sweep_checks.MAX_ALIASES + 1)) + "]\n" + GOOD)
    with pytest.raises(SweepError, match=r"aliases.yaml: line 2: more than 1000 aliases"):
        load_sweep(path)


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("x: &x [1, *x]\n" + GOOD)
    with pytest.raises(SweepError, match=r"loop.yaml: line 1: an alias refers to its own anchor"):
        load_sweep(path)


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "# " + "x" * sweep_checks.MAX_SWEEP_BYTES + "\n")
    with pytest.raises(SweepError, match=r"big.yaml: [\d,]+ bytes; a sweep file may hold at most 1,048,576"):
        load_sweep(path)


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(SweepError, match=r"deep.yaml: nested too deeply"):
        load_sweep(path)


@pytest.mark.parametrize(
    "text, line, key",
    [
        (GOOD + "objectives: {}\n", 5, "objectives"),
        ("objectives:\n  masked_recon:\n    variants: {base: {}, base: {train: {steps: 3}}}\n", 3, "base"),
        (GOOD.replace("variants: {base: {}}", "variants:\n      base:\n        train: {steps: 5, steps: 6}"),
         6, "steps"),
    ],
)
def test_duplicate_keys_are_refused_naming_key_and_line(tmp_path, text, line, key):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(SweepError, match=rf"dup.yaml: line {line}: duplicate key '{key}' \(first at line \d+\)"):
        load_sweep(path)


def test_merge_keys_still_override(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "defaults:\n  backbone: &bb {embed_dim: 8, hidden_dim: 8}\n  train: {steps: 7, batch_size: 8}\n"
        "objectives:\n  masked_recon:\n    variants:\n      base: {backbone: {<<: *bb, embed_dim: 16}}\n"
    )
    point = load_sweep(path).point("masked_recon", "base")
    assert (point.backbone.embed_dim, point.backbone.hidden_dim, point.train.steps) == (16, 8, 7)


def test_errors_echo_a_bounded_part_of_a_long_value(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(GOOD.replace("base: {}", "base: {train: {seed: [" + ", ".join(["1"] * 50_000) + "]}}"))
    with pytest.raises(SweepError, match=r"train.seed: .*found \[1, 1, 1, 1, 1, 1, \.\.\.\]") as err:
        load_sweep(path)
    assert len(str(err.value)) < 1000
    path.write_text("objectives: " + "[" + ", ".join(["'" + "y" * 100 + "'"] * 5_000) + "]\n")
    with pytest.raises(SweepError, match=r"long.yaml: objectives: ") as err:
        load_sweep(path)
    assert len(str(err.value)) < 1000


def test_a_grid_too_large_to_expand_is_refused(tmp_path):
    path = tmp_path / "grid.yaml"
    values = "[" + ", ".join(str(i) for i in range(1, 201)) + "]"
    path.write_text(GOOD.replace("variants: {base: {}}",
                                 f"grids: {{g: {{train.steps: {values}, train.log_every: {values}}}}}"))
    with pytest.raises(SweepError, match=r"grids.g: 40,000 combinations; a grid may expand to at most 10,000"):
        load_sweep(path)


def test_a_good_file_still_loads(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert load_sweep(path).partition_keys() == ["masked_recon|base"]


def test_widths_that_fit_alone_but_not_together_are_refused(tmp_path):
    path = tmp_path / "wide.yaml"
    # Each width is within its own range; together one step needs far more than 8 GiB.
    path.write_text(
        "dataset: {window: {window_max: 512, crop_lengths: [512]}}\n"
        "defaults: {backbone: {hidden_dim: 1024, embed_dim: 1024, n_layers: 16}, train: {batch_size: 1024}}\n" + GOOD
    )
    with pytest.raises(SweepError, match=r"train.batch_size 1024 x dataset.window.window_max 512 x backbone width "
                                         r"1024 x backbone.n_layers 16 needs about 768.0 GiB per training step; "
                                         r"at most 8 GiB"):
        load_sweep(path)


def test_a_long_probe_value_is_echoed_bounded(tmp_path):
    # The probe section is validated by its own model; its error echoes the value too.
    path = tmp_path / "probe.yaml"
    path.write_text(GOOD.replace("base: {}", "base: {probe: {head: [" + ", ".join(["'" + "z" * 50 + "'"] * 10_000) + "]}}"))
    with pytest.raises(SweepError, match=r"variant 'base': probe.head: .*found \['zzz") as err:
        load_sweep(path)
    assert len(str(err.value)) < 1000
