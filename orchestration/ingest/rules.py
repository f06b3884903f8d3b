"""The data contract's row rules as DuckDB SQL over a landed file's columns, whatever their types.

A landed file is read by DuckDB (``sources.py``) into columns of whatever type its format gives:
text from CSV, JSON values from JSON Lines, anything from Parquet. Each contract column is turned
into its typed value with casts that fail softly (NULL, never an error), and each row gets the
number of the first rule it breaks (NULL when it passes). Rows that pass become ``raw.<kind>``
rows; the others become quarantine rows whose reason and column come from that number. Nothing
here runs a query: the functions return SQL text, so the checks run inside DuckDB's own scans.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from ml.constants import (
    ATTRIBUTES,
    AVAILABLE,
    CATEGORIES,
    CATEGORY_SEPARATOR,
    CONTEXT,
    CONTROL_CHARACTER,
    CREATED_AT,
    DESCRIPTION,
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    MAX_ID_LENGTH,
    OCCURRED_AT,
    OPTIONAL_EVENT_COLUMNS,
    OPTIONAL_ITEM_COLUMNS,
    REQUIRED_EVENT_COLUMNS,
    REQUIRED_ITEM_COLUMNS,
    SESSION_ID,
    TIMESTAMP,
    TITLE,
    USER_ID,
    VALUE,
)

SOURCE_ROW = "source_row"
REQUIRED_COLUMNS = {"events": REQUIRED_EVENT_COLUMNS, "items": REQUIRED_ITEM_COLUMNS}
OPTIONAL_COLUMNS = {"events": OPTIONAL_EVENT_COLUMNS, "items": OPTIONAL_ITEM_COLUMNS}
# Epoch numbers above this are milliseconds (1e11 seconds is the year 5138).
EPOCH_MILLISECONDS_ABOVE = 1e11
# DuckDB's timestamps end in the year 294247, about 9.22e12 epoch seconds.
LARGEST_EPOCH_SECONDS = 9.2e12
TRUE_TEXTS = ("true", "t", "yes", "y", "1")
FALSE_TEXTS = ("false", "f", "no", "n", "0")
SHOWN_VALUE_LENGTH = 80
NOT_A_TIME = (
    "is not a time: expected ISO-8601 text (e.g. 2024-05-01T12:30:00Z) or epoch "
    "seconds/milliseconds"
)
_INTEGER_TYPES = frozenset(
    ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
    + ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
)
_TIME_TYPES = frozenset(("TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE"))
# Zone-aware times: DuckDB's own (microseconds), and the nanoseconds pandas writes to Parquet.
_ZONED_TIME_TYPES = frozenset(("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"))
# An ISO-8601 date and time in the basic or extended format, minutes and seconds optional.
_ISO_PARTS = r"^(\d{4})-?(\d{2})-?(\d{2})[Tt ](\d{2})(?::?(\d{2}))?(?::?(\d{2}))?([.,]\d+)?(.*)$"
_ISO_PART_NAMES = "['y', 'mo', 'd', 'h', 'mi', 's', 'f', 'z']"


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def typed(name: str) -> str:
    """A value computed from a contract column, beside the file's own column of that name."""
    return identifier(f"__{name}")


def family_of(duckdb_type: str) -> str:
    upper = duckdb_type.upper()
    if upper in ("VARCHAR", "UUID") or upper.startswith("ENUM"):
        return "text"
    if upper == "JSON":
        return "json"
    if upper in _INTEGER_TYPES:
        return "integer"
    if upper in ("FLOAT", "DOUBLE") or upper.startswith("DECIMAL"):
        return "float"
    if upper == "BOOLEAN":
        return "boolean"
    if upper in _ZONED_TIME_TYPES:
        return "zoned_time"
    if upper in _TIME_TYPES:
        return "time"
    if upper.endswith("]"):
        return "list"
    if upper.startswith(("STRUCT(", "MAP(")):
        return "struct"
    return "other"


