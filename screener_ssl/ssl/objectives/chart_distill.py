"""Chart-image teacher distilled into the 1D causal backbone.

Each window is rendered as a small candlestick image (:mod:`screener_ssl.ssl.render`: bars
<= t*, the decision bar drawn open-only). A small CNN **teacher** learns from the images with
VICReg (Bardes, Ponce & LeCun, ICLR 2022; the loss and expander are
:class:`~screener_ssl.ssl.objectives.vicreg.VICRegHead`) between two image views: the
renders of the sampler's two feature views (same t*), each further augmented in image
space. The 1D causal backbone, the **student** (what the probe and the market scan use),
regresses the teacher's embedding of the clean window's render from its own embedding at
t* through a linear predictor, against a stop-gradient, batch-standardized target
(feature distillation as in FitNets, Romero et al., ICLR 2015, and the hint loss of
Hinton, Vinyals & Dean 2015's "knowledge distillation" family). The seed's idea (4.8):
a vision encoder on rendered charts, distilled into a lightweight 1D encoder for
market-wide scanning.

Why one joint run instead of "pretrain the teacher, then distill": the gradients of the
two terms never meet (the target is detached, so the teacher learns only from VICReg and
the student only from the distillation term), so the joint loss is the sum of two
independent problems on one batch stream; it costs one run instead of two and one set of
rendered images per step. The distillation weight ramps linearly from 0 over the first
``distill_warmup_frac`` of the run, so the student does not spend its early steps chasing
a random teacher. AdamW normalizes each parameter's step, so the weight matters mostly
through the shared gradient clip.

Image-space augmentations keep causality: they only drop or move pixels of an image that
already shows bars <= t* alone (drop the oldest columns, erase a block of past columns,
never the decision column, shift rows, add pixel noise); nothing can bring in later bars.
The teacher is saved beside the encoder (``teacher.pt`` + ``teacher.json``) and
:func:`teacher_encoder` loads it with the ``encode_prepared(x, observed)`` contract of
:class:`~screener_ssl.ssl.encoder.Encoder`, so the probe can score it for reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from screener_ssl.data.contracts import FEATURE_NAMES
from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.checks import effective_rank
from screener_ssl.ssl.objectives._heads import l2_normalized_std, require_views
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch
from screener_ssl.ssl.objectives.base import Objective, ObjectiveConfig, register_objective
from screener_ssl.ssl.objectives.vicreg import VICRegConfig, VICRegHead
from screener_ssl.ssl.render import RenderConfig, feature_positions, render_candles
from screener_ssl.store.artifacts import atomic_torch_save, atomic_write_json

TEACHER_WEIGHTS = "teacher.pt"
TEACHER_SPEC = "teacher.json"
STANDARDIZE_EPS = 1e-4


class ImageAugmentConfig(ObjectiveConfig):
    """Image-space view regime of the teacher (on top of the feature-space views)."""

    max_left_crop_frac: float = Field(0.25, ge=0.0, lt=1.0)  # oldest columns dropped, up to this share
    erase_prob: float = Field(0.5, ge=0.0, le=1.0)  # chance of erasing one block of past columns
    erase_cols: int = Field(4, ge=1, le=64)
    max_shift_rows: int = Field(2, ge=0, le=16)  # vertical shift of the whole image
    pixel_noise: float = Field(0.05, ge=0.0, le=1.0)


class ChartDistillConfig(ObjectiveConfig):
    render: RenderConfig = Field(default_factory=RenderConfig)
    feature_names: tuple[str, ...] = FEATURE_NAMES  # the window's channel layout the renderer reads
    teacher_width: int = Field(8, ge=2, le=128)  # channels of the first conv; doubled per stage
    teacher_dim: int = Field(64, ge=4, le=1024)
    image_augment: ImageAugmentConfig = Field(default_factory=ImageAugmentConfig)
    vicreg: VICRegConfig = Field(default_factory=VICRegConfig)
    distill_weight: float = Field(1.0, gt=0.0)
    distill_warmup_frac: float = Field(0.2, ge=0.0, lt=1.0)


# --------------------------------------------------------------------------- teacher


class ChartTeacherSpec(ObjectiveConfig):
    """What builds a teacher (recorded where an encoder's backbone config would be)."""

    kind: str = "chart_cnn"
    height: int
    base_width: int
    out_dim: int


class ChartTeacher(nn.Module):
    """Small CNN: images ``[B, 2, H, W]`` -> embedding ``[B, teacher_dim]``.

    Three conv stages (3x3, GroupNorm, ReLU, 2x2 max-pool; widths w, 2w, 4w), then an
    average over the image height and over ``TIME_GROUPS`` groups of columns, and a Linear
    over those groups, so the embedding keeps where in time (how close to t*) a shape sits
    and any window length works. GroupNorm normalizes per image: a window's embedding never
    depends on the other windows of its batch.
    """

    TIME_GROUPS = 8

    def __init__(self, height: int, base_width: int, out_dim: int, in_channels: int = 2) -> None:
        super().__init__()
        assert height >= 8, f"ChartTeacher needs images at least 8 rows high, got {height}"
        self.height, self.in_channels, self.out_dim = height, in_channels, out_dim
        self.config = ChartTeacherSpec(height=height, base_width=base_width, out_dim=out_dim)
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(3):
            out = base_width * 2**stage
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.GroupNorm(min(4, out), out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, self.TIME_GROUPS))
        self.head = nn.Linear(channels * self.TIME_GROUPS, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 2, H, W]`` -> ``[B, out_dim]``."""
        assert images.dim() == 4 and images.shape[1:3] == (self.in_channels, self.height) and images.shape[3] >= 8, (
            f"ChartTeacher expects [B, {self.in_channels}, {self.height}, W >= 8], got {tuple(images.shape)}"
        )
        h = self.pool(self.features(images))  # [B, 4w, 1, TIME_GROUPS]
        return self.head(h.flatten(1))


def augment_images(images: torch.Tensor, config: ImageAugmentConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """Causal image-space augmentation of charts ``[B, 2, H, W]`` (decision bar in the last column).

    Drops a random number of the oldest columns, erases one block of past columns (never the
    decision column), shifts the image vertically with zero fill, adds pixel noise.
    """
    batch, channels, height, width = images.shape
    device = images.device  # a generator, when given, lives there too
    col = torch.arange(width, device=device).view(1, width)
    keep = torch.ones(batch, width, dtype=torch.bool, device=device)
    max_crop = int(config.max_left_crop_frac * width)
    if max_crop > 0:
        crop = torch.randint(0, max_crop + 1, (batch, 1), generator=gen, device=device)
        keep &= col >= crop
    if config.erase_prob > 0 and width - 1 - config.erase_cols > 0:
        start = torch.randint(0, width - 1 - config.erase_cols, (batch, 1), generator=gen, device=device)
        erase = (col >= start) & (col < start + config.erase_cols)
        erase &= torch.rand(batch, 1, generator=gen, device=device) < config.erase_prob
        keep &= ~erase
    out = images * keep.view(batch, 1, 1, width)
    if config.max_shift_rows > 0:
        shift = torch.randint(-config.max_shift_rows, config.max_shift_rows + 1, (batch, 1), generator=gen, device=device)
        source = torch.arange(height, device=device).view(1, height) - shift  # [B, H]: output row r reads row r - shift
        inside = (source >= 0) & (source < height)
        idx = source.clamp(0, height - 1).view(batch, 1, height, 1).expand(batch, channels, height, width)
        out = out.gather(2, idx) * inside.view(batch, 1, height, 1)
    if config.pixel_noise > 0:
        out = out + config.pixel_noise * torch.randn(out.shape, generator=gen, device=device)
    return out


# --------------------------------------------------------------------------- distillation loss


def standardize(z: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Per-dimension batch z-score of ``z [B, D]`` (biased std)."""
    assert z.dim() == 2 and z.shape[0] >= 2, f"standardize expects [B >= 2, D], got {tuple(z.shape)}"
    centred = z - z.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0, keepdim=True) + eps)


