"""What the UI shows, through the webserver's own GraphQL schema executed in-process on a tiny sweep."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from screener_ssl.defs.resources import ScreenerSettings
from screener_ssl_tests.defs.test_staleness import POINTS, _defs, _materialize, build_sweep_state

# The definitions the code location loads: the project's graph for the settings in the environment.
DEFS_FILE = """
from screener_ssl_tests.defs.project import load_defs

defs = load_defs()
"""

ASSET_NODES = """
query ($keys: [AssetKeyInput!], $partitions: [String!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    isPartitioned
    partitionKeys
    partitionStats { numPartitions numMaterialized }
    staleStatus
    staleStatusByPartition(partitions: $partitions)
    staleCausesByPartition(partitions: $partitions) { key { path } reason }
  }
}
"""

STALE_STATUS = """
query ($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) { assetKey { path } staleStatus staleCauses { key { path } reason } }
}
"""

LATEST_METADATA = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetMaterializations(limit: 1) {
        metadataEntries {
          __typename
          label
          ... on TableMetadataEntry { table { records schema { columns { name } } } }
        }
      }
    }
  }
}
"""


@contextmanager
def graphql_context(instance: dg.DagsterInstance, tmp_path: Path):
    """A request context over an in-process code location, as the webserver builds one per request."""
    defs_file = tmp_path / "ui_defs.py"
    defs_file.write_text(DEFS_FILE)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=str(defs_file), attribute="defs", working_directory=str(tmp_path))
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
        yield process_context.create_request_context()


def _nodes(context, keys, partitions=None, query=ASSET_NODES) -> dict[str, dict]:
    result = execute_dagster_graphql(context, query, {"keys": [{"path": [k]} for k in keys], "partitions": partitions})
    return {node["assetKey"]["path"][0]: node for node in result.data["assetNodes"]}


def test_the_ui_lists_the_sweeps_partitions_and_shows_every_dependent_partition_stale(tiny_env, tmp_path):
    sweep_keys = ScreenerSettings.from_env().load_sweep().partition_keys()
    with dg.instance_for_test() as instance:
        build_sweep_state(_defs(), instance)
        sweep = Path(tiny_env["SCREENER_SSL_SWEEP"])
        sweep.write_text(sweep.read_text().replace("label_horizon: 5", "label_horizon: 4"))
        _materialize(_defs(), instance, ["windowed_dataset"])

        with graphql_context(instance, tmp_path) as context:
            partitioned = ["sweep_file", "ssl_schema", "pretrained_encoder", "probe_metrics"]
            nodes = _nodes(context, partitioned, POINTS)
            for key in partitioned:
                assert nodes[key]["isPartitioned"] and nodes[key]["partitionKeys"] == sweep_keys, key
            # A finetune exists only where the objective has weights: raw_features has no partition to fill.
            finetunable = [k for k in sweep_keys if not k.startswith("raw_features|")]
            finetuned = _nodes(context, ["finetuned_classifier"], ["masked_recon|base"])["finetuned_classifier"]
            assert finetuned["partitionKeys"] == finetunable and "raw_features|base" in sweep_keys
            assert finetuned["staleStatusByPartition"] == ["MISSING"]
            encoder = nodes["pretrained_encoder"]
            assert encoder["partitionStats"] == {"numPartitions": len(sweep_keys), "numMaterialized": len(POINTS)}
            for key in ["ssl_schema", "pretrained_encoder", "probe_metrics"]:
                assert nodes[key]["staleStatusByPartition"] == ["STALE"] * len(POINTS), key
                for causes in nodes[key]["staleCausesByPartition"]:  # root causes, as the UI lists them
                    assert {"path": ["windowed_dataset"]} in [c["key"] for c in causes], key
            unrun = [k for k in sweep_keys if k not in POINTS]
            assert _nodes(context, ["pretrained_encoder"], unrun)["pretrained_encoder"]["staleStatusByPartition"] == (
                ["MISSING"] * len(unrun)
            )

            index = _nodes(context, ["experiment_index", "windowed_dataset"], query=STALE_STATUS)
            assert index["experiment_index"]["staleStatus"] == "STALE"  # the graph card's badge
            assert {"path": ["windowed_dataset"]} in [c["key"] for c in index["experiment_index"]["staleCauses"]]
            assert index["windowed_dataset"]["staleStatus"] == "FRESH"


def test_the_ui_shows_the_leaderboard_as_a_table(tiny_env, tmp_path):
    with dg.instance_for_test() as instance:
        defs = _defs()
        _materialize(defs, instance, ["ohlcv_bars", "shape_features", "windowed_dataset", "pattern_labels"])
        _materialize(defs, instance, ["sweep_file", "ssl_schema", "pretrained_encoder", "probe_metrics"], "raw_features|base")
        _materialize(defs, instance, ["experiment_index"])
        with graphql_context(instance, tmp_path) as context:
            result = execute_dagster_graphql(context, LATEST_METADATA, {"key": {"path": ["experiment_index"]}})
        [materialization] = result.data["assetNodeOrError"]["assetMaterializations"]
        entries = {e["label"]: e for e in materialization["metadataEntries"]}
        board = entries["leaderboard"]
        assert board["__typename"] == "TableMetadataEntry"
        records = [json.loads(r) for r in board["table"]["records"]]
        assert [r["objective"] for r in records] == ["raw_features"]
        assert {"objective", "variant"} <= {c["name"] for c in board["table"]["schema"]["columns"]}
