"""Every sweep entry is validated at load, with errors naming file, objective, variant and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from screener_ssl.runs.sweep import SweepError, load_sweep
from screener_ssl.tracking.latest import record_partition_run
from screener_ssl.tracking.names import InvalidNameError, check_name

BASE = """
defaults:
  train: {steps: 5}
objectives:
"""


def _sweep(tmp_path: Path, objectives: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(BASE + objectives)
    return path


@pytest.mark.parametrize(
    "objectives, expected",
    [
        ("  nosuch:\n    variants: {base: {}}\n", r"objective 'nosuch', variant 'base': objectives\.nosuch: unknown objective.*masked_recon"),
        ("  masked_recon:\n    variants: {base: {objective: {mask_ratio: 1.5}}}\n",
         r"objective 'masked_recon', variant 'base': objective\.mask_ratio: .*less than 1 \(found 1\.5\)"),
        ("  masked_recon:\n    variants: {base: {objective: {mask_ration: 0.3}}}\n",
         r"variant 'base': objective\.mask_ration: Extra inputs are not permitted"),
        ("  vicreg:\n    variants: {typo: {probe: {heads: mlp}}}\n", r"objective 'vicreg', variant 'typo': probe\.heads: Extra inputs"),
        ("  vicreg:\n    variants: {base: {probe: {target_precision: 2}}}\n", r"probe\.target_precision: .*less than or equal to 1"),
        ("  vicreg:\n    variants: {neg: {train: {seed: -1}}}\n", r"variant 'neg': train\.seed: .*greater than or equal to 0 \(found -1\)"),
        ("  random_init:\n    variants: {base: {objective: {x: 1}}}\n", r"baseline 'random_init' takes no objective settings"),
        ("  supervised:\n    variants: {base: {objective: {warp: 1}}}\n", r"objective 'supervised', variant 'base': objective\.warp"),
        ("  masked_recon:\n    grids: {mask: {objective.mask_ratio: [0.3, 1.5]}}\n", r"variant 'mask-1\.5': objective\.mask_ratio"),
    ],
)
def test_bad_entries_fail_at_load_naming_file_objective_variant_and_key(tmp_path, objectives, expected):
    path = _sweep(tmp_path, objectives)
    with pytest.raises(SweepError, match=expected) as err:
        load_sweep(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("variant", ["../../../../escaped", "a/b", "..", "x__y", "tmp-1", "", ".hidden", "a b"])
def test_variant_names_that_would_escape_or_confuse_paths_are_refused(tmp_path, variant):
    path = _sweep(tmp_path, f"  masked_recon:\n    variants: {{'{variant}': {{}}}}\n")
    with pytest.raises(SweepError, match=r"variant .* cannot be used in file names"):
        load_sweep(path)


def test_grid_values_that_make_unsafe_names_are_refused(tmp_path):
    path = _sweep(tmp_path, "  masked_recon:\n    grids: {g: {backbone.kind: ['../x']}}\n")
    with pytest.raises(SweepError, match=r"variant 'g-\.\./x' cannot be used in file names"):
        load_sweep(path)


def test_path_builders_refuse_unchecked_names(tmp_path):
    from screener_ssl.defs.ssl.assets import schema_path

    with pytest.raises(InvalidNameError):
        schema_path(tmp_path, "masked_recon", "../../escaped")
    with pytest.raises(InvalidNameError):
        record_partition_run(tmp_path, "masked_recon", "../../x", tmp_path, "v")
    assert not any(tmp_path.parent.glob("x*.json"))
    assert check_name("mask-0.15", "variant") == "mask-0.15"


def test_the_bundled_sweep_is_valid():
    sweep = load_sweep()
    assert ("masked_recon", "base-s0") in sweep.points and ("masked_recon", "base-s1") in sweep.points
