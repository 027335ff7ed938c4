"""The objective contract and the one registry of objectives and baselines.

An objective receives an :class:`SSLBatch` of ``n_views`` augmented views of the
same windows (views share the decision index t*; the decision bar is always the
last position) and returns a scalar loss with a few named floats to log.

The registry
------------
Every row of the leaderboard (self-supervised objectives and baselines alike)
is an :class:`Objective` subclass registered under its ``name``. Besides
``name``, ``n_views`` and ``config_cls``, an entry declares what its run needs;
every declaration has a default that fits a self-supervised objective trained
by the trainer loop, so a module that declares nothing extra registers and trains:

- ``trains`` (True): False = probed as initialised (no optimizer step).
- ``needs_labels`` (False): the run loads the dataset with its pattern labels.
- ``backbone_kind`` (None): replaces the sweep's ``backbone.kind`` (e.g. ``raw_window``).
- ``finetunable`` (True): False = there are no weights to finetune end to end.
- ``is_baseline`` (False): a baseline, a candidate for the leaderboard's best baseline.
- ``kind`` (None): the leaderboard's kind column when it is not what ``is_baseline`` says
  (``minirocket``: a baseline with a verdict column of its own, not a best-baseline candidate).
- ``collapse_rule`` (``"std_and_rank"``): how :func:`screener_ssl.ssl.checks.judge_collapse`
  reads the held-out collapse report (``"rank_only"`` for inputs with constant channels by design).
- ``sampler_settings(config)`` ({}): extra :class:`WindowSampler` arguments for this config
  (e.g. ``future_bars``: a predictive objective's horizon after t*, handed over in ``SSLBatch.extras``).
- ``resolve_config(config, train)``: the config recorded in the schema, every default filled in.
- ``fit(backbone, job, log)``: how the backbone is trained on a :class:`FitJob`
  (default: the trainer loop over a :class:`WindowSampler`).

To add an objective: one module in ``screener_ssl/ssl/objectives/`` defining a
config (``ObjectiveConfig`` subclass) and an ``Objective`` subclass with
``name``, ``n_views``, ``config_cls`` and ``forward``, decorated with
:func:`register_objective`; then an entry under ``objectives:`` in the sweep file.
Modules of this package are imported (and so registered) automatically.
A two-view objective whose head scores the pooled pair subclasses
:class:`screener_ssl.ssl.objectives._heads.PairHeadObjective` and sets ``head_cls`` instead of
writing ``forward`` (see ``vicreg.py``).

To add a baseline: the same, one module here plus the sweep entry. A baseline
that is probed untrained subclasses
:class:`screener_ssl.ssl.objectives.random_init.RandomInit` (``trains=False``,
no settings) and sets what differs, e.g. ``backbone_kind`` for a parameter-free
backbone (see ``raw_features.py``); a baseline trained another way overrides
``fit`` (see ``supervised.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import nn

from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.batch import ObjectiveOutput, SSLBatch

if TYPE_CHECKING:
    from screener_ssl.data.dataset import Dataset
    from screener_ssl.ssl.augment import AugmentConfig
    from screener_ssl.ssl.snapshots import EncoderSnapshots
    from screener_ssl.ssl.trainer import TrainConfig, TrainResult


@dataclass(frozen=True)
class FitJob:
    """What an entry's ``fit`` trains on: the dataset, the run's train and augment sections, its settings."""

    dataset: "Dataset"
    train: "TrainConfig"
    augment: "AugmentConfig"
    config: dict[str, Any]  # the objective's settings from the sweep (not yet resolved)
    checkpoint: Path | None = None  # where a killed run resumes from
    # The training loop's snapshot hook (EncoderSnapshots): the encoder kept at a few steps for the budget curve.
    snapshots: "EncoderSnapshots | None" = None
    # A label budget: an entry that needs labels reads only these train windows' labels (None = all).
    labelled_rows: Any = None  # int64 [n] positions into the window index


class ObjectiveConfig(BaseModel):
    """Base of every objective's config; recorded verbatim in the schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(nn.Module):
    """Backbone + heads + loss. Subclasses set ``name``, ``n_views`` and ``config_cls``."""

    name: ClassVar[str]
    n_views: ClassVar[int] = 1
    config_cls: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    # Registry declarations (see the module docstring); the defaults fit a trained SSL objective.
    trains: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False
    backbone_kind: ClassVar[str | None] = None
    finetunable: ClassVar[bool] = True
    collapse_rule: ClassVar[str] = "std_and_rank"
    is_baseline: ClassVar[bool] = False  # a reference row (paired verdicts compare runs with the best one)
    # For an entry the array API (``screener_ssl.ssl.pretrain``) cannot train: what to use instead.
    array_api_note: ClassVar[str | None] = None
    kind: ClassVar[str | None] = None  # the leaderboard's kind; None = "baseline" if is_baseline else "objective"

    @classmethod
    def leaderboard_kind(cls) -> str:
        """What the leaderboard calls this entry's rows: ``objective`` or ``baseline``."""
        return cls.kind or ("baseline" if cls.is_baseline else "objective")

    def __init__(self, backbone: SSLBackbone, config: ObjectiveConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    @property
    def future_bars(self) -> int:
        """Bars after t* the sampler hands over as ``extras["future_x"]`` / ``["future_observed"]``.

        Read from :meth:`sampler_settings` (``future_bars``, default 0: the objective reads only
        the window up to t*). With a horizon, the sampler draws only windows whose future stays
        inside the sampled split.
        """
        return int(self.sampler_settings(self.config.model_dump(mode="json")).get("future_bars", 0))

    def forward(self, batch: SSLBatch) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Hook after each optimizer step (EMA targets, schedules). Default: nothing."""

    def collapse_facts(self) -> dict[str, dict[str, Any]]:
        """Facts about the objective's own state that the collapse check includes (e.g. codebook usage).

        ``name -> {metric: value, ..., "collapsed": bool}``; any ``collapsed`` fact marks the run
        collapsed. Default: none (the embedding statistics alone decide).
        """
        return {}

    def save_artifacts(self, directory: Path) -> None:
        """Write extra trained parts the run dir keeps beside ``encoder.pt`` (e.g. a teacher). Default: nothing."""

    @classmethod
    def reference_encoders(cls, run_dir: Path) -> dict[str, Any]:
        """Extra encoders a run dir holds that the probe scores for reference, by name (e.g. a
        distillation teacher): ``name -> object with encode_prepared(x, observed)``. Default: none."""
        return {}

    @classmethod
    def resolve_config(cls, config: dict[str, Any], train: "TrainConfig") -> dict[str, Any]:
        """The settings recorded in the schema: ``config`` validated, every default filled in."""
        return cls.config_cls.model_validate(config or {}).model_dump(mode="json")

    @classmethod
    def sampler_settings(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Extra :class:`WindowSampler` arguments for a resolved ``config``. Default: none."""
        return {}

    @classmethod
    def train_sampler(cls, dataset, augment, train: "TrainConfig", config: dict[str, Any] | None):
        """The :class:`WindowSampler` over the train split that this objective trains on."""
        from screener_ssl.ssl.sampler import WindowSampler

        train_pos = dataset.index.rows_of("train")
        return WindowSampler(
            values=dataset.store.values,
            ticker_start=dataset.ticker_start(train_pos),
            decision_row=dataset.index.decision_row[train_pos],
            spec=dataset.spec,
            augment=augment,
            n_views=cls.n_views,
            batch_size=train.batch_size,
            seed=train.seed,
            **cls.sampler_settings(cls.resolve_config(config, train)),
        )

    @classmethod
    def fit(
        cls, backbone: SSLBackbone, job: "FitJob", log: Callable[[str], None] = print
    ) -> tuple[SSLBackbone, "TrainResult"]:
        """Train ``backbone`` for ``job`` on the train split; return the trained backbone and the loss record."""
        from screener_ssl.ssl.trainer import train as train_loop

        dataset, train = job.dataset, job.train
        objective = cls(backbone, cls.config_cls.model_validate(job.config or {}))
        train_pos = dataset.index.rows_of("train")
        sampler = cls.train_sampler(dataset, job.augment, train, job.config)
        log(f"{cls.name}: {train.steps} steps x {train.batch_size} windows from {len(train_pos)} train windows")
        result = train_loop(objective, sampler, train, checkpoint_path=job.checkpoint, log=log, snapshot=job.snapshots)
        # The run writer reads the trained objective's hooks through the result.
        result.objective_facts = objective.collapse_facts()
        result.write_extra = objective.save_artifacts
        return objective.backbone, result


_REGISTRY: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"objective {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> list[str]:
    from screener_ssl.ssl import objectives  # noqa: F401  (registration side effect)

    return sorted(_REGISTRY)


def baseline_names() -> list[str]:
    """Names of the registry's baselines (the references of the paired verdicts)."""
    from screener_ssl.ssl import objectives  # noqa: F401  (registration side effect)

    return sorted(n for n, c in _REGISTRY.items() if c.is_baseline)


def trainer_objective_names() -> list[str]:
    """Names of the entries trained by the trainer loop on SSL batches (baselines left out)."""
    from screener_ssl.ssl import objectives  # noqa: F401

    return sorted(n for n, c in _REGISTRY.items() if c.trains and c.fit.__func__ is Objective.fit.__func__)


def get_objective_class(name: str) -> type[Objective]:
    from screener_ssl.ssl import objectives  # noqa: F401

    if name not in _REGISTRY:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_objective(name: str, backbone: SSLBackbone, config: dict | ObjectiveConfig | None = None) -> Objective:
    cls = get_objective_class(name)
    if not isinstance(config, ObjectiveConfig):
        config = cls.config_cls.model_validate(config or {})
    return cls(backbone, config)
