"""Shared pieces of the multi-view objectives: projector/predictor MLPs, view pooling, the forward of
an objective whose head scores the pooled pair (:class:`PairHeadObjective`), collapse diagnostics.

Not an objective module (leading underscore: not auto-registered).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch, View
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig


def mlp_head(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    n_layers: int = 2,
    *,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
    last_bias: bool = True,
) -> nn.Sequential:
    """``n_layers`` Linear layers ``in -> hidden -> ... -> out``, each hidden one followed by BN (optional) + ReLU.

    ``last_batch_norm`` appends a non-affine BatchNorm1d to the output (SimSiam's projector).
    Maps ``[B, in_dim] -> [B, out_dim]``; with BatchNorm it needs B >= 2 in training.
    """
    assert n_layers >= 1, f"an MLP head needs at least one Linear layer, got n_layers={n_layers}"
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_layers - 1):
        # No bias before BN: BN's own shift makes it redundant.
        layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim, bias=last_bias and not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def require_views(batch: SSLBatch, n_views: int, objective_name: str) -> None:
    """Fail with a message naming the objective when the batch does not carry what it needs."""
    assert len(batch.views) >= n_views, (
        f"objective {objective_name!r} needs {n_views} views per batch, got {len(batch.views)}"
    )
    batch_size = batch.views[0].x.shape[0]
    # BatchNorm in the heads and every batch-statistics loss need at least two windows.
    assert batch_size >= 2, f"objective {objective_name!r} needs a batch of at least 2 windows, got {batch_size}"
    for i, view in enumerate(batch.views[:n_views]):
        assert view.x.shape[0] == batch_size, (
            f"objective {objective_name!r}: view {i} has batch size {view.x.shape[0]}, view 0 has {batch_size}"
        )


def pool_views(backbone: SSLBackbone, views: list[View]) -> list[torch.Tensor]:
    """Decision-bar embedding ``[B, D]`` of each view (``x, observed: [B, T, C]``).

    Views of equal shape go through the backbone as one ``[n*B, T, C]`` batch (one pass is
    cheaper than n); the backbone is per-window, so the result is the same as n passes.
    """
    assert len(views) >= 1, "pool_views needs at least one view"
    if all(v.x.shape == views[0].x.shape for v in views):
        x = torch.cat([v.x for v in views], dim=0)
        observed = torch.cat([v.observed for v in views], dim=0)
        return list(backbone.pooled(x, observed).chunk(len(views), dim=0))
    return [backbone.pooled(v.x, v.observed) for v in views]


class PairHeadObjective(Objective):
    """A two-view objective whose head scores the pooled pair (VICReg, Barlow Twins, InfoNCE).

    The forward pools the first two views at the decision bar and returns
    ``head(h_a, h_b, *head_inputs(batch)) -> (loss, logs)`` with the loss logged. Subclasses set
    ``head_cls`` (built as ``head_cls(backbone.embed_dim, config)``) and, when the head reads more
    than the pair, override :meth:`head_inputs`.
    """

    n_views = 2
    head_cls: ClassVar[type[nn.Module]]

    def __init__(self, backbone: SSLBackbone, config: ObjectiveConfig) -> None:
        super().__init__(backbone, config)
        self.head = self.head_cls(backbone.embed_dim, config)

    def head_inputs(self, batch: SSLBatch) -> tuple:
        """What the head reads besides the pooled pair. Default: nothing."""
        return ()

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        h_a, h_b = pool_views(self.backbone, batch.views[:2])
        loss, logs = self.head(h_a, h_b, *self.head_inputs(batch))
        logs["loss"] = float(loss.detach())
        return ObjectiveOutput(loss=loss, logs=logs)


def check_pair(z_a: torch.Tensor, z_b: torch.Tensor, what: str) -> None:
    """Both embeddings must be ``[B, D]`` of the same shape."""
    assert z_a.dim() == 2 and z_a.shape == z_b.shape, (
        f"{what}: expected two [B, D] tensors of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
    )


def l2_normalized_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch std of L2-normalized rows of ``z: [B, D]``.

    About ``1/sqrt(D)`` for embeddings spread over the sphere, 0 for a collapsed one.
    """
    assert z.dim() == 2, f"l2_normalized_std expects [B, D], got {tuple(z.shape)}"
    z = nn.functional.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean()
