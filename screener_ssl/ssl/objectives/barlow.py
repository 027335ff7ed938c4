"""Barlow Twins: drive the cross-correlation of two views' projections to the identity."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from screener_ssl.ssl.objectives._heads import PairHeadObjective, check_pair, l2_normalized_std, mlp_head
from screener_ssl.ssl.objectives.base import ObjectiveConfig, register_objective
from screener_ssl.ssl.objectives.vicreg import off_diagonal


class BarlowConfig(ObjectiveConfig):
    """``lambda_offdiag`` is the paper's value at its projector width ``lambda_reference_width``.

    With ``scale_lambda_to_width`` the weight used is ``lambda_offdiag * lambda_reference_width / projector_dim``
    (see :meth:`effective_lambda`): the off-diagonal sum has D*(D-1) terms against D diagonal ones, so
    keeping ``lambda * D`` fixed keeps the two terms' balance when the projector is narrower.
    """

    projector_dim: int = Field(256, ge=4, le=8192)  # paper: 8192
    projector_layers: int = Field(3, ge=1, le=4)
    lambda_offdiag: float = Field(5e-3, ge=0.0, le=10.0)
    lambda_reference_width: int = Field(8192, ge=1)  # projector width the paper tuned lambda at
    scale_lambda_to_width: bool = True
    eps: float = Field(1e-5, gt=0.0, le=1e-1)  # inside the sqrt of the batch variance, as BatchNorm1d

    def effective_lambda(self) -> float:
        if not self.scale_lambda_to_width:
            return self.lambda_offdiag
        return self.lambda_offdiag * self.lambda_reference_width / self.projector_dim


def batch_standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each dimension of ``z: [B, D]`` to zero mean, unit (biased) variance over the batch, in float32."""
    assert z.dim() == 2 and z.shape[0] >= 2, f"batch_standardize expects [B >= 2, D], got {tuple(z.shape)}"
    z = z.float()
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``[D, D]`` cross-correlation of ``z_a, z_b: [B, D]``, each standardized by its own batch statistics.

    Computed in float32 even under autocast: the entries are averages of B products.
    """
    check_pair(z_a, z_b, "cross_correlation")
    with torch.autocast(device_type=z_a.device.type, enabled=False):
        a = batch_standardize(z_a, eps)
        b = batch_standardize(z_b, eps)
        return a.T @ b / z_a.shape[0]


def on_diagonal_loss(correlation: torch.Tensor) -> torch.Tensor:
    """``sum_i (1 - C_ii)^2`` of a ``[D, D]`` correlation matrix: each dimension invariant across views."""
    return (torch.diagonal(correlation) - 1.0).pow(2).sum()


def off_diagonal_loss(correlation: torch.Tensor) -> torch.Tensor:
    """``sum_{i != j} C_ij^2`` of a ``[D, D]`` correlation matrix: dimensions carry different information."""
    return off_diagonal(correlation).pow(2).sum()


def barlow_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float, eps: float = 1e-5
) -> tuple[torch.Tensor, dict[str, float]]:
    """Barlow Twins loss of projections ``z_a, z_b: [B, D]`` with off-diagonal weight ``lambda_offdiag``."""
    correlation = cross_correlation(z_a, z_b, eps)
    on_diag = on_diagonal_loss(correlation)
    off_diag = off_diagonal_loss(correlation)
    loss = on_diag + lambda_offdiag * off_diag
    return loss, {"on_diagonal": float(on_diag.detach()), "off_diagonal": float(off_diag.detach())}


class BarlowHead(nn.Module):
    """Projector + Barlow Twins loss on pooled embeddings; shared by :class:`BarlowTwins` and the hybrid objective."""

    def __init__(self, embed_dim: int, config: BarlowConfig) -> None:
        super().__init__()
        self.config = config
        # Reference: Linear-BN-ReLU blocks, last Linear without bias (the loss standardizes anyway).
        self.projector = mlp_head(
            embed_dim, config.projector_dim, config.projector_dim, config.projector_layers, last_bias=False
        )

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``h_a, h_b: [B, D_backbone]`` pooled embeddings of the two views -> (loss, logs)."""
        check_pair(h_a, h_b, "BarlowHead")
        lambda_eff = self.config.effective_lambda()
        loss, logs = barlow_loss(self.projector(h_a), self.projector(h_b), lambda_eff, self.config.eps)
        logs["effective_lambda"] = lambda_eff
        logs["embedding_std"] = float(l2_normalized_std(torch.cat([h_a, h_b])))
        return loss, logs


@register_objective
class BarlowTwins(PairHeadObjective):
    """Barlow Twins (Zbontar et al., ICML 2021), following facebookresearch/barlowtwins ``main.py``.

    The two views' projections are standardized per dimension over the batch (each view with
    its own statistics), their ``[D, D]`` cross-correlation is pushed to the identity: diagonal
    to 1 (invariance), off-diagonal to 0 weighted by lambda (redundancy reduction). No negatives.
    """

    name = "barlow"
    config_cls = BarlowConfig
    head_cls = BarlowHead

