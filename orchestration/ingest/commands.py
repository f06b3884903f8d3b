"""`freshrank ingest`: land the user's files, then load them through the ingest job in-process."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from orchestration.ingest.job import INGEST_JOB, ingest_definitions
from orchestration.ingest.landing import FileResult, land_file
from orchestration.instance import run_job_in_process
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse


def delivered_files(path: Path | str) -> list[Path]:
    """``path`` itself, or when it is a folder the files under it in name order: an export
    written as part files (Spark, Hive partitions, a warehouse's unload), without the metadata
    such tools write beside them (names starting with `_` or `.`: _SUCCESS, .crc checksums).
    A folder without such files stays itself, for the ingest to report."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    found = sorted(
        inner
        for inner in path.rglob("*")
        if inner.is_file()
        and not any(part.startswith(("_", ".")) for part in inner.relative_to(path).parts)
    )
    return found or [path]


def ingest_files(settings: Settings, files: Mapping[str, Iterable[Path | str]]) -> list[FileResult]:
    """Land each file (each file of a folder) and load it; one result per file, in the order
    given."""
    settings.ensure_dirs()
    files = {
        kind: [found for path in paths for found in delivered_files(path)]
        for kind, paths in files.items()
    }
    early: dict[Path, FileResult] = {}
    landed: list[tuple[Path, str, Path]] = []
    for kind, paths in files.items():
        for path in paths:
            try:
                if path.is_dir():
                    raise ValueError(f"cannot land the folder {path}: it holds no delivery files")
                landed.append((path, kind, land_file(path, kind, settings)))
            except (OSError, ValueError) as error:
                early[path] = FileResult(
                    file=str(path),
                    kind=kind,
                    status="rejected",
                    rows_read=0,
                    rows_loaded=0,
                    rows_quarantined=0,
                    message=str(error),
                    content_hash="",
                )
    by_landed_name: dict[str, FileResult] = {}
    if landed:
        result = run_job_in_process(INGEST_JOB, settings, definitions=ingest_definitions())
        if not result.success:
            raise RuntimeError(f"the ingest run {result.run_id} failed: see the Dagster UI or logs")
        by_landed_name = _ledger_results(settings, "batch_id = ?", [result.run_id])
        # A concurrent ingest or refresh that held the warehouse first loads every file waiting
        # in the landing folder, ours included: its ledger rows say how they went.
        elsewhere = [target.name for _, _, target in landed if target.name not in by_landed_name]
        if elsewhere:
            by_landed_name |= _ledger_results(
                settings, "list_contains(?, parse_filename(landed_path))", [elsewhere]
            )
    ordered: list[FileResult] = []
    landed_by_source = {source: (kind, target) for source, kind, target in landed}
    for paths in files.values():
        for path in paths:
            if path in early:
                ordered.append(early[path])
                continue
            target = landed_by_source[path][1]
            found = by_landed_name.get(target.name)
            if found is None:
                raise RuntimeError(
                    f"{path} was landed as {target} but no ingest run has loaded it yet"
                )
            ordered.append(replace(found, file=str(path)))
    return ordered


def _ledger_results(settings: Settings, condition: str, parameters: list) -> dict[str, FileResult]:
    """The ledger rows that meet ``condition`` (SQL with ``parameters``), by landed file name."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        rows = connection.execute(
            "select landed_path, kind, status, rows_read, rows_loaded, rows_quarantined, message, "
            f"content_hash from raw.ingest_ledger where {condition} order by processed_at",
            parameters,
        ).fetchall()
    return {
        Path(landed_path).name: FileResult(
            file=landed_path,
            kind=kind,
            status=status,
            rows_read=int(read),
            rows_loaded=int(loaded),
            rows_quarantined=int(quarantined),
            message=message or "",
            content_hash=content_hash,
        )
        for landed_path, kind, status, read, loaded, quarantined, message, content_hash in rows
    }