@dataclass(frozen=True)
class Cell:
    """One column of the landed file in SQL: a reference and what its DuckDB type makes it.

    ``family`` is text, json, integer, float, boolean, time, zoned_time, list, struct, other,
    or missing (the file has no such column: every expression is then NULL or false). The parses
    that several rules share (the stripped text, the number, the zoned time) are computed once,
    in layers of their own (``layers``), and then read by name (the ``*_ref`` fields).
    """

    sql: str
    family: str
    text_ref: str | None = None
    number_ref: str | None = None
    zoned_ref: str | None = None

    @classmethod
    def of(cls, name: str, duckdb_type: str) -> Cell:
        return cls(identifier(name), family_of(duckdb_type))

    def layers(self, key: str, parses: bool) -> tuple[Cell, dict[str, str], dict[str, str]]:
        """This cell reading its shared parses by name, with the SQL of its first layer (the
        text) and of its second (the number and the zoned time, when ``parses``)."""
        if self.family not in ("text", "json"):
            return self, {}, {}
        first = {f"{key}_text": self.text()}
        cell = replace(self, text_ref=typed(f"{key}_text"))
        if not parses:
            return cell, first, {}
        second = {f"{key}_number": cell.raw_number(), f"{key}_zoned": cell.zoned()}
        refs = {"number_ref": typed(f"{key}_number"), "zoned_ref": typed(f"{key}_zoned")}
        return replace(cell, **refs), first, second

    def text(self) -> str:
        """Stripped text, NULL when missing or blank; 7 and 7.0 both become '7'."""
        c = self.sql
        if self.text_ref is not None:
            return self.text_ref
        match self.family:
            case "text":
                return f"nullif(trim(CAST({c} AS VARCHAR)), '')"
            case "json":
                return (
                    f"CASE json_type({c}) WHEN 'NULL' THEN NULL "
                    f"WHEN 'VARCHAR' THEN nullif(trim({c} ->> '$'), '') "
                    f"WHEN 'DOUBLE' THEN {_number_text(f'CAST({c} AS DOUBLE)')} "
                    f"ELSE CAST({c} AS VARCHAR) END"
                )
            case "integer" | "time" | "zoned_time":
                return f"CAST({c} AS VARCHAR)"
            case "float":
                return _number_text(f"CAST({c} AS DOUBLE)")
            case "boolean":
                return f"CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END"
            case "missing":
                return "CAST(NULL AS VARCHAR)"
        return f"CAST(to_json({c}) AS VARCHAR)"

    def present(self) -> str:
        """True when the cell holds anything (not NULL, NaN or blank text)."""
        match self.family:
            case "text" | "json":
                return f"({self.text()} IS NOT NULL)"
            case "float":
                return f"coalesce(NOT isnan(CAST({self.sql} AS DOUBLE)), false)"
            case "missing":
                return "false"
        return f"({self.sql} IS NOT NULL)"

    def raw_number(self) -> str:
        """A DOUBLE (maybe infinite) from a number or numeric text, else NULL."""
        if self.number_ref is not None:
            return self.number_ref
        match self.family:
            case "text" | "json":
                # Extended ISO dates have '-' fifth: skip the costly failing cast for them.
                text = self.text()
                return f"CASE WHEN substr({text}, 5, 1) <> '-' THEN TRY_CAST({text} AS DOUBLE) END"
            case "integer" | "float":
                return f"CAST({self.sql} AS DOUBLE)"
        return "CAST(NULL AS DOUBLE)"

    def zoned(self) -> str:
        """A TIMESTAMPTZ from ISO-8601 text (no zone: the session's, UTC), else NULL. DuckDB
        reads the extended format; text it cannot read that looks like the basic format or a
        time without seconds (20240501T1000Z, 2024-05-01T10Z) is rewritten and read again."""
        if self.zoned_ref is not None:
            return self.zoned_ref
        if self.family not in ("text", "json"):
            return "CAST(NULL AS TIMESTAMPTZ)"
        text = self.text()
        part = f"regexp_extract({text}, {literal(_ISO_PARTS)}, {_ISO_PART_NAMES})"
        rewritten = (
            f"{part}.y || '-' || {part}.mo || '-' || {part}.d || ' ' || {part}.h || ':' || "
            f"coalesce(nullif({part}.mi, ''), '00') || ':' || coalesce(nullif({part}.s, ''), '00')"
            f" || replace({part}.f, ',', '.') || {part}.z"
        )
        return (
            f"coalesce(CASE WHEN substr({text}, 5, 1) = '-' THEN TRY_CAST({text} AS TIMESTAMPTZ) "
            f"END, CASE WHEN regexp_matches({text}, {literal(_ISO_PARTS)}) "
            f"THEN TRY_CAST({rewritten} AS TIMESTAMPTZ) END)"
        )

    def number(self) -> str:
        """A finite DOUBLE, or NULL when missing or not a number."""
        number = self.raw_number()
        return f"CASE WHEN isfinite({number}) THEN {number} END"

    def epoch_seconds(self) -> str:
        """Epoch seconds for numbers and numeric text (milliseconds scaled), else NULL."""
        number = self.raw_number()
        return (
            f"CASE WHEN NOT isfinite({number}) THEN NULL "
            f"WHEN {number} > {EPOCH_MILLISECONDS_ABOVE} THEN {number} / 1000 ELSE {number} END"
        )

    def time(self) -> str:
        """Naive UTC TIMESTAMP: ISO-8601 text (a zone converted, none taken as UTC), epoch
        seconds or milliseconds, or a time type; NULL when missing or not a time."""
        c = self.sql
        match self.family:
            case "time":
                return f"CASE WHEN isfinite({c}) THEN CAST({c} AS TIMESTAMP) END"
            case "zoned_time":
                zoned = f"CAST({c} AS TIMESTAMPTZ)"  # nanoseconds have no isfinite of their own
                return f"CASE WHEN isfinite({zoned}) THEN make_timestamp(epoch_us({zoned})) END"
            case "text" | "json" | "integer" | "float":
                seconds, zoned = self.epoch_seconds(), self.zoned()
                # Eight characters that make a date are one in ISO's basic format (20240501),
                # not epoch seconds of 1970-1973.
                text = self.text()
                basic_date = (
                    "CAST(NULL AS TIMESTAMP)"
                    if self.family == "float"
                    else f"CASE WHEN length({text}) = 8 THEN try_strptime({text}, '%Y%m%d') END"
                )
                return (
                    f"coalesce({basic_date}, CASE WHEN abs({seconds}) < {LARGEST_EPOCH_SECONDS} "
                    f"THEN make_timestamp(CAST(round({seconds} * 1e6) AS BIGINT)) "
                    f"WHEN isfinite({zoned}) THEN make_timestamp(epoch_us({zoned})) END)"
                )
        return "CAST(NULL AS TIMESTAMP)"

    def beyond_timestamps(self) -> str:
        """True for an epoch after the last time DuckDB can hold (it is too far in the future)."""
        if self.family in ("text", "json", "integer", "float"):
            return f"coalesce({self.epoch_seconds()} >= {LARGEST_EPOCH_SECONDS}, false)"
        return "false"

    def flag(self) -> str:
        """A BOOLEAN from true/false, yes/no, 1/0 (text, number or boolean); NULL otherwise."""
        if self.family == "boolean":
            return self.sql
        if self.family not in ("text", "json", "integer", "float"):
            return "CAST(NULL AS BOOLEAN)"
        text = self.text()
        true_texts = ", ".join(map(literal, TRUE_TEXTS))
        false_texts = ", ".join(map(literal, FALSE_TEXTS))
        return (
            f"CASE WHEN lower({text}) IN ({true_texts}) THEN true "
            f"WHEN lower({text}) IN ({false_texts}) THEN false END"
        )

    def categories(self) -> str:
        """'|'-joined categories from a list, a JSON array or '|'-separated text."""
        c, text, separator = self.sql, self.text(), literal(CATEGORY_SEPARATOR)
        match self.family:
            case "list":
                parts = f"CAST({c} AS VARCHAR[])"
            case "json":
                parts = (
                    f"CASE json_type({c}) WHEN 'ARRAY' THEN json_extract_string({c}, '$[*]') "
                    f"ELSE string_split({text}, {separator}) END"
                )
            case "missing":
                return "CAST(NULL AS VARCHAR)"
            case _:
                parts = (
                    f"CASE WHEN starts_with({text}, '[') AND json_valid({text}) "
                    f"AND json_type({text}) = 'ARRAY' THEN json_extract_string({text}, '$[*]') "
                    f"ELSE string_split({text}, {separator}) END"
                )
        kept = (
            f"list_filter(list_transform({parts}, lambda part: trim(part)), "
            "lambda part: part <> '')"
        )
        return f"nullif(array_to_string({kept}, {separator}), '')"

    def json_text(self) -> str:
        """JSON text for the context: JSON given as text is kept, anything else is encoded."""
        c = self.sql
        match self.family:
            case "text":
                return _json_of_text(self.text())
            case "json":
                return (
                    f"CASE json_type({c}) WHEN 'NULL' THEN NULL "
                    f"WHEN 'VARCHAR' THEN {_json_of_text(self.text())} "
                    f"ELSE CAST({c} AS VARCHAR) END"
                )
            case "missing":
                return "CAST(NULL AS VARCHAR)"
        return f"CASE WHEN {self.present()} THEN CAST({self.json_value()} AS VARCHAR) END"

    def json_value(self) -> str:
        """The cell as a JSON value for records and attributes (text kept as delivered)."""
        c = self.sql
        match self.family:
            case "json":
                return c
            case "float":
                return f"CASE WHEN isfinite({c}) THEN to_json({c}) END"
            case "missing":
                return "CAST(NULL AS JSON)"
        return f"to_json({c})"

    def structured(self) -> str:
        """True when the cell holds a list or an object (in JSON, or as a Parquet list, struct
        or map): a value, not an id."""
        match self.family:
            case "json":
                return f"coalesce(json_type({self.sql}) IN ('ARRAY', 'OBJECT'), false)"
            case "list" | "struct":
                return f"({self.sql} IS NOT NULL)"
        return "false"

    def shown(self) -> str:
        """The cell for a message: quoted when text, shortened."""
        c = self.sql
        if self.family == "text":
            shown = f"'''' || CAST({c} AS VARCHAR) || ''''"
        elif self.family == "json":
            shown = (
                f"CASE json_type({c}) WHEN 'VARCHAR' THEN '''' || ({c} ->> '$') || '''' "
                f"ELSE CAST({c} AS VARCHAR) END"
            )
        else:
            shown = f"CAST({c} AS VARCHAR)"
        limit, cut = SHOWN_VALUE_LENGTH, SHOWN_VALUE_LENGTH - 3
        return (
            f"CASE WHEN length({shown}) > {limit} THEN left({shown}, {cut}) || '...' "
            f"ELSE {shown} END"
        )


