"""Partitioned SSL assets: the schema each run is locked to, and the pretrained encoder."""


from pathlib import Path

import dagster as dg

from screener_ssl.data.dataset import load_clean_bars, load_dataset
from screener_ssl.defs.metadata import OWNERS, partitioned_check
from screener_ssl.defs.partitions import partition_parts
from screener_ssl.defs.resources import ScreenerSettings, source_version
from screener_ssl.store.fingerprint import fingerprint
from screener_ssl.ssl.checks import no_lookahead_report
from screener_ssl.ssl.encoder import load_encoder
from screener_ssl.ssl.snapshots import snapshot_encoders
from screener_ssl.runs.pretrain import build_schema, pretrain_partition, resolve_point
from screener_ssl.ssl.checks import judge_collapse
from screener_ssl.ssl.schema import SSLSchema, diff_fields
from screener_ssl.store.artifacts import atomic_write_text
from screener_ssl.tracking.latest import record_partition_run
from screener_ssl.tracking.names import check_name
from screener_ssl.store.environment import thread_variables

SSL_CODE_VERSION = source_version(
    "screener_ssl.ssl.objectives",
    "screener_ssl.ssl.backbones",
    "screener_ssl.ssl.trainer",
    "screener_ssl.ssl.snapshots",
    "screener_ssl.ssl.sampler",
    "screener_ssl.ssl.augment",
    "screener_ssl.ssl.render",
    "screener_ssl.ssl.minirocket",  # the fitted state's on-disk format
    "screener_ssl.runs.pretrain",
    "screener_ssl.runs.writer",
)


def schema_path(root: Path, objective: str, variant: str) -> Path:
    return root / "schemas" / f"{check_name(objective, 'objective')}__{check_name(variant, 'variant')}" / "schema.json"


