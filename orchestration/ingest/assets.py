"""Raw tables: landing files read into the warehouse, with their ledger and quarantine."""

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, ResourceParam, asset

from orchestration.ingest.landing import FileResult, ensure_raw_tables, load_pending
from orchestration.serving.recent_events import remember_loaded_events
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse, warehouse_writer

INGEST_GROUP = "ingest"


def _load_kind(context: AssetExecutionContext, settings: Settings, kind: str) -> MaterializeResult:
    settings.ensure_dirs()
    with warehouse_writer(settings.warehouse_path):
        ensure_raw_tables(settings.warehouse_path)
        results = load_pending(kind, settings, batch_id=context.run_id)
    if kind == "events":
        # Reads reflect the load at once (request-time personalisation), before any publish.
        recent = remember_loaded_events(settings, context.run_id)
        context.log.info(f"{recent} recent event(s) recorded in the serving store")
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        (table_rows,) = connection.execute(f"select count(*) from raw.{kind}").fetchall()[0]
        (quarantined_total,) = connection.execute(
            "select count(*) from raw.quarantine where kind = ?", [kind]
        ).fetchall()[0]
    for result in results:
        log = context.log.warning if result.status == "rejected" else context.log.info
        log(f"{result.file}: {result.status}. {result.message}".strip())
    return MaterializeResult(metadata=_metadata(results, table_rows, quarantined_total))


def _metadata(results: list[FileResult], table_rows: int, quarantined_total: int) -> dict:
    files = pd.DataFrame([result.to_dict() for result in results])
    metadata: dict[str, object] = {
        "files": len(results),
        "files_rejected": sum(result.status == "rejected" for result in results),
        "rows_read": sum(result.rows_read for result in results),
        "rows_loaded": sum(result.rows_loaded for result in results),
        "rows_quarantined": sum(result.rows_quarantined for result in results),
        "table_rows": table_rows,
        "quarantine_rows_total": quarantined_total,
    }
    if not files.empty:
        metadata["deliveries"] = MetadataValue.md(
            files.drop(columns=["kind"]).to_markdown(index=False)
        )
    return metadata


@asset(group_name=INGEST_GROUP, pool="warehouse")
def raw_items(
    context: AssetExecutionContext, settings: ResourceParam[Settings]
) -> MaterializeResult:
    """Item catalog rows from the landing zone (latest delivery of an item wins downstream)."""
    return _load_kind(context, settings, "items")


@asset(group_name=INGEST_GROUP, pool="warehouse")
def raw_events(
    context: AssetExecutionContext, settings: ResourceParam[Settings]
) -> MaterializeResult:
    """Behaviour events from the landing zone; rows that break the contract are quarantined."""
    return _load_kind(context, settings, "events")
