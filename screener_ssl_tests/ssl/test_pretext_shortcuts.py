"""Pretext tasks without shortcuts: hidden bars leave no trace in what the encoder sees; targets align with the view."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from screener_ssl.data.windows import zscore_observed
from screener_ssl.ssl.backbones import BackboneConfig, SSLBackbone, build_backbone
from screener_ssl.ssl.objectives import hybrid as hybrid_module
from screener_ssl.ssl.batch import SSLBatch, View
from screener_ssl.ssl.objectives.base import build_objective
from screener_ssl.ssl.objectives.masked_recon import MaskedReconConfig, masked_recon_loss

CHANNELS = 3


class SpyBackbone(SSLBackbone):
    """Records its inputs; a linear map so the loss is differentiable."""

    def __init__(self) -> None:
        super().__init__(CHANNELS, BackboneConfig(embed_dim=4))
        self.proj = nn.Linear(2 * CHANNELS, 4)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.detach().clone(), observed.clone()))
        return self.proj(self.model_inputs(x, observed))


def test_masked_values_cannot_be_recovered_from_the_visible_normalized_values() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2, 16, CHANNELS)).astype(np.float32)
    observed = np.ones_like(raw, dtype=bool)
    time_mask = torch.zeros(2, 16, dtype=torch.bool)
    time_mask[:, [3, 4, 9]] = True
    other = raw.copy()
    other[:, [3, 4, 9]] += rng.normal(scale=5.0, size=(2, 3, CHANNELS)).astype(np.float32)  # only hidden bars differ
    backbone, head = SpyBackbone(), nn.Linear(4, CHANNELS)
    losses = []
    for window in (raw, other):
        clean = View(torch.from_numpy(zscore_observed(window, observed)), torch.from_numpy(observed))
        losses.append(masked_recon_loss(backbone, head, clean, clean, MaskedReconConfig(), time_mask=time_mask)[0])
    (x_a, obs_a), (x_b, obs_b) = backbone.seen
    # The encoder's input is the same whatever the hidden bars hold: they cannot be read off it ...
    torch.testing.assert_close(x_a, x_b, rtol=0, atol=1e-5)
    assert torch.equal(obs_a, obs_b) and not obs_a[:, [3, 4, 9]].any()
    # ... while the targets, hence the losses, do depend on them: the task is not vacuous.
    assert not torch.isclose(losses[0], losses[1])


def test_hybrid_reconstructs_the_view_it_encodes() -> None:
    backbone = build_backbone(BackboneConfig(embed_dim=8, hidden_dim=8, n_layers=1), CHANNELS)
    objective = build_objective("hybrid", backbone, {})
    gen = torch.Generator().manual_seed(0)
    clean_x = torch.randn(4, 12, CHANNELS, generator=gen)
    observed = torch.ones_like(clean_x, dtype=torch.bool)
    warped = torch.roll(clean_x, shifts=1, dims=1)  # a view whose bar t is the clean window's bar t-1
    batch = SSLBatch(
        views=[View(warped, observed), View(torch.randn(4, 12, CHANNELS, generator=gen), observed)],
        clean=View(clean_x, observed),
        ticker_id=torch.arange(4),
        decision_row=torch.full((4,), 50),
    )
    captured = {}
    original = hybrid_module.masked_recon_loss

    def spy(backbone, head, view, target, config, **kwargs):
        captured["view"], captured["target"] = view, target
        return original(backbone, head, view, target, config, **kwargs)

    hybrid_module.masked_recon_loss = spy
    try:
        objective(batch)
    finally:
        hybrid_module.masked_recon_loss = original
    assert torch.equal(captured["view"].x, warped)
    assert torch.equal(captured["target"].x, warped), "reconstruction targets must be the encoded view's own bars"