def _number_text(number: str) -> str:
    return (
        f"CASE WHEN NOT isfinite({number}) THEN NULL "
        f"WHEN {number} = trunc({number}) AND abs({number}) < 1e18 "
        f"THEN CAST(CAST({number} AS BIGINT) AS VARCHAR) ELSE CAST({number} AS VARCHAR) END"
    )


def _json_of_text(text: str) -> str:
    return f"CASE WHEN json_valid({text}) THEN {text} ELSE CAST(to_json({text}) AS VARCHAR) END"


# ---------------------------------------------------------------------------------------------
# The rules of each kind


@dataclass(frozen=True)
class Rule:
    """Rows breaking ``broken`` (SQL) are quarantined for ``column`` with ``reason`` (SQL text)."""

    column: str
    broken: str
    reason: str


@dataclass(frozen=True)
class CheckedRows:
    """One file's rows, checked. ``select`` gives ``source_row``, the file's columns, the typed
    contract values and ``broken_rule`` (the first rule broken, 1-based; NULL when all pass).
    Over it, ``clean`` gives the raw table's columns (name -> SQL), ``reason`` and
    ``column_name`` say why a row is quarantined, and ``record`` is the row as delivered (its
    user id pseudonymised when ``pseudonymised``)."""

    select: str
    clean: dict[str, str]
    reason: str
    column_name: str
    record: str
    pseudonymised: bool = False


