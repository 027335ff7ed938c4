"""Every registry entry, the renderer, the samplers, the backbones and the scan forward keep their
tensors on the training device: run on a virtual device (``screener_ssl_tests.device_tracking``),
a tensor created on the host and mixed with device tensors fails here as it would on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screener_ssl.data.contracts import FEATURE_NAMES
from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl import trainer as trainer_module
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig, build_backbone
from screener_ssl.ssl.objectives.base import FitJob, get_objective_class, objective_names
from screener_ssl.ssl.render import render_candles
from screener_ssl.ssl.trainer import TrainConfig
from screener_ssl_tests.device_tracking import VIRTUAL, DeviceMixError, is_host, track_devices
from screener_ssl_tests.markets import synthetic_dataset

SPEC = WindowSpec(window_max=32, crop_lengths=(16, 32), min_history=16)
QUIET = lambda _m: None  # noqa: E731


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_data")
    return synthetic_dataset(root, SPEC, n_tickers=8, n_days=300)


def test_the_tracker_catches_a_host_tensor_meeting_a_device_tensor():
    x = torch.ones(3, 4)  # made before the block: on the device
    with track_devices() as device:
        assert x.device == device and not is_host(x)
        with pytest.raises(DeviceMixError, match="mul: host tensor"):
            x * torch.ones(4)
        assert not is_host(x * torch.ones(4, device=x.device))
        assert not is_host(x * torch.ones(4).to(device))
        assert is_host(x.cpu()) and is_host(torch.from_numpy(np.ones(4)))
        x * torch.tensor(2.0)  # 0-dim host tensors mix, as on CUDA


def test_render_candles_draws_on_the_device_of_its_windows():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 24, len(FEATURE_NAMES), generator=gen)
    observed = torch.ones_like(x, dtype=torch.bool)
    with track_devices():
        image = render_candles(x, observed)
        assert not is_host(image)
    assert torch.equal(image, render_candles(x, observed))


@pytest.mark.parametrize("kind", ["tcn", "patch_transformer", "ssm"])
def test_backbone_forward_and_the_scan_embedding_stay_on_the_device(kind):
    from screener_ssl.scan.scan import batched_embeddings

    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(kind=kind, embed_dim=8, hidden_dim=8, n_layers=2), 6)
    x = np.random.default_rng(0).normal(size=(5, 32, 6)).astype(np.float32)
    observed = np.ones_like(x, dtype=bool)
    with track_devices() as device:
        backbone.to(device)
        emb = batched_embeddings(backbone, x, observed, chunk_size=2, device=device)
    assert emb.shape == (5, 8) and np.isfinite(emb).all()


@pytest.mark.parametrize("name", objective_names())
def test_every_registry_entry_trains_on_the_device(dataset, name, monkeypatch):
    """Each entry's own fit (sampler, trainer loop, objective, hooks) for a few steps on the virtual device."""
    cls = get_objective_class(name)
    monkeypatch.setattr(trainer_module, "resolve_device", lambda _name: VIRTUAL)
    from screener_ssl.ssl import finetune as finetune_module

    monkeypatch.setattr(finetune_module, "resolve_device", lambda _name: VIRTUAL)
    torch.manual_seed(0)
    backbone = build_backbone(
        BackboneConfig(kind=cls.backbone_kind or "tcn", embed_dim=8, hidden_dim=8, n_layers=2),
        dataset.spec.n_features,
    )
    train = TrainConfig(steps=3, batch_size=16, threads=1, log_every=1, checkpoint_every=100)
    config = {"n_kernels": 84, "fit_windows": 64} if name == "minirocket" else {}
    with track_devices():
        trained, result = cls.fit(backbone, FitJob(dataset, train, AugmentConfig(), config), log=QUIET)
    assert all(np.isfinite(result.losses))


def test_a_sampler_left_on_the_host_fails_against_a_model_on_the_device(dataset):
    """The tracker has teeth for the sampler: host batches meeting device weights are caught."""
    cls = get_objective_class("vicreg")
    torch.manual_seed(0)
    objective = cls(build_backbone(BackboneConfig(kind="tcn", embed_dim=8, hidden_dim=8, n_layers=2),
                                   dataset.spec.n_features), cls.config_cls())
    with track_devices():
        sampler = cls.train_sampler(dataset, AugmentConfig(), TrainConfig(batch_size=8), {})  # on the host
        batch = sampler.sample()
        assert is_host(batch.views[0].x)
        with pytest.raises(DeviceMixError):
            objective(batch)