def build_ssl_assets(partitions: dg.PartitionsDefinition) -> list:
    @dg.asset(
        group_name="ssl",
        kinds={"json"},
        owners=OWNERS,
        partitions_def=partitions,
        deps=[dg.AssetKey("sweep_file"), dg.AssetKey("windowed_dataset")],
        code_version=source_version("screener_ssl.ssl.schema", "screener_ssl.runs.sweep"),
    )
    def ssl_schema(context: dg.AssetExecutionContext, settings: ScreenerSettings) -> dg.MaterializeResult:
        """schema.json for one objective x variant: features, windows, censoring, augmentations, objective, encoder."""
        objective, variant = partition_parts(context)
        sweep = settings.load_sweep()
        # Resolve the objective's config so it is validated and recorded with every default.
        resolved = resolve_point(sweep.point(objective, variant))
        point_fingerprint = sweep.point_fingerprint(objective, variant)
        dataset = load_dataset(settings.root, with_labels=False)
        schema = build_schema(dataset, resolved)
        path = schema_path(settings.root, objective, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, schema.to_json())
        return dg.MaterializeResult(
            metadata={
                "fingerprint": schema.fingerprint,
                "spec_fingerprint": schema.spec_fingerprint,
                "point_fingerprint": point_fingerprint,
                "objective_config": dg.MetadataValue.json(schema.objective_config),
                "path": dg.MetadataValue.path(str(path)),
            },
            # The point's settings beyond the schema (steps, seeds, probe) change the version too.
            data_version=dg.DataVersion(fingerprint(schema.fingerprint, point_fingerprint)[:32]),
        )

    @dg.asset(
        group_name="ssl",
        kinds={"torch"},
        owners=OWNERS,
        partitions_def=partitions,
        # pattern_labels: only the supervised baseline reads them, but a dep is per asset, and
        # over-reporting staleness is safer than missing it.
        deps=[dg.AssetKey("sweep_file"), dg.AssetKey("ssl_schema"), dg.AssetKey("windowed_dataset"),
              dg.AssetKey("pattern_labels")],
        code_version=SSL_CODE_VERSION,
        pool="torch",
        check_specs=[
            # Blocking: a partition whose encoder sees the future or mismatches its schema stops
            # its own downstream (probe, finetune) in the same run; other partitions run on. Each
            # check carries the partitions, so every execution records the partition it judged.
            partitioned_check("no_lookahead", "pretrained_encoder", partitions, blocking=True,
                              description="Perturb bars after t* and the decision bar's non-open fields: embedding unchanged"),
            partitioned_check("no_collapse", "pretrained_encoder", partitions,
                              description="Per-dimension std and effective rank of held-out embeddings"),
            partitioned_check("schema_matches_dataset", "pretrained_encoder", partitions, blocking=True,
                              description="Encoder schema fingerprint equals ssl_schema's and the dataset's"),
        ],
    )
    def pretrained_encoder(context: dg.AssetExecutionContext, settings: ScreenerSettings) -> dg.MaterializeResult:
        """Encoder weights + run artifacts for one objective x variant, trained on the train split."""
        objective, variant = partition_parts(context)
        sweep = settings.load_sweep()
        resolved = resolve_point(sweep.point(objective, variant))
        point = resolved.point
        dataset = load_dataset(settings.root, with_labels=resolved.entry.needs_labels)
        outcome = pretrain_partition(
            dataset,
            resolved,
            settings.root,
            run_context={
                "dagster_run_id": context.run_id,
                "dagster_partition": context.partition_key,
                "sweep_point_fingerprint": sweep.point_fingerprint(objective, variant),
            },
            log=context.log.info,
            environ=thread_variables(),
        )
        record_partition_run(settings.root, objective, variant, outcome.run_dir, outcome.data_version)

        encoder = load_encoder(outcome.run_dir)
        bars = load_clean_bars(settings.root)
        lookahead = no_lookahead_report(encoder, bars, dataset.spec, seed=point.train.seed)
        # The budget curve's encoder snapshots are probed too: each must be as causal as the final encoder.
        snapshot_lookahead = {
            step: no_lookahead_report(snapshot, bars, dataset.spec, seed=point.train.seed)
            for step, snapshot in snapshot_encoders(outcome.run_dir, encoder).items()
        }
        expected = schema_path(settings.root, objective, variant)
        schema_diffs: list[str] = []
        if expected.exists():
            schema_diffs = diff_fields(SSLSchema.from_json(expected.read_text()), outcome.schema)
        else:
            schema_diffs = [f"{expected} missing: materialize ssl_schema for {objective}|{variant}"]
        if outcome.schema.dataset_fingerprint != dataset.dataset_fingerprint:
            schema_diffs.append("dataset_fingerprint differs from the windowed dataset's")
        metrics = outcome.result
        collapsed = judge_collapse(outcome.collapse, resolved.entry.collapse_rule)
        return dg.MaterializeResult(
            metadata={
                "run_dir": dg.MetadataValue.path(str(outcome.run_dir)),
                "model_type": resolved.model_type,
                "steps": metrics.steps,
                "first_loss": metrics.first_loss,
                "final_loss": metrics.final_loss,
                "windows_per_s": round(metrics.windows_per_s, 1),
                "effective_rank": outcome.collapse["effective_rank"],
                "schema_fingerprint": outcome.schema.fingerprint,
            },
            data_version=dg.DataVersion(outcome.data_version),
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_lookahead",
                    passed=lookahead["passed"] and all(r["passed"] for r in snapshot_lookahead.values()),
                    metadata={k: v for k, v in lookahead.items() if k != "passed"} | {
                        "snapshots_checked": len(snapshot_lookahead),
                        "snapshots_failed": dg.MetadataValue.json(
                            [step for step, r in snapshot_lookahead.items() if not r["passed"]]
                        ),
                    },
                ),
                dg.AssetCheckResult(
                    check_name="no_collapse",
                    passed=not collapsed,
                    metadata={
                        "effective_rank": outcome.collapse["effective_rank"],
                        "std_min": outcome.collapse["std_min"],
                        "std_mean": outcome.collapse["std_mean"],
                        "dead_dim_share": outcome.collapse["dead_dim_share"],
                        "thresholds": dg.MetadataValue.json(outcome.collapse["thresholds"]),
                    },
                ),
                dg.AssetCheckResult(
                    check_name="schema_matches_dataset",
                    passed=not schema_diffs,
                    metadata={"differences": dg.MetadataValue.json(schema_diffs)},
                ),
            ],
        )

    return [ssl_schema, pretrained_encoder]

