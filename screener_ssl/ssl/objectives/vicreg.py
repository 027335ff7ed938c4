"""VICReg: variance-invariance-covariance regularization between two views of each window."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.objectives._heads import PairHeadObjective, check_pair, l2_normalized_std, mlp_head
from screener_ssl.ssl.objectives.base import ObjectiveConfig, register_objective


class VICRegConfig(ObjectiveConfig):
    # Paper: 8192-8192-8192 for ResNet-50's 2048-d output; 256 suits our 32-128-d encoders.
    expander_dim: int = Field(256, ge=4, le=8192)
    expander_layers: int = Field(3, ge=1, le=4)  # Linear layers; the paper uses 3
    sim_weight: float = Field(25.0, ge=0.0)  # lambda
    var_weight: float = Field(25.0, ge=0.0)  # mu
    cov_weight: float = Field(1.0, ge=0.0)  # nu
    std_target: float = Field(1.0, gt=0.0)  # gamma: the std every dimension is pushed up to
    eps: float = Field(1e-4, gt=0.0, le=1e-1)


def invariance_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between paired embeddings ``z_a, z_b: [B, D]``."""
    check_pair(z_a, z_b, "invariance_loss")
    return F.mse_loss(z_a, z_b)


def variance_loss(z: torch.Tensor, std_target: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge ``mean_d relu(gamma - sqrt(var_d + eps))`` on the batch std of each dimension of ``z: [B, D]``."""
    assert z.dim() == 2 and z.shape[0] >= 2, f"variance_loss expects [B >= 2, D], got {tuple(z.shape)}"
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(std_target - std).mean()


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The ``n*(n-1)`` off-diagonal entries of a square ``[n, n]`` matrix, flattened."""
    n, m = matrix.shape
    assert n == m, f"off_diagonal expects a square matrix, got {(n, m)}"
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances of ``z: [B, D]``, divided by D."""
    assert z.dim() == 2 and z.shape[0] >= 2, f"covariance_loss expects [B >= 2, D], got {tuple(z.shape)}"
    batch_size, dim = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (batch_size - 1)  # [D, D]
    return off_diagonal(cov).pow(2).sum() / dim


def vicreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, config: VICRegConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted VICReg loss of expanded embeddings ``z_a, z_b: [B, D]``, computed in float32.

    As in the reference: variance terms averaged over the two branches, covariance terms summed.
    """
    check_pair(z_a, z_b, "vicreg_loss")
    # Batch statistics in half precision lose the small off-diagonal covariances: float32, autocast off.
    with torch.autocast(device_type=z_a.device.type, enabled=False):
        z_a, z_b = z_a.float(), z_b.float()
        invariance = invariance_loss(z_a, z_b)
        variance = 0.5 * (
            variance_loss(z_a, config.std_target, config.eps) + variance_loss(z_b, config.std_target, config.eps)
        )
        covariance = covariance_loss(z_a) + covariance_loss(z_b)
    loss = config.sim_weight * invariance + config.var_weight * variance + config.cov_weight * covariance
    logs = {
        "invariance": float(invariance.detach()),
        "variance": float(variance.detach()),
        "covariance": float(covariance.detach()),
    }
    return loss, logs


class VICRegHead(nn.Module):
    """Expander + VICReg loss on pooled embeddings; shared by :class:`VICReg` and the hybrid objective."""

    def __init__(self, embed_dim: int, config: VICRegConfig) -> None:
        super().__init__()
        self.config = config
        self.expander = mlp_head(embed_dim, config.expander_dim, config.expander_dim, config.expander_layers)

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``h_a, h_b: [B, D_backbone]`` pooled embeddings of the two views -> (loss, logs)."""
        check_pair(h_a, h_b, "VICRegHead")
        loss, logs = vicreg_loss(self.expander(h_a), self.expander(h_b), self.config)
        logs["embedding_std"] = float(l2_normalized_std(torch.cat([h_a, h_b])))
        return loss, logs


@register_objective
class VICReg(PairHeadObjective):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022), following facebookresearch/vicreg ``main_vicreg.py``.

    Both views of a window (same decision bar) are pooled at the decision bar, expanded by a
    Linear-BN-ReLU MLP, and pulled together (invariance) while each dimension keeps a batch
    std of at least ``std_target`` (variance) and dimensions stay decorrelated (covariance).
    No negatives: similar windows of other tickers are never pushed apart.
    """

    name = "vicreg"
    config_cls = VICRegConfig
    head_cls = VICRegHead

