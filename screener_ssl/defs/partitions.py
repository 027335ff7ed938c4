"""Objective x variant partitions, from the sweep file (keys read `objective|variant`)."""

from __future__ import annotations

import dagster as dg

from screener_ssl.runs.sweep import Sweep


def sweep_partitions(sweep: Sweep) -> dg.MultiPartitionsDefinition:
    # Dimension names sort alphabetically, so keys read objective|variant.
    return dg.MultiPartitionsDefinition(
        {
            "objective": dg.StaticPartitionsDefinition(sweep.objectives),
            "variant": dg.StaticPartitionsDefinition(sweep.variants),
        }
    )


def partition_parts(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["objective"], keys["variant"]
