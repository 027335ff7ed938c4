"""The one seeded, resumable training loop (AdamW, warmup + cosine, gradient clipping, checkpoints) and pretraining on it."""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from screener_ssl.ssl.checkpoint import load_checkpoint, save_checkpoint
from screener_ssl.ssl.batch import TrainableObjective
from screener_ssl.ssl.device import DEVICE_PATTERN, autocast, batch_to_device, resolve_device
from screener_ssl.ssl.sampler import WindowSampler
from screener_ssl.ssl.snapshots import DEFAULT_CURVE_FRACS, check_curve_fracs
from screener_ssl.ssl.schema import diff_fields
from screener_ssl.store.environment import default_thread_counts


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
    # Fractions of the steps at which the encoder is kept for the run's budget curve (empty = none).
    curve_fracs: tuple[float, ...] = DEFAULT_CURVE_FRACS

    @field_validator("curve_fracs")
    @classmethod
    def _check_curve_fracs(cls, fracs: tuple[float, ...]) -> tuple[float, ...]:
        return check_curve_fracs(fracs)


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
    default_thread_counts(threads)
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


class LoopConfig(Protocol):
    """What the training loop reads of a run's config (TrainConfig and FinetuneConfig both have it)."""

    steps: int
    lr: float
    weight_decay: float
    warmup_frac: float
    grad_clip: float
    threads: int
    checkpoint_every: int
    log_every: int


class BatchSource(Protocol):
    """Draws training batches; its RNG state goes into every checkpoint."""

    def sample(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# One step's loss: (scalar loss tensor, logs, windows in the batch).
StepLoss = tuple[torch.Tensor, dict[str, float], int]


@dataclass
class LoopResult:
    losses: list[float]  # one per step, resumed steps included
    seconds: float  # of the steps this call ran
    windows: int  # windows seen by the steps this call ran
    resumed_from_step: int
    last_logs: dict[str, float]
    diverged_at_step: int | None


def run_training_loop(
    model: torch.nn.Module,
    batches: BatchSource,
    loss_step: Callable[[Any], StepLoss],
    config: LoopConfig,
    *,
    name: str,
    param_groups: list | None = None,
    device: torch.device | None = None,
    checkpoint_path: Path | None = None,
    guard_config: BaseModel | None = None,
    on_after_step: Callable[[int, int], None] | None = None,
    snapshot: Callable[[torch.nn.Module, int], None] | None = None,
    loss_label: str = "loss",
    hint: str = "Lower the learning rate or check the inputs for unmasked NaN.",
    log: Callable[[str], None] = print,
) -> LoopResult:
    """The one training loop: ``config.steps`` AdamW steps (warmup + cosine, clipping), checkpoints, resume.

    Each step draws ``batches.sample()`` and calls ``loss_step(batch)``. ``param_groups``
    default to ``model``'s trainable parameters. With ``checkpoint_path`` the model,
    optimizer, schedule, ``batches`` and torch RNG states are saved every
    ``checkpoint_every`` steps and a run resumes from them bit-identically; with
    ``guard_config`` the checkpoint records that config and a resume under another one is
    refused. A non-finite loss stops the run (``name`` and ``hint`` in the message); a
    diverging one warns. On CUDA the losses are read back every ``log_every`` steps (and
    before a checkpoint) so the loop does not wait for the GPU each step. ``snapshot(model,
    done_steps)`` runs after every optimizer step (e.g. :class:`~screener_ssl.ssl.snapshots.EncoderSnapshots`
    keeping the encoder at chosen steps); it must only read the model. The model is left in
    eval mode on the CPU.
    """
    torch.set_num_threads(config.threads)
    device = device or torch.device("cpu")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(
        params if param_groups is None else param_groups, config.lr, config.weight_decay, config.steps,
        config.warmup_frac,
    )
    losses: list[float] = []
    start_step = 0
    if checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        if guard_config is not None:
            differing = diff_fields(guard_config, state.get("config", {}))
            if differing:
                raise ValueError(
                    f"checkpoint {checkpoint_path} was written with another {type(guard_config).__name__}; "
                    "differing fields:\n  " + "\n  ".join(differing)
                )
        # Pretraining checkpoints written before the loop was shared keep the model under "objective".
        model_key = "model" if "model" in state else "objective"
        missing = [k for k in (model_key, "optimizer", "scheduler", "sampler", "torch_rng", "losses", "step")
                   if k not in state]
        if missing:
            raise ValueError(
                f"checkpoint {checkpoint_path} lacks {missing}: it was not written by this training loop; "
                "delete it to train from step 0"
            )
        model.load_state_dict(state[model_key])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        losses = list(state["losses"])
        start_step = int(state["step"])
        log(f"resumed {name} from checkpoint {checkpoint_path} at step {start_step}/{config.steps}")

    model.train()
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
                    f"{name} produced a non-finite loss ({value}) at step {first + offset}; last logs {logs}. {hint}"
                )
            losses.append(value)

    for step in range(start_step, config.steps):
        loss, step_logs, n_windows = loss_step(batches.sample())
        pending.append(loss.detach())
        if len(pending) >= read_every:
            read_back(step)
        optimizer_step(loss, params, optimizer, scheduler, config.grad_clip)
        if on_after_step is not None:
            on_after_step(step + 1, config.steps)
        if snapshot is not None:
            snapshot(model, step + 1)
        logs = step_logs
        window_count += n_windows
        done = step + 1
        if done % config.log_every == 0 or done == config.steps or done % config.checkpoint_every == 0:
            read_back(step)
        if done % config.log_every == 0 or done == config.steps:
            rate = window_count / max(time.perf_counter() - t0, 1e-9)
            log(
                f"step {done}/{config.steps} {loss_label} {np.mean(losses[-config.log_every:]):.4f} "
                f"lr {scheduler.get_last_lr()[-1]:.2e} {rate:.0f} windows/s"
            )
            diverging = divergence_message(losses, config.log_every, done, config.lr)
            if diverging and diverged_at is None:
                diverged_at = done
                log(f"WARNING: {diverging}")
                warnings.warn(f"{name}: {diverging}", DivergingLossWarning, stacklevel=3)
        if checkpoint_path is not None and (done % config.checkpoint_every == 0) and done < config.steps:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sampler": batches.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "losses": losses,
                "step": done,
            }
            if guard_config is not None:
                state["config"] = guard_config.model_dump(mode="json")
            save_checkpoint(checkpoint_path, state)
    seconds = time.perf_counter() - t0
    model.eval()
    if device != torch.device("cpu"):
        model.to("cpu")  # probing, checks and artifacts downstream run on the CPU
    return LoopResult(
        losses=losses,
        seconds=seconds,
        windows=window_count,
        resumed_from_step=start_step,
        last_logs=logs,
        diverged_at_step=diverged_at,
    )