def checked_rows(
    kind: str,
    view: str,
    columns: dict[str, str],
    allowed: tuple[str, ...] = (),
    latest: datetime | None = None,
    too_late: str = "",
    pseudonym: Callable[[str], str] | None = None,
) -> CheckedRows:
    """Check the rows of ``view`` (``source_row`` and the file's ``columns``: name -> DuckDB
    type). ``latest`` bounds event times (None: no bound); ``too_late`` ends that reason.
    ``pseudonym`` (SQL of a text expression -> SQL of its pseudonym) replaces user ids, in the
    clean rows and in the quarantined records alike."""
    first_layer: dict[str, str] = {}
    second_layer: dict[str, str] = {}
    cells: dict[str, Cell] = {}
    for name in (*REQUIRED_COLUMNS[kind], *OPTIONAL_COLUMNS[kind]):
        if name not in columns:
            cells[name] = Cell("NULL", "missing")
            continue
        parses = name in (TIMESTAMP, VALUE, CREATED_AT)
        cells[name], first, second = Cell.of(name, columns[name]).layers(name, parses)
        first_layer.update(first)
        second_layer.update(second)
    if kind == "events":
        rules, values = _event_rules(cells, allowed, latest, too_late)
        if pseudonym is not None:
            values[USER_ID] = pseudonym(values[USER_ID])
        clean = {
            EVENT_ID: f"coalesce({typed(EVENT_ID)}, {_derived_event_id()})",
            USER_ID: typed(USER_ID),
            ITEM_ID: typed(ITEM_ID),
            EVENT_TYPE: typed(EVENT_TYPE),
            OCCURRED_AT: typed(OCCURRED_AT),
            VALUE: typed(VALUE),
            SESSION_ID: cells[SESSION_ID].text(),
            CONTEXT: cells[CONTEXT].json_text(),
        }
    else:
        rules, values = _item_rules(cells)
        clean = {
            ITEM_ID: typed(ITEM_ID),
            TITLE: typed(TITLE),
            DESCRIPTION: cells[DESCRIPTION].text(),
            CATEGORIES: cells[CATEGORIES].categories(),
            CREATED_AT: typed(CREATED_AT),
            AVAILABLE: f"coalesce({typed(AVAILABLE)}, true)",
        }
    clean[ATTRIBUTES] = _attributes(kind, columns)
    # Layer on layer, so that each parse runs once: the text, then numbers and zoned times,
    # then the typed values, then the number of the first rule broken.
    select = (
        f"SELECT {SOURCE_ROW}{''.join(f', {identifier(name)}' for name in columns)} FROM {view}"
    )
    for layer in (first_layer, second_layer, values):
        if layer:
            computed = ", ".join(f"{sql} AS {typed(name)}" for name, sql in layer.items())
            select = f"SELECT *, {computed} FROM ({select})"
    numbered = list(enumerate(rules, 1))
    broken = " ".join(f"WHEN {rule.broken} THEN {number}" for number, rule in numbered)
    reason = " ".join(f"WHEN {number} THEN {rule.reason}" for number, rule in numbered)
    column = " ".join(f"WHEN {number} THEN {literal(rule.column)}" for number, rule in numbered)
    pairs = ", ".join(
        f"{literal(name)}, "
        + (
            f"to_json({typed(USER_ID)})"
            if pseudonym is not None and name == USER_ID and kind == "events"
            else Cell.of(name, sql_type).json_value()
        )
        for name, sql_type in columns.items()
    )
    return CheckedRows(
        select=f"SELECT *, CASE {broken} END AS broken_rule FROM ({select})",
        clean=clean,
        reason=f"CASE broken_rule {reason} END",
        column_name=f"CASE broken_rule {column} END",
        record=f"CAST(json_object({pairs}) AS VARCHAR)" if pairs else "'{}'",
        pseudonymised=pseudonym is not None,
    )


