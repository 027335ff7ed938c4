"""Device selection: 'auto' / 'cpu' / 'cuda' resolve, or fail with a message that says why."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from screener_ssl.ssl.device import DeviceUnavailableError, autocast, batch_to_device, resolve_device
from screener_ssl.ssl.batch import SSLBatch, View
from screener_ssl.ssl.trainer import TrainConfig


def test_cpu_and_auto_resolve_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match=f"device '{name}' asked for, but torch .* sees no CUDA device"):
        resolve_device(name)


def test_cuda_index_beyond_the_devices_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceUnavailableError, match="sees 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", "", "mps"])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(name)
    with pytest.raises(ValidationError):
        TrainConfig(device=name)


def test_batches_stay_put_on_the_cpu_and_autocast_is_optional():
    view = View(torch.zeros(2, 4, 3), torch.ones(2, 4, 3, dtype=torch.bool))
    batch = SSLBatch(views=[view], clean=view, ticker_id=torch.zeros(2, dtype=torch.long),
                     decision_row=torch.zeros(2, dtype=torch.long))
    assert batch_to_device(batch, torch.device("cpu")) is batch
    with autocast(torch.device("cpu"), bf16=False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(torch.device("cpu"), bf16=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_trainer_refuses_cuda_without_a_gpu_before_touching_anything(monkeypatch):
    from screener_ssl.ssl.trainer import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="sees no CUDA device"):
        train(objective=None, sampler=None, config=TrainConfig(steps=1, device="cuda"))
