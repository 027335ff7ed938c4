"""Contrastive objectives: InfoNCE (NT-Xent) and its debiased variant, with market-aware negatives.

Markets repeat themselves, so "every other window is a negative" is wrong in two ways this
module handles:

* Windows of the same ticker that overlap in time (``|decision_row difference| < T``) share
  bars; they are never negatives (dropped from the denominator) unless they are positives.
* Options: *soft negatives* (a negative more similar to the anchor than
  ``soft_negative_threshold`` counts ``soft_negative_weight`` times in the denominator) and
  *positive expansion* (windows of the same ticker within ``positive_expansion_k`` bars are
  extra positives; the loss averages over an anchor's positives).

Each of the ``2B`` projected views is an anchor; the other view of its window is its positive.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from screener_ssl.ssl.objectives._heads import PairHeadObjective, check_pair, l2_normalized_std, mlp_head
from screener_ssl.ssl.batch import SSLBatch
from screener_ssl.ssl.objectives.base import ObjectiveConfig, register_objective


class InfoNCEConfig(ObjectiveConfig):
    temperature: float = Field(0.1, ge=0.01, le=10.0)  # SimCLR's best with cosine similarity
    projector_hidden_dim: int = Field(256, ge=4, le=8192)
    projector_dim: int = Field(128, ge=4, le=8192)  # SimCLR: 128
    projector_layers: int = Field(2, ge=1, le=4)
    soft_negative_threshold: float | None = Field(None, ge=-1.0, le=1.0)  # cosine; None = soft negatives off
    soft_negative_weight: float = Field(0.5, ge=0.0, le=1.0)  # 0 = such negatives are "don't care"
    positive_expansion_k: int = Field(0, ge=0, le=100_000)  # bars; 0 = positive expansion off


class DebiasedInfoNCEConfig(InfoNCEConfig):
    tau_plus: float = Field(0.1, ge=0.0, lt=1.0)  # class prior: chance a random negative is a true positive


def _check_rows(ticker_id: torch.Tensor, decision_row: torch.Tensor) -> None:
    assert ticker_id.dim() == 1 and ticker_id.shape == decision_row.shape, (
        f"ticker_id {tuple(ticker_id.shape)} and decision_row {tuple(decision_row.shape)} must both be [B]"
    )


def same_ticker_overlap(ticker_id: torch.Tensor, decision_row: torch.Tensor, window_length: int) -> torch.Tensor:
    """``[B, B]`` bool: rows of the same ticker whose windows share bars (``|decision_row diff| < T``).

    ``ticker_id, decision_row: [B]`` long. The diagonal is True.
    """
    _check_rows(ticker_id, decision_row)
    same_ticker = ticker_id[:, None] == ticker_id[None, :]
    gap = (decision_row[:, None] - decision_row[None, :]).abs()
    return same_ticker & (gap < window_length)


def expanded_positive_rows(
    ticker_id: torch.Tensor, decision_row: torch.Tensor, positive_expansion_k: int
) -> torch.Tensor:
    """``[B, B]`` bool: OTHER rows of the same ticker within ``k`` bars (``ticker_id, decision_row: [B]``).

    All False when ``k == 0`` (expansion off); the diagonal is always False.
    """
    _check_rows(ticker_id, decision_row)
    batch_size = ticker_id.shape[0]
    if positive_expansion_k <= 0:
        return torch.zeros(batch_size, batch_size, dtype=torch.bool, device=ticker_id.device)
    same_ticker = ticker_id[:, None] == ticker_id[None, :]
    gap = (decision_row[:, None] - decision_row[None, :]).abs()
    not_self = ~torch.eye(batch_size, dtype=torch.bool, device=ticker_id.device)
    return same_ticker & (gap <= positive_expansion_k) & not_self


def pair_masks(
    ticker_id: torch.Tensor,
    decision_row: torch.Tensor,
    window_length: int,
    positive_expansion_k: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives and negatives among the ``2B`` anchors (view a of rows 0..B-1, then view b).

    ``ticker_id, decision_row: [B]`` long. Returns ``(positives, negatives)``, both ``[2B, 2B]`` bool:
    positives = the other view of the same row plus both views of expanded rows; negatives =
    everything else except the anchor itself and same-ticker overlapping windows.
    """
    batch_size = ticker_id.shape[0]
    device = ticker_id.device
    same_row = torch.eye(batch_size, dtype=torch.bool, device=device)
    positive_rows = same_row | expanded_positive_rows(ticker_id, decision_row, positive_expansion_k)
    excluded_rows = same_ticker_overlap(ticker_id, decision_row, window_length) & ~positive_rows
    self_pair = torch.eye(2 * batch_size, dtype=torch.bool, device=device)
    positives = positive_rows.repeat(2, 2) & ~self_pair
    negatives = ~(positive_rows.repeat(2, 2) | excluded_rows.repeat(2, 2))
    return positives, negatives