def _event_rules(
    cells: dict[str, Cell], allowed: tuple[str, ...], latest: datetime | None, too_late: str
) -> tuple[list[Rule], dict[str, str]]:
    """Rules in the order they are checked, and the typed values they and raw.events use."""
    values = {
        EVENT_ID: cells[EVENT_ID].text(),
        USER_ID: cells[USER_ID].text(),
        ITEM_ID: cells[ITEM_ID].text(),
        EVENT_TYPE: cells[EVENT_TYPE].text(),
        OCCURRED_AT: cells[TIMESTAMP].time(),
        VALUE: cells[VALUE].number(),
        "beyond_timestamps": cells[TIMESTAMP].beyond_timestamps(),
    }
    allowed_list = ", ".join(allowed)
    event_type, moment, beyond = typed(EVENT_TYPE), typed(OCCURRED_AT), typed("beyond_timestamps")
    after_latest = beyond
    if latest is not None:
        after_latest += f" OR {moment} > TIMESTAMP {literal(latest.isoformat(sep=' '))}"
    timestamp, value = cells[TIMESTAMP], cells[VALUE]
    rules = [
        *_id_rules(USER_ID, cells[USER_ID]),
        *_id_rules(ITEM_ID, cells[ITEM_ID]),
        Rule(
            EVENT_TYPE,
            f"{event_type} IS NULL",
            literal(f"event_type is missing or empty; expected one of: {allowed_list}"),
        ),
        Rule(
            EVENT_TYPE,
            f"{event_type} NOT IN ({', '.join(map(literal, allowed))})",
            f"'event_type ' || {cells[EVENT_TYPE].shown()} || "
            + literal(f" is not one of the configured event types: {allowed_list}"),
        ),
        Rule(TIMESTAMP, f"NOT {timestamp.present()}", literal("timestamp is missing or empty")),
        Rule(
            TIMESTAMP,
            f"{moment} IS NULL AND NOT {beyond}",
            f"'timestamp ' || {timestamp.shown()} || {literal(' ' + NOT_A_TIME)}",
        ),
        Rule(
            TIMESTAMP, after_latest, f"'timestamp ' || {timestamp.shown()} || {literal(too_late)}"
        ),
        Rule(
            VALUE,
            f"{event_type} = 'rate' AND {typed(VALUE)} IS NULL",
            "'a ''rate'' event needs a numeric value, got ' || "
            f"CASE WHEN {value.present()} THEN {value.shown()} ELSE 'none' END",
        ),
        Rule(
            VALUE,
            f"{value.present()} AND {typed(VALUE)} IS NULL",
            f"'value ' || {value.shown()} || ' is not a number'",
        ),
    ]
    return rules, values


