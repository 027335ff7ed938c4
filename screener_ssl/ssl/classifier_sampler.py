"""Batches of labelled train windows for supervised training (the ``supervised`` baseline and the finetune).

Labels are rare (about 1 % per pattern), so each batch mixes windows with any positive label
and uniformly drawn windows (:class:`ClassifierBatchSampler` draws the positions);
:class:`ClassifierBatches` reads them through ``Dataset.windows`` (the one gather, censoring and
z-score of a window at its decision bar) and pairs them with their labels. Both are seeded and
their state rides in a checkpoint, so a resumed run continues the same stream.
"""

from __future__ import annotations

import numpy as np
import torch

from screener_ssl.data.dataset import Dataset
from screener_ssl.data.label_budget import restrict_to_labelled
from screener_ssl.ssl.augment import jitter


def require_labels(dataset: Dataset) -> np.ndarray:
    """uint8 [M, P] label matrix of the dataset, or a clear error when it was loaded without labels."""
    if dataset.labels is None or not dataset.patterns:
        raise ValueError("the dataset has no pattern labels; load it with labels (build_labels)")
    return dataset.labels


class ClassifierBatchSampler:
    """Positions (into the window index) of labelled train windows, positives mixed in at ``positive_fraction``.

    Each batch holds ``round(positive_fraction * B)`` windows drawn uniformly from the train windows
    with any positive label, and the rest drawn uniformly from all train windows. With
    ``labelled_rows`` (a label budget, see :mod:`screener_ssl.data.label_budget`) only those train
    windows are drawn: the labels of every other window are never read.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, positive_fraction: float, seed: int,
        labelled_rows: np.ndarray | None = None,
    ) -> None:
        labels = require_labels(dataset)
        self.train_positions = restrict_to_labelled(dataset.index.rows_of("train"), labelled_rows)
        if len(self.train_positions) == 0:
            raise ValueError(
                "the train split has no windows" + ("" if labelled_rows is None else " among the labelled rows")
            )
        self.positive_positions = self.train_positions[labels[self.train_positions].any(axis=1)]
        self.batch_size = batch_size
        self.n_positive = int(round(positive_fraction * batch_size))
        if self.n_positive > 0 and len(self.positive_positions) == 0:
            raise ValueError(
                f"the train split has no window with a positive label for any of {list(dataset.patterns)}; "
                "a supervised classifier has nothing to learn (set positive_fraction=0 to train anyway)"
            )
        self.rng = np.random.default_rng(seed)

    @property
    def effective_positive_fraction(self) -> float:
        return self.n_positive / self.batch_size

    def sample(self) -> np.ndarray:
        """int64 [B] positions into the window index, all in the train split."""
        positives = self.rng.choice(self.positive_positions, size=self.n_positive) if self.n_positive else []
        uniform = self.rng.choice(self.train_positions, size=self.batch_size - self.n_positive)
        return np.concatenate([np.asarray(positives, dtype=np.int64), uniform.astype(np.int64)])

    def sampled_prevalence(self, labels: np.ndarray) -> np.ndarray:
        """float64 [P]: expected per-pattern label rate in a batch (what the head's bias learns)."""
        y = labels[self.train_positions].astype(np.float64)
        weight = np.full(len(self.train_positions), (1.0 - self.effective_positive_fraction) / len(y))
        if len(self.positive_positions):
            is_positive = y.any(axis=1)
            weight[is_positive] += self.effective_positive_fraction / is_positive.sum()
        return weight @ y

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class ClassifierBatches:
    """``(x, observed, target)`` batches of :class:`ClassifierBatchSampler` positions, jittered when asked."""

    def __init__(
        self, dataset: Dataset, labels: np.ndarray, sampler: ClassifierBatchSampler, jitter_sigma: float, seed: int
    ) -> None:
        self.dataset, self.labels, self.sampler, self.jitter_sigma = dataset, labels, sampler, jitter_sigma
        self.jitter_gen = torch.Generator().manual_seed(seed)
        # Model selection on val rides in the checkpoint with the sampler: a resumed run keeps its best step.
        self.selection: dict = {"step": 0, "val_auprc": float("-inf"), "state": None, "history": []}

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        positions = self.sampler.sample()
        x_np, observed_np = self.dataset.windows(positions)
        x, observed = torch.from_numpy(x_np), torch.from_numpy(observed_np)
        if self.jitter_sigma > 0:
            x = jitter(x, observed, self.jitter_sigma, self.jitter_gen)
        return x, observed, torch.from_numpy(self.labels[positions].astype(np.float32))  # target [B, P]

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "jitter_gen": self.jitter_gen.get_state(), "selection": self.selection}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.jitter_gen.set_state(state["jitter_gen"])
        if "selection" in state:
            self.selection = state["selection"]