def soft_negative_weights(
    similarity: torch.Tensor, negatives: torch.Tensor, threshold: float | None, weight: float
) -> torch.Tensor:
    """``[N, N]`` float weight of each pair in the denominator's negative part.

    ``similarity: [N, N]`` cosine, ``negatives: [N, N]`` bool. 1 for a negative, ``weight`` for a
    negative whose similarity exceeds ``threshold`` (None: no down-weighting), 0 for non-negatives.
    The weights are constants: no gradient flows through the threshold test.
    """
    assert similarity.shape == negatives.shape and similarity.dim() == 2, (
        f"similarity {tuple(similarity.shape)} and negatives {tuple(negatives.shape)} must both be [N, N]"
    )
    weights = negatives.to(torch.float32)
    if threshold is not None:
        too_similar = negatives & (similarity.detach() > threshold)
        weights = torch.where(too_similar, torch.full_like(weights, weight), weights)
    return weights


def cosine_similarity_matrix(z: torch.Tensor) -> torch.Tensor:
    """``[N, N]`` cosine similarity of the rows of ``z: [N, D]``, in float32."""
    assert z.dim() == 2, f"cosine_similarity_matrix expects [N, D], got {tuple(z.shape)}"
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = F.normalize(z.float(), dim=1)
        return z @ z.T


def _check_pairs(similarity: torch.Tensor, positives: torch.Tensor, negative_weights: torch.Tensor) -> None:
    assert similarity.dim() == 2 and similarity.shape[0] == similarity.shape[1], (
        f"similarity must be square [N, N], got {tuple(similarity.shape)}"
    )
    assert positives.shape == similarity.shape and negative_weights.shape == similarity.shape, (
        f"positives {tuple(positives.shape)} and negative_weights {tuple(negative_weights.shape)} "
        f"must match similarity {tuple(similarity.shape)}"
    )
    assert bool(positives.any(dim=1).all()), "every anchor needs at least one positive"
    assert not bool((positives & (negative_weights > 0)).any()), "a pair cannot be both positive and negative"


