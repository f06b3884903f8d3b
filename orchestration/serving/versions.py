"""Versions of the serving store's large tables: written in chunks, switched in one transaction.

A versioned table (each user's list and candidates, each item's related items and title, the
experiment lists) has an integer ``version`` column leading its primary key, and
``serving_versions`` names, per table, the version readers get. Every read filters on it in
the same statement (``WHERE version = (SELECT version FROM serving_versions WHERE ...)``), so
one statement reads one snapshot: the old version or the new one, never a mix of both.

A full publish writes a new version a chunk at a time, each chunk its own short transaction
(one transaction of millions of rows would hold SQLite's write lock, which API writes wait
for, and bloat PostgreSQL), switches every table it replaces in one short transaction, then
deletes the replaced versions' rows a chunk at a time. ``serving_publishes`` numbers the
versions and records which tables each replaces and when it was switched; a publish that
failed or was killed leaves rows nobody reads, deleted by its abort or by the next switch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

VERSION = "version"
TABLE_NAME = "table_name"
POINTERS_TABLE_NAME = "serving_versions"
PUBLISHES_TABLE_NAME = "serving_publishes"
_TABLE_LIST_SEPARATOR = ","
# Rows per transaction of a full publish: small enough that the SQLite write lock is held for
# a fraction of a second, large enough that a commit per chunk costs little.
DEFAULT_CHUNK_ROWS = 50_000

_metadata = sa.MetaData()
pointers_table = sa.Table(
    POINTERS_TABLE_NAME,
    _metadata,
    sa.Column(TABLE_NAME, sa.String(100), primary_key=True),
    sa.Column(VERSION, sa.Integer, nullable=False),  # the version readers get
)
publishes_table = sa.Table(
    PUBLISHES_TABLE_NAME,
    _metadata,
    sa.Column(VERSION, sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tables", sa.String(1000), nullable=False),  # the tables it replaces, comma-separated
    sa.Column("begun_at", sa.DateTime, nullable=False),  # naive UTC, as the times below
    sa.Column("switched_at", sa.DateTime, nullable=True),  # None: never served (yet)
    sa.Column("discarded_at", sa.DateTime, nullable=True),  # failed: never to be served
)


class StaleVersion(RuntimeError):
    """A newer version was switched in while this one was written: serving this one would go
    back in time (and the newer one's switch may already have deleted some of its rows)."""


def version_column() -> sa.Column:
    """The column that leads a versioned table's primary key (the index every read uses)."""
    return sa.Column(VERSION, sa.Integer, primary_key=True, autoincrement=False)


def served_version(table: sa.Table) -> sa.ScalarSelect:
    """``table``'s served version, as a subquery of the statement that reads it."""
    return (
        sa.select(pointers_table.c[VERSION])
        .where(pointers_table.c[TABLE_NAME] == table.name)
        .scalar_subquery()
    )


def served(table: sa.Table) -> sa.ColumnElement[bool]:
    """True for the rows of ``table``'s served version, looked up by the read itself."""
    return table.c[VERSION] == served_version(table)


def unversioned_columns(table: sa.Table) -> list[sa.Column]:
    """A versioned table's columns as readers want them: without the version."""
    return [column for column in table.c if column.name != VERSION]


def prepare(engine: sa.Engine, metadata: sa.MetaData, versioned: Sequence[sa.Table]) -> None:
    """Create what is missing (``metadata``'s tables, the version tables, a version-0 pointer
    per versioned table), after upgrading versioned tables made before versions existed."""
    for table in versioned:
        _upgrade_unversioned(engine, table)
    _metadata.create_all(engine)
    metadata.create_all(engine)
    try:
        with engine.begin() as connection:
            present = set(connection.execute(sa.select(pointers_table.c[TABLE_NAME])).scalars())
            missing = [table.name for table in versioned if table.name not in present]
            if missing:
                rows = [{TABLE_NAME: name, VERSION: 0} for name in missing]
                connection.execute(pointers_table.insert(), rows)
    except sa.exc.IntegrityError:
        pass  # another process opening the store added them first


def _lacks_version(inspector: sa.Inspector, table: sa.Table) -> bool:
    if not inspector.has_table(table.name):
        return False
    return VERSION not in {column["name"] for column in inspector.get_columns(table.name)}


def _upgrade_unversioned(engine: sa.Engine, table: sa.Table) -> None:
    """Rebuild a table made before versions with the version column, its rows becoming version
    0 (which a new pointer serves), in one transaction: a store keeps serving across upgrade."""
    if not _lacks_version(sa.inspect(engine), table):
        return
    quote = engine.dialect.identifier_preparer.quote
    old_name = f"{table.name}_unversioned"
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            # Waits for another upgrading process; also makes pysqlite run the DDL inside it.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"LOCK TABLE {quote(table.name)} IN ACCESS EXCLUSIVE MODE")
        if not _lacks_version(sa.inspect(connection), table):
            return  # another process upgraded it while this one waited
        connection.exec_driver_sql(f"ALTER TABLE {quote(table.name)} RENAME TO {quote(old_name)}")
        table.create(connection)
        names = [column.name for column in unversioned_columns(table)]
        old = sa.table(old_name, *(sa.column(name) for name in names))
        copied = sa.select(sa.literal(0), *(old.c[name] for name in names))
        connection.execute(table.insert().from_select([VERSION, *names], copied))
        connection.exec_driver_sql(f"DROP TABLE {quote(old_name)}")


def current_versions(connection: sa.Connection, tables: Iterable[sa.Table]) -> dict[str, int]:
    """{table name: served version}, locked until the caller's transaction ends on databases
    that lock rows (PostgreSQL), so that no switch lands between this read and its writes."""
    names = [table.name for table in tables]
    query = (
        sa.select(pointers_table.c[TABLE_NAME], pointers_table.c[VERSION])
        .where(pointers_table.c[TABLE_NAME].in_(names))
        .with_for_update()
    )
    return dict(connection.execute(query).tuples().all())


@dataclass(frozen=True)
class NewVersion:
    """A version of some versioned tables being written; readers get it once switched."""

    engine: sa.Engine
    number: int
    tables: tuple[sa.Table, ...]
    chunk_rows: int

    @classmethod
    def begin(cls, engine: sa.Engine, tables: Sequence[sa.Table], chunk_rows: int) -> NewVersion:
        """Number a new version of ``tables`` (unique even when two publishes begin at once)."""
        if chunk_rows < 1:
            raise ValueError(f"a publish chunk needs at least one row, not {chunk_rows}")
        listed = _TABLE_LIST_SEPARATOR.join(table.name for table in tables)
        with engine.begin() as connection:
            begun = connection.execute(
                publishes_table.insert().values(tables=listed, begun_at=_now())
            )
            (number,) = begun.inserted_primary_key
        return cls(engine, int(number), tuple(tables), chunk_rows)

    @classmethod
    def resume(
        cls, engine: sa.Engine, number: int, known: Sequence[sa.Table], chunk_rows: int
    ) -> NewVersion:
        """A version begun earlier (by another process), with the tables it replaces."""
        query = sa.select(publishes_table.c.tables).where(publishes_table.c[VERSION] == number)
        with engine.connect() as connection:
            listed = connection.execute(query).scalar_one_or_none()
        if listed is None:
            raise ValueError(f"the serving store has no version {number} to publish")
        by_name = {table.name: table for table in known}
        tables = tuple(by_name[name] for name in listed.split(_TABLE_LIST_SEPARATOR))
        return cls(engine, number, tables, chunk_rows)

    def replaces(self, table: sa.Table) -> bool:
        return table in self.tables

    def insert(self, table: sa.Table, columns: Mapping[str, Sequence[object]]) -> None:
        """Add one chunk of rows, given column by column without the version column (see
        bulk_insert), in one transaction."""
        if not self.replaces(table):
            raise ValueError(f"version {self.number} does not replace {table.name}")
        if row_count(columns):
            with self.engine.begin() as connection:
                bulk_insert(connection, table, with_version(columns, self.number))

    def switch(self, connection: sa.Connection) -> None:
        """Serve this version of its tables from the end of the caller's transaction (which
        replaces the small tables beside them). Switching it again changes nothing."""
        recorded = connection.execute(
            publishes_table.update()
            .where(
                publishes_table.c[VERSION] == self.number, publishes_table.c.discarded_at.is_(None)
            )
            .values(switched_at=_now())
        )
        if not recorded.rowcount:
            raise ValueError(f"serving version {self.number} was discarded: publish a new one")
        for table in self.tables:
            moved = connection.execute(
                pointers_table.update()
                .where(
                    pointers_table.c[TABLE_NAME] == table.name,
                    pointers_table.c[VERSION] <= self.number,
                )
                .values({VERSION: self.number})
            )
            if not moved.rowcount:
                raise StaleVersion(
                    f"a newer version of {table.name} was published while version "
                    f"{self.number} was written; the newer one stays served"
                )

    def drop_replaced(self) -> None:
        """Delete the rows of older versions (the one served before, and any publish that
        never switched), a chunk per transaction; a newer version being written is left."""
        for table in self.tables:
            _delete_in_chunks(self.engine, table, table.c[VERSION] < self.number, self.chunk_rows)

    def discard(self) -> None:
        """Mark this version never to be served and delete its rows, a chunk per transaction
        (its publish failed). A version already served is left as it is."""
        with self.engine.begin() as connection:
            marked = connection.execute(
                publishes_table.update()
                .where(
                    publishes_table.c[VERSION] == self.number,
                    publishes_table.c.switched_at.is_(None),
                )
                .values(discarded_at=_now())
            )
        if marked.rowcount:
            for table in self.tables:
                condition = table.c[VERSION] == self.number
                _delete_in_chunks(self.engine, table, condition, self.chunk_rows)


def _delete_in_chunks(
    engine: sa.Engine, table: sa.Table, condition: sa.ColumnElement[bool], chunk_rows: int
) -> None:
    """Delete the rows that meet ``condition``, at most ``chunk_rows`` per transaction."""
    delete = _chunk_delete(engine.dialect.name, table, condition, chunk_rows)
    deleted = chunk_rows
    while deleted >= chunk_rows:
        with engine.begin() as connection:
            deleted = connection.execute(delete).rowcount


def _chunk_delete(
    dialect: str, table: sa.Table, condition: sa.ColumnElement[bool], chunk_rows: int
) -> sa.Delete:
    """A DELETE of at most ``chunk_rows`` rows that meet ``condition``, each found by its place
    in storage (SQLite's rowid, PostgreSQL's ctid). Matching on the primary key instead made
    both scan the table for every chunk: a delete that grew with the square of the rows."""
    if dialect == "sqlite":
        rowid = sa.literal_column("rowid")
        return table.delete().where(rowid.in_(sa.select(rowid).where(condition).limit(chunk_rows)))
    if dialect == "postgresql":
        ctid = sa.literal_column("ctid")
        chunk = sa.select(ctid).where(condition).limit(chunk_rows).scalar_subquery()
        return table.delete().where(ctid == sa.func.any(sa.func.array(chunk)))
    key = table.primary_key.columns
    return table.delete().where(
        sa.tuple_(*key).in_(sa.select(*key).where(condition).limit(chunk_rows))
    )


def with_version(
    columns: Mapping[str, Sequence[object]], version: int
) -> dict[str, Sequence[object]]:
    """Rows given column by column, the version column first."""
    return {VERSION: [version] * row_count(columns), **columns}


def row_count(columns: Mapping[str, Sequence[object]]) -> int:
    """How many rows a mapping of columns holds (its first column's length; 0 for none)."""
    return len(next(iter(columns.values()), ()))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def bulk_insert(
    connection: sa.Connection, table: sa.Table, columns: Mapping[str, Sequence[object]]
) -> None:
    """Insert rows given column by column ({name: its values}, every column as long) at the
    driver's own bulk speed.

    SQLAlchemy's executemany processes every row's parameters in Python, and rows built as
    dicts cost as much again; for millions of rows that was most of a publish. Here each
    column's values go through its type's bind processor once per distinct value (times
    become what SQLAlchemy itself would store; a publish's rows share one time, one model
    version), the columns are zipped into tuples in one pass, and the rows go to the driver in
    one call: sqlite3's executemany, psycopg2's execute_values. Other drivers take the plain
    SQLAlchemy path.
    """
    names = list(columns)
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths for {table.name}: {sorted(lengths)}")
    if not row_count(columns):
        return
    dialect = connection.dialect
    bound = [_bound(table.c[name], dialect, columns[name]) for name in names]
    values = list(zip(*bound, strict=True))
    quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    target = dialect.identifier_preparer.format_table(table)
    if dialect.name == "sqlite":
        marks = ", ".join("?" for _ in names)
        connection.exec_driver_sql(f"INSERT INTO {target} ({quoted}) VALUES ({marks})", values)
    elif dialect.driver == "psycopg2":
        from psycopg2.extras import execute_values

        statement = f"INSERT INTO {target} ({quoted}) VALUES %s"
        cursor = connection.connection.cursor()
        try:
            execute_values(cursor, statement, values, page_size=5_000)
        except dialect.loaded_dbapi.Error as error:  # as SQLAlchemy's own calls raise it
            raise sa.exc.DBAPIError.instance(
                statement, None, error, dialect.loaded_dbapi.Error
            ) from error
        finally:
            cursor.close()
    else:
        connection.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in values])


def _bound(column: sa.Column, dialect: sa.Dialect, values: Sequence[object]) -> Sequence[object]:
    """A column's values as the driver takes them: its type's bind processor applied once per
    distinct value (None stays None), or the values themselves when the type has none."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return values
    memo = {value: None if value is None else process(value) for value in dict.fromkeys(values)}
    return list(map(memo.__getitem__, values))