def _id_rules(name: str, cell: Cell) -> list[Rule]:
    """An id must be there, be one value (a list or an object is not an id), fit the serving
    store's keys and be printable."""
    value = typed(name)
    return [
        Rule(name, f"{value} IS NULL", literal(f"{name} is missing or empty")),
        Rule(
            name,
            cell.structured(),
            f"{literal(name + ' ')} || {cell.shown()} || ' is a list or an object, not an id'",
        ),
        Rule(
            name,
            f"length({value}) > {MAX_ID_LENGTH}",
            f"{literal(name + ' ')} || {cell.shown()} || ' is ' || length({value}) || "
            + literal(f" characters long; an id may be at most {MAX_ID_LENGTH}"),
        ),
        Rule(
            name,
            f"regexp_matches({value}, {literal(CONTROL_CHARACTER)})",
            literal(
                f"{name} holds a control character (such as NUL, a tab or a line break); "
                "an id must be printable text"
            ),
        ),
    ]


def _item_rules(cells: dict[str, Cell]) -> tuple[list[Rule], dict[str, str]]:
    """Rules in order (a future created_at is a planned release, not an error)."""
    values = {
        ITEM_ID: cells[ITEM_ID].text(),
        TITLE: cells[TITLE].text(),
        CREATED_AT: cells[CREATED_AT].time(),
        AVAILABLE: cells[AVAILABLE].flag(),
    }
    created, available = cells[CREATED_AT], cells[AVAILABLE]
    rules = [
        *_id_rules(ITEM_ID, cells[ITEM_ID]),
        Rule(TITLE, f"{typed(TITLE)} IS NULL", literal("title is missing or empty")),
        Rule(
            CREATED_AT,
            f"{created.present()} AND {typed(CREATED_AT)} IS NULL",
            f"'created_at ' || {created.shown()} || {literal(' ' + NOT_A_TIME)}",
        ),
        Rule(
            AVAILABLE,
            f"{available.present()} AND {typed(AVAILABLE)} IS NULL",
            f"'available ' || {available.shown()} || "
            "' is not a boolean (use true/false, 1/0, yes/no)'",
        ),
    ]
    return rules, values


def user_texts(view: str, columns: dict[str, str]) -> str:
    """SQL of every row's user id as the rules read it (stripped text, NULL when empty)."""
    if USER_ID not in columns:
        return "SELECT CAST(NULL AS VARCHAR)"
    return f"SELECT {Cell.of(USER_ID, columns[USER_ID]).text()} FROM {view}"


def _derived_event_id() -> str:
    """sha256 of user, item, type, time (ISO, microseconds) and value, as 32 hex digits: the
    same event delivered again without an id gets the same one (as in earlier releases)."""
    parts = (
        typed(USER_ID),
        typed(ITEM_ID),
        typed(EVENT_TYPE),
        f"strftime({typed(OCCURRED_AT)}, '%Y-%m-%dT%H:%M:%S.%f')",
        f"coalesce(CAST({typed(VALUE)} AS VARCHAR), '')",
    )
    return f"left(sha256(concat_ws(chr(31), {', '.join(parts)})), 32)"


def _attributes(kind: str, columns: dict[str, str]) -> str:
    """Columns outside the contract as one JSON object per row (NULL when the row has none)."""
    known = {*REQUIRED_COLUMNS[kind], *OPTIONAL_COLUMNS[kind]}
    members = []
    for name in columns:
        if name in known:
            continue
        cell = Cell.of(name, columns[name])
        member = f"{literal(json.dumps(name) + ':')} || CAST({cell.json_value()} AS VARCHAR)"
        members.append(f"CASE WHEN {cell.present()} THEN {member} END")
    if not members:
        return "CAST(NULL AS VARCHAR)"
    return f"nullif('{{' || concat_ws(',', {', '.join(members)}) || '}}', '{{}}')"
