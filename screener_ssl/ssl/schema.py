"""The schema that locks an encoder to the data it was trained on.

``schema.json`` states everything a downstream user needs to rebuild the exact
inputs: feature names, normalization, window_max, crop lengths, censoring and
decision-index regime, augmentation ranges, the objective and its config, and
the encoder config. Its fingerprint is the sha256 of its canonical JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from screener_ssl.data.windows import WindowSpec
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.ssl.augment import AugmentConfig
from screener_ssl.ssl.backbones.base import BackboneConfig

SCHEMA_VERSION = 1


class SchemaMismatchError(ValueError):
    """Raised when an artifact's schema differs from the one expected; lists the differing fields."""


class SSLSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    window_spec: WindowSpec
    spec_fingerprint: str  # of window_spec alone: what an encoder's inputs must match
    dataset_fingerprint: str  # spec + bars the encoder was trained on (provenance)
    augmentation: AugmentConfig
    objective: str
    objective_config: dict[str, Any]
    encoder: BackboneConfig

    @property
    def fingerprint(self) -> str:
        return fingerprint(self)

    def to_json(self) -> str:
        payload = self.model_dump(mode="json")
        payload["fingerprint"] = self.fingerprint
        return json.dumps(payload, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "schema.json") -> "SSLSchema":
        payload = json.loads(text)
        stored = payload.pop("fingerprint", None)
        version = payload.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaMismatchError(f"{source}: schema_version {version}, this code reads {SCHEMA_VERSION}")
        schema = cls.model_validate(payload)
        if stored is not None and stored != schema.fingerprint:
            raise SchemaMismatchError(f"{source}: stored fingerprint {stored[:12]} does not match its content")
        return schema


def diff_fields(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like trees differ, as 'path: expected X, found Y'."""
    if isinstance(expected, BaseModel):
        expected = expected.model_dump(mode="json")
    if isinstance(actual, BaseModel):
        actual = actual.model_dump(mode="json")
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in expected:
                out.append(f"{path}: unexpected (found {actual[key]!r})")
            elif key not in actual:
                out.append(f"{path}: missing (expected {expected[key]!r})")
            else:
                out.extend(diff_fields(expected[key], actual[key], path))
        return out
    return [] if expected == actual else [f"{prefix or '<root>'}: expected {expected!r}, found {actual!r}"]


def require_spec(expected: WindowSpec, actual: WindowSpec, what: str) -> None:
    """Refuse ``what`` when its window spec differs from the expected one, naming each field."""
    differing = diff_fields(expected, actual)
    if differing:
        raise SchemaMismatchError(
            f"{what} was built for a different window spec; differing fields:\n  " + "\n  ".join(differing)
        )


def load_schema(path: Path, expected_spec: WindowSpec | None = None) -> SSLSchema:
    """Read a schema.json; with ``expected_spec``, refuse a mismatch listing the differing fields."""
    if not path.exists():
        raise FileNotFoundError(f"no schema at {path}")
    schema = SSLSchema.from_json(path.read_text(), source=str(path))
    if expected_spec is not None:
        require_spec(expected_spec, schema.window_spec, f"the encoder at {path.parent}")
    return schema