def distillation_loss(prediction: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``prediction [B, D]`` against the stop-gradient, batch-standardized ``teacher [B, D]``.

    Standardizing the target makes the loss scale-free in the teacher's embedding (whose scale
    VICReg does not pin) and gives every teacher dimension the same weight; predicting zero
    costs about 1, a perfect student 0.
    """
    assert prediction.shape == teacher.shape and prediction.dim() == 2, (
        f"distillation_loss: prediction {tuple(prediction.shape)} vs teacher {tuple(teacher.shape)}"
    )
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        target = standardize(teacher.detach().float())
        return (prediction.float() - target).pow(2).mean()


@register_objective
class ChartDistill(Objective):
    """Candlestick-image CNN teacher (VICReg over image views) distilled into the 1D causal student."""

    name = "chart_distill"
    n_views = 2
    config_cls = ChartDistillConfig

    def __init__(self, backbone: SSLBackbone, config: ChartDistillConfig) -> None:
        super().__init__(backbone, config)
        if backbone.input_channels != len(config.feature_names):
            raise ValueError(
                f"chart_distill: the backbone reads {backbone.input_channels} channels but feature_names lists "
                f"{len(config.feature_names)} {config.feature_names}"
            )
        feature_positions(config.feature_names)  # fails early, naming the missing shape feature
        self.teacher = ChartTeacher(config.render.height, config.teacher_width, config.teacher_dim)
        self.teacher_head = VICRegHead(config.teacher_dim, config.vicreg)
        self.predictor = nn.Linear(backbone.embed_dim, config.teacher_dim)
        self.register_buffer("progress", torch.tensor(0.0))  # share of training steps done (checkpointed)

    def render(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``x, observed [B, T, C]`` -> charts ``[B, 2, H, T]``."""
        return render_candles(x, observed, self.config.render, self.config.feature_names)

    def distill_weight(self) -> float:
        warmup = self.config.distill_warmup_frac
        ramp = 1.0 if warmup <= 0 else min(float(self.progress) / warmup, 1.0)
        return self.config.distill_weight * ramp

    def on_after_step(self, step: int, total_steps: int) -> None:
        self.progress.fill_(step / max(total_steps, 1))

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:
        require_views(batch, self.n_views, self.name)
        config = self.config
        view_a, view_b = batch.views[:2]
        batch_size = batch.batch_size
        with torch.no_grad():  # rendering is data preparation: no gradient flows into the features
            images = torch.cat(
                [
                    augment_images(self.render(view_a.x, view_a.observed), config.image_augment),
                    augment_images(self.render(view_b.x, view_b.observed), config.image_augment),
                    self.render(batch.clean.x, batch.clean.observed),
                ]
            )  # [3B, 2, H, T]
        t_a, t_b, t_clean = self.teacher(images).split(batch_size)  # each [B, teacher_dim]
        teacher_loss, teacher_logs = self.teacher_head(t_a, t_b)

        student = self.backbone.pooled(batch.clean.x, batch.clean.observed)  # [B, D] at t*
        distill = distillation_loss(self.predictor(student), t_clean)
        weight = self.distill_weight()
        loss = teacher_loss + weight * distill
        logs = {f"teacher_{key}": value for key, value in teacher_logs.items()}
        logs.update(
            loss=float(loss.detach()),
            teacher_loss=float(teacher_loss.detach()),
            distill_loss=float(distill.detach()),
            distill_weight=weight,
            student_embedding_std=float(l2_normalized_std(student)),
            teacher_effective_rank=effective_rank(t_clean),
        )
        return ObjectiveOutput(loss=loss, logs=logs)

    def save_artifacts(self, directory: Path) -> None:
        """``teacher.pt`` (CNN weights) and ``teacher.json`` (what rebuilds it) beside the encoder."""
        directory = Path(directory)
        atomic_torch_save(directory / TEACHER_WEIGHTS, self.teacher.state_dict())
        atomic_write_json(
            directory / TEACHER_SPEC,
            {
                "render": self.config.render.model_dump(mode="json"),
                "feature_names": list(self.config.feature_names),
                "teacher_width": self.config.teacher_width,
                "teacher_dim": self.config.teacher_dim,
            },
        )

    @classmethod
    def reference_encoders(cls, run_dir: Path) -> dict[str, "TeacherEncoder"]:
        """The chart teacher, probed beside the student for reference."""
        return {"teacher": teacher_encoder(run_dir)}

    def teacher_encoder(self) -> "TeacherEncoder":
        return TeacherEncoder(self.teacher, self.config.render, self.config.feature_names)