def info_nce_loss(
    similarity: torch.Tensor, positives: torch.Tensor, negative_weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-anchor multi-positive InfoNCE ``[N]`` (SupCon's L_out; NT-Xent with one positive).

    ``similarity: [N, N]`` cosine, ``positives: [N, N]`` bool, ``negative_weights: [N, N]`` float.
    ``loss_i = -mean_{p in P(i)} log( e^{s_ip/t} / (sum_{a in P(i)} e^{s_ia/t} + sum_n w_in e^{s_in/t}) )``.
    """
    _check_pairs(similarity, positives, negative_weights)
    logits = similarity.float() / temperature
    weights = positives.to(logits.dtype) + negative_weights.to(logits.dtype)
    log_denominator = torch.logsumexp(logits + weights.log(), dim=1)  # log 0 = -inf drops a pair
    log_prob = logits - log_denominator[:, None]
    pos = positives.to(logits.dtype)
    return -(log_prob * pos).sum(dim=1) / pos.sum(dim=1)


def debiased_info_nce_loss(
    similarity: torch.Tensor,
    positives: torch.Tensor,
    negative_weights: torch.Tensor,
    temperature: float,
    tau_plus: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor debiased contrastive loss ``[N]`` and which anchors hit the clamp ``[N]`` bool.

    ``similarity: [N, N]`` cosine, ``positives: [N, N]`` bool, ``negative_weights: [N, N]`` float.
    With ``M_i = sum_n w_in`` negatives and ``pos_i`` the mean of ``e^{s_ip/t}`` over positives:
    ``Ng_i = max((sum_n w_in e^{s_in/t} - tau_plus * M_i * pos_i) / (1 - tau_plus), M_i * e^{-1/t})``
    (the floor is the theoretical minimum, every negative at cosine -1), and
    ``loss_i = -mean_p log(e^{s_ip/t} / (e^{s_ip/t} + Ng_i))``. ``tau_plus = 0`` gives NT-Xent.
    """
    _check_pairs(similarity, positives, negative_weights)
    assert 0.0 <= tau_plus < 1.0, f"tau_plus must be in [0, 1), got {tau_plus}"
    # float64 and a shift by 1/t (cosine <= 1) keep e^{s/t} and e^{-1/t} representable at small t.
    shift = 1.0 / temperature
    logits = similarity.double() / temperature - shift
    exp_logits = logits.exp()
    pos = positives.to(torch.float64)
    weights = negative_weights.to(torch.float64)
    n_negatives = weights.sum(dim=1)
    negative_sum = (weights * exp_logits).sum(dim=1)
    positive_mean = (pos * exp_logits).sum(dim=1) / pos.sum(dim=1)
    debiased = (negative_sum - tau_plus * n_negatives * positive_mean) / (1.0 - tau_plus)
    floor = n_negatives * math.exp(-1.0 / temperature - shift)
    clamped = debiased < floor
    negative_term = torch.maximum(debiased, floor)
    log_prob = logits - torch.log(exp_logits + negative_term[:, None])
    loss = -(log_prob * pos).sum(dim=1) / pos.sum(dim=1)
    return loss.to(similarity.dtype), clamped


class ContrastiveHead(nn.Module):
    """Projector + (debiased) InfoNCE on pooled embeddings; shared by the contrastive objectives and the hybrid."""

    def __init__(self, embed_dim: int, config: InfoNCEConfig) -> None:
        super().__init__()
        self.config = config
        self.projector = mlp_head(embed_dim, config.projector_hidden_dim, config.projector_dim, config.projector_layers)

    def forward(
        self,
        h_a: torch.Tensor,
        h_b: torch.Tensor,
        ticker_id: torch.Tensor,
        decision_row: torch.Tensor,
        window_length: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``h_a, h_b: [B, D_backbone]`` pooled views; ``ticker_id, decision_row: [B]`` long -> (loss, logs)."""
        check_pair(h_a, h_b, "ContrastiveHead")
        batch_size = h_a.shape[0]
        assert ticker_id.shape == (batch_size,) and decision_row.shape == (batch_size,), (
            f"ticker_id {tuple(ticker_id.shape)} and decision_row {tuple(decision_row.shape)} must be [{batch_size}]"
        )
        config = self.config
        z = torch.cat([self.projector(h_a), self.projector(h_b)], dim=0)  # [2B, P]
        similarity = cosine_similarity_matrix(z)  # [2B, 2B]
        positives, negatives = pair_masks(ticker_id, decision_row, window_length, config.positive_expansion_k)
        weights = soft_negative_weights(
            similarity, negatives, config.soft_negative_threshold, config.soft_negative_weight
        )
        logs: dict[str, float] = {}
        if isinstance(config, DebiasedInfoNCEConfig):
            per_anchor, clamped = debiased_info_nce_loss(
                similarity, positives, weights, config.temperature, config.tau_plus
            )
            logs["clamped_fraction"] = float(clamped.float().mean())
        else:
            per_anchor = info_nce_loss(similarity, positives, weights, config.temperature)
        loss = per_anchor.mean()
        sim = similarity.detach()
        off_self = ~torch.eye(2 * batch_size, dtype=torch.bool, device=sim.device)
        logs.update(
            positive_similarity=float(sim[positives].mean()),
            negative_similarity=float(sim[negatives].mean()) if bool(negatives.any()) else float("nan"),
            positives_per_anchor=float(positives.sum(dim=1).float().mean()),
            # Pairs neither positive nor negative: same-ticker overlapping windows.
            excluded_fraction=float((off_self & ~positives & ~negatives).sum() / off_self.sum()),
            soft_negative_fraction=float(((weights > 0) & (weights < 1)).sum() / negatives.sum().clamp_min(1)),
            embedding_std=float(l2_normalized_std(torch.cat([h_a, h_b]))),
        )
        return loss, logs


@register_objective
class InfoNCE(PairHeadObjective):
    """InfoNCE / NT-Xent (Chen et al., SimCLR, ICML 2020), following google-research/simclr ``objective.py``.

    Cosine similarity of L2-normalized projections divided by a temperature; every other view
    in the batch is a negative except same-ticker windows that overlap in time. Options: soft
    negatives and positive expansion (see :class:`InfoNCEConfig`).
    """

    name = "infonce"
    config_cls = InfoNCEConfig
    head_cls = ContrastiveHead

    @classmethod
    def sampler_settings(cls, config: dict) -> dict:
        # Positive expansion needs same-ticker neighbours in the batch: one per anchor, within k bars.
        k = int(config.get("positive_expansion_k", 0) or 0)
        return {"neighbors_per_anchor": 1 if k > 0 else 0, "neighbor_radius": k}

    def head_inputs(self, batch: SSLBatch) -> tuple:
        # Which rows are negatives: same-ticker windows overlapping in time are not.
        return batch.ticker_id, batch.decision_row, batch.views[0].x.shape[1]


@register_objective
class DebiasedInfoNCE(InfoNCE):
    """Debiased contrastive loss (Chuang et al., NeurIPS 2020), following chingyaoc/DCL ``main.py``.

    Corrects the negative term for the chance ``tau_plus`` that a "negative" is in fact of the
    anchor's class (in markets: the same pattern on another ticker), clamped at its theoretical
    minimum ``M * e^{-1/t}``. Shares masks and options with :class:`InfoNCE`.
    """

    name = "debiased_infonce"
    n_views = 2
    config_cls = DebiasedInfoNCEConfig
