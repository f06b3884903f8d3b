"""`freshrank forget` and `freshrank retention`: the privacy commands (heavy imports deferred,
as in orchestration/app/cli.py, so that `freshrank --help` stays quick)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from orchestration.settings import get_settings


@click.command()
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def forget(user_id: str, as_json: bool) -> None:
    """Remove USER_ID everywhere: warehouse, serving store, kept files (logged without the id)."""
    from orchestration.privacy.forget import forget_user

    try:
        report = forget_user(user_id, get_settings())
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="USER_ID") from error
    if as_json:
        click.echo(json.dumps(asdict(report), default=str))
        return
    click.echo(
        f"forgot the user at {report.forgotten_at:%Y-%m-%d %H:%M:%S} UTC: "
        f"{report.rows_removed} row(s) removed, {report.files_changed} file(s) rewritten"
        + (" (ids pseudonymised)" if report.pseudonymised else "")
    )
    for table, rows in {**report.warehouse_rows, **report.serving_rows}.items():
        click.echo(f"  {table}: {rows}")
    for path in report.unreadable_files:
        click.echo(f"  cannot read {path}: it may hold the user; check it by hand", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was deleted as JSON.")
def retention(as_json: bool) -> None:
    """Delete events older than FRESHRANK_RETENTION_DAYS now (the retention_job does it nightly)."""
    from orchestration.privacy.retention import apply_retention

    report = apply_retention(get_settings())
    if report is None:
        raise click.ClickException(
            "retention is off: set FRESHRANK_RETENTION_DAYS to the days events are kept"
        )
    if as_json:
        click.echo(json.dumps({**asdict(report), "rows_removed": report.rows_removed}, default=str))
        return
    click.echo(
        f"deleted what is older than {report.cutoff:%Y-%m-%d %H:%M:%S} UTC: "
        f"{report.rows_removed} row(s), {report.files_changed} file(s) changed"
    )
