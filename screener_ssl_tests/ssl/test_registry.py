"""The one registry: every leaderboard row is an entry that declares what its run needs."""

from __future__ import annotations

import numpy as np
import pytest

from screener_ssl.runs.pretrain import resolve_point
from screener_ssl.runs.sweep import SweepPoint
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig
from screener_ssl.ssl.checks import collapse_report, judge_collapse
from screener_ssl.ssl.objectives import get_objective_class, objective_names
from screener_ssl.ssl.objectives.base import Objective, trainer_objective_names
from screener_ssl.ssl.trainer import TrainConfig


def _point(objective: str, **objective_config) -> SweepPoint:
    return SweepPoint(
        objective=objective, variant="base", backbone=BackboneConfig(), train=TrainConfig(steps=7, lr=0.002),
        augment=AugmentConfig(), objective_config=objective_config, probe={},
    )


def test_an_objective_that_declares_nothing_gets_the_defaults():
    cls = get_objective_class("vicreg")
    assert (cls.trains, cls.needs_labels, cls.backbone_kind, cls.finetunable, cls.collapse_rule) == (
        True, False, None, True, "std_and_rank"
    )
    assert cls.fit.__func__ is Objective.fit.__func__
    assert {"random_init", "raw_features", "supervised"} <= set(objective_names())
    assert not {"random_init", "raw_features", "supervised"} & set(trainer_objective_names())


def test_baselines_resolve_through_their_entries():
    raw = resolve_point(_point("raw_features"))
    assert raw.point.backbone.kind == "raw_window" and raw.model_type == "ssl_raw_window_raw_features"
    assert raw.objective_config == {} and not raw.entry.finetunable
    sup = resolve_point(_point("supervised", positive_fraction=0.25))
    assert sup.entry.needs_labels
    assert sup.objective_config["steps"] == 7 and sup.objective_config["lr"] == 0.002
    assert sup.objective_config["positive_fraction"] == 0.25
    with pytest.raises(ValueError, match="takes no objective settings"):
        resolve_point(_point("random_init", mask_ratio=0.3))


def test_infonce_asks_for_neighbours_only_with_positive_expansion():
    cls = get_objective_class("infonce")
    assert cls.sampler_settings(cls.resolve_config({}, TrainConfig())) == {"neighbors_per_anchor": 0, "neighbor_radius": 0}
    expanded = cls.sampler_settings(cls.resolve_config({"positive_expansion_k": 5}, TrainConfig()))
    assert expanded == {"neighbors_per_anchor": 1, "neighbor_radius": 5}


def test_collapse_rules():
    rng = np.random.default_rng(0)
    # Half the dimensions constant (like censored raw fields), the rest spread: dead dims but a healthy rank.
    emb = np.concatenate([rng.normal(size=(256, 8)), np.zeros((256, 10))], axis=1)
    report = collapse_report(emb)
    assert judge_collapse(report, "std_and_rank") and not judge_collapse(report, "rank_only")
    with pytest.raises(ValueError, match="unknown collapse rule"):
        judge_collapse(report, "vibes")