def train(
    objective: TrainableObjective,
    sampler: WindowSampler,
    config: TrainConfig,
    checkpoint_path: Path | None = None,
    log: Callable[[str], None] = print,
    snapshot: Callable[[torch.nn.Module, int], None] | None = None,
) -> TrainResult:
    """Pretrain ``objective`` for ``config.steps`` steps of :func:`run_training_loop`; resumes from ``checkpoint_path``.

    ``snapshot``: the loop's snapshot hook (see :func:`run_training_loop`). The objective is returned on the CPU.
    """
    device = resolve_device(config.device)
    if isinstance(sampler, WindowSampler) and sampler.device != device:
        # The sampler keeps the feature array on the training device and builds batches there.
        sampler.to(device)

    def loss_step(batch) -> StepLoss:
        batch = batch_to_device(batch, device)
        with autocast(device, config.amp_bf16):
            out = objective(batch)
        return out.loss, out.logs, batch.batch_size

    loop = run_training_loop(
        objective, sampler, loss_step, config, name=f"objective {objective.name!r}", device=device,
        checkpoint_path=checkpoint_path, on_after_step=objective.on_after_step, snapshot=snapshot, log=log,
    )
    return TrainResult(
        steps=config.steps,
        losses=loop.losses,
        seconds=loop.seconds,
        windows_per_s=loop.windows / max(loop.seconds, 1e-9),
        resumed_from_step=loop.resumed_from_step,
        last_logs=loop.last_logs,
        diverged_at_step=loop.diverged_at_step,
    )
