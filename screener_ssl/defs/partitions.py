"""The sweep's partitions: one static key per sweep point, read ``objective|variant``.

Only the points the sweep file defines exist. A product of an objective and a variant
dimension would also define every combination the sweep never runs (``vicreg|full`` where
vicreg has only ``base``), so the UI would count them as missing work and the fill
percentage would be wrong.

Static keys built from the sweep rather than dynamic partitions: the definitions are loaded
from the sweep file every time the code location loads, so adding a variant to the file and
reloading makes its key appear, with no sensor to keep a dynamic set in step and no stale
keys left in the instance after a point is removed. The keys keep the ``objective|variant``
form the command line (``--partition "vicreg|base"``), schedules and run tags already use.
"""

from __future__ import annotations

import dagster as dg

from screener_ssl.runs.sweep import Sweep


def sweep_partitions(sweep: Sweep) -> dg.StaticPartitionsDefinition:
    """Exactly the sweep's points, as ``objective|variant`` keys in the sweep file's order."""
    keys = sweep.partition_keys()
    if not keys:
        raise ValueError(f"sweep {sweep.source} defines no (objective, variant) points to partition by")
    return dg.StaticPartitionsDefinition(keys)


def finetunable_keys(keys: list[str]) -> list[str]:
    """The partitions whose objective has weights to finetune (the registry's ``finetunable``)."""
    from screener_ssl.runs.finetune import is_finetunable

    return [k for k in keys if is_finetunable(split_partition_key(k)[0])]


def finetune_partitions(partitions: dg.StaticPartitionsDefinition) -> dg.StaticPartitionsDefinition:
    """The sweep's finetunable partitions (:func:`finetunable_keys`).

    ``finetuned_classifier`` and its job are partitioned by these only, so the UI counts no
    partition it can never fill (raw_features, shape_free, minirocket have no weights).
    """
    return dg.StaticPartitionsDefinition(finetunable_keys(partitions.get_partition_keys()))


def split_partition_key(key: str) -> tuple[str, str]:
    """``"vicreg|base"`` -> ``("vicreg", "base")``; a key of another form is an error naming it."""
    objective, sep, variant = key.partition("|")
    if not sep or not objective or not variant or "|" in variant:
        raise ValueError(f"partition key {key!r} is not of the form 'objective|variant'")
    return objective, variant


def partition_parts(context: dg.AssetExecutionContext) -> tuple[str, str]:
    return split_partition_key(context.partition_key)
