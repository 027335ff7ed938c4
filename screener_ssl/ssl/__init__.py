"""Self-supervised pretraining: backbones, objectives, augmentations, trainer, and the array API."""

from screener_ssl.ssl.api import pretrain
from screener_ssl.ssl.encoder import Encoder, load_encoder

__all__ = ["Encoder", "load_encoder", "pretrain"]
