"""`freshrank api-key create|list|revoke`: the HTTP API's keys, kept hashed in the serving store."""

from __future__ import annotations

import click

from orchestration.settings import get_settings


@click.group("api-key")
def api_key() -> None:
    """Create, list and revoke the HTTP API's keys."""


@api_key.command()
@click.option("--name", required=True, help="Who uses the key, e.g. checkout-service.")
@click.option(
    "--scope",
    type=click.Choice(["read", "write"]),
    default="write",
    show_default=True,
    help="write: POST /events and reads; read: GET endpoints only.",
)
def create(name: str, scope: str) -> None:
    """Create a key; the key is printed once and cannot be shown again."""
    import sqlalchemy as sa

    from orchestration.serving.access import create_key

    try:
        key_id, key = create_key(sa.create_engine(get_settings().serving_url), name, scope)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    click.echo(f"created key {key_id} ({name}, scope {scope}); store it now, it is not kept:")
    click.echo(key)


@api_key.command("list")
def list_command() -> None:
    """Every key: id, name, scope, when created and revoked (never the secret)."""
    import sqlalchemy as sa

    from orchestration.serving.access import list_keys

    keys = list_keys(sa.create_engine(get_settings().serving_url))
    if not keys:
        click.echo(
            "no API keys (writes are open while none exists, "
            "unless FRESHRANK_API_REQUIRE_KEYS=always)"
        )
    for key in keys:
        state = f"revoked {key['revoked_at']:%Y-%m-%d %H:%M}" if key["revoked_at"] else "active"
        click.echo(
            f"{key['key_id']}  {key['scope']:5}  {state:22}  created "
            f"{key['created_at']:%Y-%m-%d %H:%M}  {key['name']}"
        )


@api_key.command()
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke a key by its id (running APIs refuse it within seconds)."""
    import sqlalchemy as sa

    from orchestration.serving.access import revoke_key

    if not revoke_key(sa.create_engine(get_settings().serving_url), key_id):
        raise click.ClickException(
            f"no active key with id {key_id!r} (see `freshrank api-key list`)"
        )
    click.echo(f"revoked key {key_id}")
