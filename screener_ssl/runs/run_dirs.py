"""Runs read back from their run dirs: the pretrained backbone a finetune starts from, a classifier run.

A pretraining run dir holds ``schema.json`` and the encoder (``encoder.pt``, ``encoder.json``);
a classifier run (``supervised`` or a finetune, written by
:func:`screener_ssl.runs.finetune.write_classifier_run`) adds its head in :data:`HEAD_FILE`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from screener_ssl.data.windows import WindowSpec
from screener_ssl.ssl.backbones.base import SSLBackbone
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.finetune import PatternClassifier
from screener_ssl.ssl.schema import SchemaMismatchError, SSLSchema, diff_fields, load_schema

HEAD_FILE = "classifier_head.pt"


def load_pretrained_backbone(run_dir: Path, expected_spec: WindowSpec) -> tuple[SSLBackbone, SSLSchema]:
    """The backbone of a pretraining run and its schema; refuses a run built for another window spec."""
    run_dir = Path(run_dir)
    schema = load_schema(run_dir / "schema.json", expected_spec)
    encoder = load_encoder(run_dir)
    if encoder.normalization != "none":
        raise SchemaMismatchError(
            f"the encoder at {run_dir} expects {encoder.normalization!r} inputs; the windowed dataset feeds "
            f"per-window z-scored windows (normalization 'none' in encoder.json)"
        )
    differing = diff_fields(schema.encoder, encoder.backbone.config)
    if differing:
        raise SchemaMismatchError(
            f"{run_dir}: encoder.json does not match schema.json's encoder; differing fields:\n  "
            + "\n  ".join(differing)
        )
    if encoder.input_channels != expected_spec.n_features:
        raise SchemaMismatchError(
            f"the encoder at {run_dir} takes {encoder.input_channels} channels, the window spec has "
            f"{expected_spec.n_features}"
        )
    return encoder.backbone, schema


def load_classifier(run_dir: Path) -> PatternClassifier:
    """Rebuild the classifier of a run written by :func:`screener_ssl.runs.finetune.write_classifier_run`."""
    run_dir = Path(run_dir)
    path = run_dir / HEAD_FILE
    if not path.exists():
        raise FileNotFoundError(f"no classifier head at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    classifier = PatternClassifier(load_encoder(run_dir).backbone, tuple(state["patterns"]))
    classifier.head.load_state_dict(state["head"])
    return classifier.eval()
