"""Rules every list must meet before it is published, counted where the lists are staged (the
blocking asset check and the experiments' lists apply them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from ml.constants import NON_CONSUMING_EVENT_TYPES


@dataclass(frozen=True)
class ListProblems:
    """Counts of users (or rows) breaking each rule, with a few examples."""

    duplicate_items: int = 0
    unsorted_scores: int = 0
    broken_ranks: int = 0
    consumed_items: int = 0
    short_lists: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicate_items
            or self.unsorted_scores
            or self.broken_ranks
            or self.consumed_items
            or self.short_lists
        )

    def metadata(self) -> dict[str, object]:
        return {
            "users_with_duplicate_items": self.duplicate_items,
            "users_with_unsorted_scores": self.unsorted_scores,
            "users_with_broken_ranks": self.broken_ranks,
            "consumed_items_listed": self.consumed_items,
            "users_with_short_lists": self.short_lists,
            "examples": "; ".join(self.examples) or "none",
        }


# Temporary tables of one check (a read-only connection may write these).
_CONSUMED, _CATALOG = "list_check_consumed", "list_check_catalog"


def find_list_problems(
    connection: duckdb.DuckDBPyConnection, lists: str, consumed: str, available: str, k: int
) -> ListProblems:
    """Check lists against the publishing rules, in the database that holds them.

    ``lists``, ``consumed`` and ``available`` name relations of ``connection`` (tables, views
    or registered frames): lists (user_id, rank, item_id, score); consumed (user_id, item_id),
    pairs that must never be recommended back; available (item_id), the recommendable catalog,
    which bounds how long a list can be. A user's list must hold min(k, recommendable items
    the user has not consumed) rows. Counted in SQL: a full build's ten million rows never
    come into this process.
    """

    def problems(query: str, values: str, order: str) -> tuple[int, list]:
        """(rows of ``query``, ``values`` of its first three rows by ``order``): one pass."""
        count, first = connection.execute(
            f"select count(*), (list({values} order by {order}))[1:3] from ({query})"
        ).fetchone()
        return int(count), list(first or [])

    # The consumed pairs and the catalog are read once: several rules compare against them,
    # and at ten million events each read is a scan of every interaction.
    connection.execute(
        f"create or replace temp table {_CONSUMED} as select distinct user_id, item_id "
        f"from {consumed}"
    )
    connection.execute(
        f"create or replace temp table {_CATALOG} as "
        f"select distinct cast(item_id as varchar) as item_id from {available}"
    )
    try:
        duplicate_items, first = problems(
            f"select distinct user_id from {lists} group by user_id, item_id having count(*) > 1",
            "user_id",
            "user_id",
        )
        examples = [f"user {user} lists an item twice" for user in first]
        unsorted_scores, first = problems(
            "select distinct user_id from (select user_id, score - lag(score) over "
            f"(partition by user_id order by rank) as step from {lists}) where step > 1e-12",
            "user_id",
            "user_id",
        )
        examples += [f"user {user} has scores rising with rank" for user in first]
        broken_ranks, first = problems(
            "select distinct user_id from (select user_id, rank, row_number() over "
            f"(partition by user_id order by rank) as expected from {lists}) "
            "where rank != expected",
            "user_id",
            "user_id",
        )
        examples += [f"user {user} has ranks that are not 1..n" for user in first]
        consumed_items, first = problems(
            f"select listed.user_id, listed.rank, listed.item_id from {lists} listed "
            f"join {_CONSUMED} eaten using (user_id, item_id)",
            "[cast(user_id as varchar), cast(item_id as varchar)]",
            "user_id, rank",
        )
        examples += [f"user {user} was recommended consumed item {item}" for user, item in first]
        short_lists, first = problems(
            f"""
            with lengths as (select user_id, count(*) as length from {lists} group by user_id),
            eaten as (
                select user_id, count(distinct item_id) as items from {_CONSUMED}
                where cast(item_id as varchar) in (select item_id from {_CATALOG})
                group by user_id
            )
            select * from (
                select lengths.user_id, length, least(
                    (select count(*) from {_CATALOG}) - coalesce(eaten.items, 0), {int(k)}
                ) as allowed
                from lengths left join eaten using (user_id)
            ) where length < allowed
            """,
            "[cast(user_id as varchar), cast(length as varchar), cast(allowed as varchar)]",
            "user_id",
        )
        examples += [
            f"user {user} has {length} items where {allowed} were possible"
            for user, length, allowed in first
        ]
    finally:
        connection.execute(f"drop table if exists {_CONSUMED}")
        connection.execute(f"drop table if exists {_CATALOG}")
    return ListProblems(
        duplicate_items=duplicate_items,
        unsorted_scores=unsorted_scores,
        broken_ranks=broken_ranks,
        consumed_items=consumed_items,
        short_lists=short_lists,
        examples=examples,
    )


def warehouse_list_problems(
    connection: duckdb.DuckDBPyConnection, lists: str, k: int
) -> ListProblems:
    """find_list_problems for the lists in relation ``lists`` of the warehouse: against what
    their users consumed (marts.interactions) and the available catalog (marts.items)."""
    non_consuming = ", ".join(f"'{event_type}'" for event_type in NON_CONSUMING_EVENT_TYPES)
    consumed = (
        "(select user_id, item_id from marts.interactions "
        f"where event_type not in ({non_consuming}) "
        f"and user_id in (select user_id from {lists}))"
    )
    available = "(select item_id from marts.items where coalesce(available, true))"
    return find_list_problems(connection, lists, consumed, available, k)