# --------------------------------------------------------------------------- the teacher as an encoder


class TeacherEncoder:
    """The chart teacher behind :class:`~screener_ssl.ssl.encoder.Encoder`'s ``encode_prepared`` contract.

    ``encode_prepared(x, observed)`` takes the same censored, normalized windows the probe
    gathers for every encoder, renders them and embeds the images; so the probe scores the
    teacher with the code it uses for the students. Embeddings exist at the decision bar only.
    """

    def __init__(self, teacher: ChartTeacher, render: RenderConfig, feature_names: tuple[str, ...]) -> None:
        self.teacher = teacher.eval()
        self.backbone = self.teacher  # run_probe records ``encoder.backbone.config``
        self.render = render
        self.feature_names = tuple(feature_names)
        self.meta = {"objective": "chart_distill", "role": "teacher"}
        self.normalization = "none"  # as the run's Encoder: windows arrive normalized by the gatherer

    pooling = "last"  # the teacher embeds the whole rendered window: there are no steps to pool

    def with_pooling(self, pooling: str) -> "TeacherEncoder":
        if pooling != "last":
            raise ValueError(f"the chart teacher embeds a whole rendered window; pooling {pooling!r} does not apply")
        return self

    def to(self, device: str | torch.device) -> "TeacherEncoder":
        """Move the teacher to ``device``; :meth:`encode_prepared` then renders and embeds there."""
        self.teacher.to(device)
        return self

    @property
    def input_channels(self) -> int:
        return len(self.feature_names)

    @property
    def embed_dim(self) -> int:
        return self.teacher.out_dim

    def describe(self) -> dict[str, Any]:
        """What a probe records about this encoder (as :meth:`Encoder.describe`)."""
        return {
            "backbone": {"kind": "chart_teacher", "render": self.render.model_dump(mode="json"),
                         "embed_dim": self.embed_dim},
            "pooling": "last",
            "n_parameters": int(sum(p.numel() for p in self.teacher.parameters())),
        }

    @torch.inference_mode()
    def encode_prepared(
        self, x: np.ndarray, observed: np.ndarray, per_timestep: bool = False, batch_size: int = 256
    ) -> np.ndarray:
        """Normalized, censored ``x, observed [N, T, C]`` -> ``[N, teacher_dim]`` at the decision bar."""
        if per_timestep:
            raise ValueError("the chart teacher embeds a whole window at its decision bar; per_timestep is not defined")
        if x.ndim != 3 or x.shape[2] != self.input_channels or x.shape[1] < 8:
            raise ValueError(f"the chart teacher expects windows [N, T >= 8, {self.input_channels}], got {x.shape}")
        device = next(self.teacher.parameters()).device
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            ob = torch.from_numpy(np.ascontiguousarray(observed[i : i + batch_size])).to(device)
            out.append(self.teacher(render_candles(xb, ob, self.render, self.feature_names)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.concatenate(out, axis=0)


def teacher_encoder(run_dir: str | Path) -> TeacherEncoder:
    """Load the chart teacher saved beside a ``chart_distill`` run's encoder."""
    run_dir = Path(run_dir)
    spec_path = run_dir / TEACHER_SPEC
    if not spec_path.exists():
        raise FileNotFoundError(f"no chart teacher in {run_dir} (missing {TEACHER_SPEC}); is it a chart_distill run?")
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    render = RenderConfig.model_validate(spec["render"])
    teacher = ChartTeacher(render.height, int(spec["teacher_width"]), int(spec["teacher_dim"]))
    teacher.load_state_dict(torch.load(run_dir / TEACHER_WEIGHTS, map_location="cpu", weights_only=True))
    return TeacherEncoder(teacher, render, tuple(spec["feature_names"]))
