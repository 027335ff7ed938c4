"""Causal encoder families behind the :class:`SSLBackbone` contract (one module each)."""

from screener_ssl.ssl._discover import import_submodules
from screener_ssl.ssl.backbones.base import BackboneConfig, SSLBackbone, build_backbone, register_backbone

import_submodules(__name__)

__all__ = ["BackboneConfig", "SSLBackbone", "build_backbone", "register_backbone"]
