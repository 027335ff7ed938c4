"""A seeded, resumable pretraining loop: AdamW, warmup + cosine, gradient clipping, checkpoints."""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from screener_ssl.ssl.checkpoint import load_checkpoint, save_checkpoint
from screener_ssl.ssl.objectives.base import Objective
from screener_ssl.ssl.device import DEVICE_PATTERN, autocast, batch_to_device, resolve_device
from screener_ssl.ssl.sampler import WindowSampler


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops instead of writing garbage weights."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(300, ge=1, le=1_000_000)
    batch_size: int = Field(64, ge=2, le=8192)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    warmup_frac: float = Field(0.05, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    seed: int = Field(0, ge=0, lt=2**63)  # torch and numpy take non-negative seeds
    threads: int = Field(2, ge=1, le=256)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(25, ge=1)
    device: str = Field("cpu", pattern=DEVICE_PATTERN)  # "auto" = CUDA when present
    amp_bf16: bool = False  # bf16 autocast of the forward (losses keep float32 where they ask for it)


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    seconds: float
    windows_per_s: float
    resumed_from_step: int = 0
    last_logs: dict[str, float] = field(default_factory=dict)
    diverged_at_step: int | None = None  # first logged step at which the loss was diverging
    # From the trained objective's hooks: extra collapse facts (e.g. codebook usage) and a writer of
    # extra run-dir files (e.g. a teacher network); see Objective.collapse_facts / save_artifacts.
    objective_facts: dict[str, dict] = field(default_factory=dict)
    write_extra: Callable[[Path], None] | None = None

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")

    @property
    def final_loss(self) -> float:
        # Mean of the last tenth: one step's loss is noisy.
        tail = max(len(self.losses) // 10, 1)
        return float(np.mean(self.losses[-tail:])) if self.losses else float("nan")

    @property
    def first_loss(self) -> float:
        head = max(len(self.losses) // 10, 1)
        return float(np.mean(self.losses[:head])) if self.losses else float("nan")


def seed_everything(seed: int, threads: int) -> None:
    """Seed python, numpy and torch and pin torch's intra-op threads (recorded with the run)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to zero."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(
    param_groups: list, lr: float, weight_decay: float, steps: int, warmup_frac: float
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``param_groups`` (parameters, or dicts with their own ``lr``) with warmup + cosine decay."""
    optimizer = torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    warmup = int(warmup_frac * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup))
    return optimizer, scheduler


def optimizer_step(loss: torch.Tensor, params: list, optimizer, scheduler, grad_clip: float) -> None:
    """One step of the loop every training shares: backward, clip the gradient norm, step, schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()


# A loss this many times its start (in magnitude) is diverging, not exploring.
DIVERGENCE_FACTOR = 100.0


class DivergingLossWarning(UserWarning):
    """The training loss grew far above where it started: the learning rate is likely too high."""


def divergence_message(losses: list[float], window: int, step: int, lr: float) -> str | None:
    """A warning text when the mean of the last ``window`` losses is ``DIVERGENCE_FACTOR`` x the first's."""
    if len(losses) < 2 * window:
        return None
    first = float(np.mean(losses[:window]))
    recent = float(np.mean(losses[-window:]))
    if recent > first and abs(recent) > DIVERGENCE_FACTOR * max(abs(first), 1e-3):
        return (
            f"loss is diverging: mean {recent:.4g} over the last {window} steps at step {step}, "
            f"{abs(recent) / max(abs(first), 1e-3):.0f}x its start ({first:.4g}); lower the learning rate "
            f"(lr={lr:g})"
        )
    return None


def train(
    objective: Objective,
    sampler: WindowSampler,
    config: TrainConfig,
    checkpoint_path: Path | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Run ``config.steps`` optimizer steps; resumes from ``checkpoint_path`` when it exists.

    On CUDA the per-step losses stay on the device and are read back every ``log_every``
    steps (and before a checkpoint), so the loop does not wait for the GPU each step; a
    non-finite loss is then reported with the step it happened at. The objective is
    returned on the CPU.
    """
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    objective.to(device)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, config.lr, config.weight_decay, config.steps, config.warmup_frac)
    losses: list[float] = []
    start_step = 0
    if checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        losses = list(state["losses"])
        start_step = int(state["step"])
        log(f"resumed from checkpoint {checkpoint_path} at step {start_step}/{config.steps}")

    objective.train()
    logs: dict[str, float] = {}
    diverged_at: int | None = None
    t0 = time.perf_counter()
    window_count = 0
    # CPU: check every step (free there). CUDA: read losses back in groups, no sync per step.
    read_every = 1 if device.type == "cpu" else config.log_every
    pending: list[torch.Tensor] = []

    def read_back(last_step: int) -> None:
        values = torch.stack(pending).float().cpu().tolist() if pending else []
        first = last_step - len(values) + 1
        pending.clear()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"objective {objective.name!r} produced a non-finite loss ({value}) at step {first + offset}; "
                    f"last logs {logs}. Lower the learning rate or check the inputs for unmasked NaN."
                )
            losses.append(value)

    for step in range(start_step, config.steps):
        batch = batch_to_device(sampler.sample(), device)
        with autocast(device, config.amp_bf16):
            out = objective(batch)
        loss = out.loss
        pending.append(loss.detach())
        if len(pending) >= read_every:
            read_back(step)
        optimizer_step(loss, params, optimizer, scheduler, config.grad_clip)
        objective.on_after_step(step + 1, config.steps)
        logs = out.logs
        window_count += batch.batch_size
        done = step + 1
        if done % config.log_every == 0 or done == config.steps or done % config.checkpoint_every == 0:
            read_back(step)
        if done % config.log_every == 0 or done == config.steps:
            rate = window_count / max(time.perf_counter() - t0, 1e-9)
            log(
                f"step {done}/{config.steps} loss {np.mean(losses[-config.log_every:]):.4f} "
                f"lr {scheduler.get_last_lr()[0]:.2e} {rate:.0f} windows/s"
            )
            diverging = divergence_message(losses, config.log_every, done, config.lr)
            if diverging and diverged_at is None:
                diverged_at = done
                log(f"WARNING: {diverging}")
                warnings.warn(f"objective {objective.name!r}: {diverging}", DivergingLossWarning, stacklevel=2)
        if checkpoint_path is not None and (done % config.checkpoint_every == 0) and done < config.steps:
            save_checkpoint(
                checkpoint_path,
                {
                    "objective": objective.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "losses": losses,
                    "step": done,
                },
            )
    seconds = time.perf_counter() - t0
    objective.eval()
    if device.type != "cpu":
        objective.to("cpu")  # probing, checks and artifacts downstream run on the CPU
    return TrainResult(
        steps=config.steps,
        losses=losses,
        seconds=seconds,
        windows_per_s=window_count / max(seconds, 1e-9),
        resumed_from_step=start_step,
        last_logs=logs,
        diverged_at_step=diverged_at,
    )
