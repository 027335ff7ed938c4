"""Self-supervised pretraining: backbones, objectives, augmentations, trainer, and the array API.

``from screener_ssl.ssl import pretrain, load_encoder, Encoder`` is the array API. The names are
resolved on first use, so importing a lower module of this package (the sampler, the trainer, the
batch contract) does not import the objectives' registry above it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Encoder", "load_encoder", "pretrain"]


def __getattr__(name: str) -> Any:
    if name == "pretrain":
        from screener_ssl.ssl.api import pretrain

        return pretrain
    if name in ("Encoder", "load_encoder"):
        from screener_ssl.ssl import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 'screener_ssl.ssl' has no attribute {name!r}")
