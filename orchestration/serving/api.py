"""The small HTTP API: read a user's list or an item's related items, post events into the
landing zone, check health.

It reads only the serving store (never the DuckDB warehouse, whose single writer it must not
contend with) and writes only new files into the events landing folder, where the landing
sensor picks them up like any other delivery. ``freshrank serve`` runs it with uvicorn.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ml.constants import (
    CONTROL_CHARACTER,
    EVENT_TYPE,
    GENERATED_AT,
    ITEM_ID,
    MAX_ID_LENGTH,
    MODEL_VERSION,
    OPTIONAL_EVENT_COLUMNS,
    REASON,
    REQUIRED_EVENT_COLUMNS,
    SCORE,
    USER_ID,
)
from ml.rules import RankingRules, context_value, key_problem
from orchestration.experiments.store import Assignment, ExperimentStore
from orchestration.privacy.pseudonyms import pseudonymised_events
from orchestration.serving.access import Access
from orchestration.serving.personalise import RequestPersonaliser, ServedList
from orchestration.serving.store import RELATED_ITEM_ID, ServingStore
from orchestration.settings import API_MAX_BODY_BYTES, API_MAX_EVENTS, Settings, get_settings

logger = logging.getLogger("freshrank.api")

MAX_K = 100
MAX_EVENTS_VARIABLE = "FRESHRANK_API_MAX_EVENTS"
MAX_BODY_BYTES_VARIABLE = "FRESHRANK_API_MAX_BODY_BYTES"
# A bad batch usually breaks the same rule on many events; the first few say enough.
_PROBLEMS_SHOWN = 10
_NOTHING_PUBLISHED = "nothing has been published yet (run `freshrank build`)"


@dataclass(frozen=True)
class ApiLimits:
    """How much one POST /events may carry."""

    max_events: int = API_MAX_EVENTS
    max_body_bytes: int = API_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for name in ("max_events", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1; got {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiLimits:
        """The deployment's limits (FRESHRANK_API_MAX_EVENTS, FRESHRANK_API_MAX_BODY_BYTES)."""
        return cls(max_events=settings.api_max_events, max_body_bytes=settings.api_max_body_bytes)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    reason: str


class RecommendationList(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    model_version: str
    generated_at: str
    experiment: str | None = None  # the running experiment the user is enrolled in, if any
    variant: str | None = None  # and the variant whose list this is
    personalised: bool = False  # re-ranked at request time for events newer than the list
    fresh_events: int = 0  # how many of the user's recent events were applied


class SimilarItems(BaseModel):
    item_id: str
    items: list[RecommendedItem]
    model_version: str
    generated_at: str


class EventsAccepted(BaseModel):
    accepted: int
    file: str


_EVENTS_BODY_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": list(REQUIRED_EVENT_COLUMNS),
                    "properties": {
                        column: {} for column in (*REQUIRED_EVENT_COLUMNS, *OPTIONAL_EVENT_COLUMNS)
                    },
                    "additionalProperties": True,
                },
            }
        }
    },
}


def create_app(settings: Settings | None = None, limits: ApiLimits | None = None) -> FastAPI:
    """The freshrank API on one serving-store engine (pooled; disposed when the app stops)."""
    settings = settings if settings is not None else get_settings()
    limits = limits if limits is not None else ApiLimits.from_settings(settings)
    store = ServingStore(settings.serving_url)
    access = Access.from_settings(store.engine, settings)
    pseudonymiser = settings.pseudonymiser
    experiments = ExperimentStore(store.engine)
    # The pipeline's exclusion and feedback rules are RankingRules' defaults (pipeline_config
    # sets only MMR and new-item slots, which request time does not apply).
    personaliser = RequestPersonaliser(
        store, settings.event_weights, RankingRules(), settings.recent_events_per_user
    )
    events_folder = settings.landing_folder("events")
    event_types = frozenset(settings.event_weights)
    default_k = min(settings.top_k, MAX_K)
    context_key = settings.context_key

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.dispose()

    app = FastAPI(
        title="freshrank",
        summary="Published recommendation lists and related items, event intake and health.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.limits = limits
    app.state.store = store

    @app.get(
        # :path: an id may hold a slash ('tenant/7', sent as tenant%2F7).
        "/recommendations/{user_id:path}",
        response_model=RecommendationList,
        dependencies=[Depends(access.reader)],
    )
    async def recommendations(
        user_id: Annotated[str, _id_parameter("The user, as text: '007' is not '7'.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")] = default_k,
        context: Annotated[
            str | None,
            Query(
                max_length=255,
                description="The request's value of the context field FRESHRANK_CONTEXT_KEY "
                "(hour by default: 9 means 09:00-09:59 UTC); it only changes the list of a "
                "user without one.",
            ),
        ] = None,
    ) -> Response:
        """A user's published list; for a user without one, trending for their context.

        `context` is the value of the configured context field (FRESHRANK_CONTEXT_KEY, default
        hour), e.g. `?context=9`; without it, a time field (hour, weekday) is read off the
        request time in UTC. The context's trending list is served when one was published,
        else the global trending list. While an experiment runs, an enrolled user gets their
        variant's list, the response names the `experiment` and `variant`, and the served list
        is logged as an exposure. With pseudonymisation on, the id is hashed before any lookup.

        Request-time personalisation: events posted to POST /events (or loaded by an ingest)
        since the user's list was published apply at once, from precomputed rows (no model
        runs): items the user consumed leave the list (any event but an impression, by the
        ranking rules; purchases unless re-buyable), clicks without conversion and ignored
        impressions are demoted as the rules say, and items related to what they just did
        (co-visited, then text neighbours) move up with the reason "because you just viewed
        X". The pool is the user's 50 best-scored candidates (FRESHRANK_SERVING_CANDIDATES)
        plus those related items; a user without a list gets the related items of what they
        did, then trending. `personalised` says whether events were applied and
        `fresh_events` how many (the newest FRESHRANK_RECENT_EVENTS_PER_USER per user). Limits:
        the related items of the newest 10 items acted on count; an item no full build has
        published related items for promotes nothing; nothing is written back, the next
        publish folds the events into the list itself.
        """
        # A few indexed rows: read on the event loop rather than handed to a worker thread.
        given_id = user_id
        if pseudonymiser is not None:
            user_id = pseudonymiser.pseudonym(user_id)
        assigned = experiments.assigned(user_id)
        if assigned is None:
            published = store.list_rows(user_id)
        else:
            published = experiments.list_rows(assigned, user_id, k)
        served = personaliser.serve(
            user_id,
            published,
            k,
            lambda: _new_user_rows(store, context_key, context, k),
            with_candidates=assigned is None,  # the candidates are the champion's
        )
        if served is None:
            if store.summary()["rows"]:
                detail = (
                    f"no published list for user {given_id!r} and no trending list to fall back "
                    "on (run `freshrank build` to publish one)"
                )
            else:
                detail = _NOTHING_PUBLISHED
            raise HTTPException(404, detail)
        if assigned is not None:
            shown = [item[ITEM_ID] for item in served.items]
            experiments.log_exposure(assigned, user_id, shown, served.model_version)
        payload = _list_response(given_id, served, assigned)
        return Response(payload.model_dump_json(), media_type="application/json")

    @app.get(
        "/items/{item_id:path}/similar",
        response_model=SimilarItems,
        dependencies=[Depends(access.reader)],
    )
    async def similar_items(
        item_id: Annotated[str, _id_parameter("The item, as text: '007' is not '7'.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")] = default_k,
    ) -> SimilarItems:
        """An item's related items, best first, as the last full build published them.

        Items often viewed together with it come first (reason "often viewed together"), then
        items whose text is nearest to its own ("similar text"), which is how a brand-new item
        gets related items before anyone has touched it. Unavailable items are never listed. A
        refresh does not recompute them; every full build does. At most FRESHRANK_TOP_K items
        are published per item, so a larger `k` returns fewer.
        """
        # A few indexed rows: read on the event loop, as for the lists.
        related = store.related_rows(item_id, k)
        if not related:
            raise HTTPException(
                404,
                f"no published related items for item {item_id!r}: it is not in the catalog, "
                "has no text vector and no co-visitation, or no full build has published "
                "related items since it arrived (run `freshrank build`)",
            )
        first = related[0]
        return SimilarItems(
            item_id=item_id,
            items=[
                RecommendedItem(item_id=row[RELATED_ITEM_ID], score=row[SCORE], reason=row[REASON])
                for row in related
            ],
            model_version=first[MODEL_VERSION],
            generated_at=_iso_utc(first[GENERATED_AT]),
        )

    @app.post(
        "/events",
        status_code=202,
        response_model=EventsAccepted,
        openapi_extra={"requestBody": _EVENTS_BODY_SCHEMA},
        dependencies=[Depends(access.writer)],
    )
    async def post_events(request: Request) -> EventsAccepted:
        """Land a JSON array of events as one JSON Lines file for the next ingest, and keep
        them as the users' recent events, which the next GET /recommendations applies.

        Checked here: valid JSON, an array of objects, the required fields present and not
        empty, ids that fit the serving store (at most 255 characters, none of them a control
        character), a configured event_type, and the size limits. Timestamps and values are
        not checked deeply: ingestion quarantines rows that break the contract, with the reason.
        A refused batch (4xx) writes nothing anywhere. An accepted event whose timestamp is not
        ISO-8601 text or epoch seconds/milliseconds, or a rating without a numeric value, is
        landed but not applied at request time.
        """
        body = await _read_body(request, limits.max_body_bytes)
        events = _parse_events(body, limits.max_events, event_types)
        if pseudonymiser is not None:
            events = pseudonymised_events(events, pseudonymiser)
        name = await run_in_threadpool(_write_landing_file, events_folder, events)
        kept = await run_in_threadpool(personaliser.record, events, name)
        logger.info(
            "accepted %d event(s) as %s (%d kept as recent events)", len(events), name, kept
        )
        return EventsAccepted(accepted=len(events), file=name)

    @app.get("/health")
    def health() -> JSONResponse:
        """Whether the serving store answers, with what it holds."""
        try:
            summary = store.summary()
        except Exception as error:  # any failure means unhealthy; report it, do not crash
            logger.warning("health check failed: %s", error)
            # The first line names the problem; SQLAlchemy appends the SQL and a docs link.
            first_line = (str(error).splitlines() or [""])[0]
            return JSONResponse(
                {"status": "unavailable", "error": f"{type(error).__name__}: {first_line}"},
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ok",
                "lists": summary["rows"],
                "users": summary["users"],
                "trending": summary["trending"],
                "generated_at": _iso_utc(summary["generated_at"]),
            }
        )

    return app


def _new_user_rows(
    store: ServingStore, context_key: str, context: str | None, k: int
) -> list[dict[str, Any]]:
    """The trending list for the request's context value if one was published, else the global."""
    given = None if context is None else {context_key: context}
    value = context_value(given, datetime.now(UTC), context_key)
    if value is not None:
        rows = store.context_trending_rows(context_key, value, k)
        if rows:
            return rows
    return store.trending_rows(k)


def _list_response(
    user_id: str, served: ServedList, assigned: Assignment | None = None
) -> RecommendationList:
    return RecommendationList(
        user_id=user_id,
        items=[
            RecommendedItem(item_id=row[ITEM_ID], score=row[SCORE], reason=row[REASON])
            for row in served.items
        ],
        model_version=served.model_version,
        generated_at=_iso_utc(served.generated_at),
        experiment=None if assigned is None else assigned.experiment,
        variant=None if assigned is None else assigned.variant.name,
        personalised=served.fresh_events > 0,
        fresh_events=served.fresh_events,
    )


def _iso_utc(moment: datetime | None) -> str | None:
    """ISO-8601 text with an explicit UTC zone (the store keeps naive UTC); None stays None."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as its declared or actual size passes the limit; a
    gzip-compressed body (Content-Encoding: gzip) is decompressed, within the same limit."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise HTTPException(
            415, f"Content-Encoding {encoding!r} is not accepted: send the body as it is or gzip"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise HTTPException(400, f"Content-Length {declared!r} is not a number") from None
        if declared_bytes > max_bytes:
            raise HTTPException(413, _too_large(declared_bytes, max_bytes))
    chunks: list[bytes] = []
    size = 0
    # The declared length may be missing (chunked) or wrong: count what actually arrives.
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, _too_large(size, max_bytes, "at least "))
        chunks.append(chunk)
    body = b"".join(chunks)
    return _gunzipped(body, max_bytes) if encoding == "gzip" else body


def _gunzipped(compressed: bytes, max_bytes: int) -> bytes:
    """A gzip body decompressed: 413 as soon as what it holds passes the limit (a small body
    can hold a huge one), 400 when it is not one whole gzip stream."""
    inflater = zlib.decompressobj(wbits=31)  # a gzip header and trailer around the data
    try:
        body = inflater.decompress(compressed, max_bytes + 1)
    except zlib.error as error:
        raise HTTPException(400, f"body is not valid gzip: {error}") from None
    if len(body) > max_bytes:
        raise HTTPException(413, _too_large(len(body), max_bytes, "at least ", "decompressed "))
    if not inflater.eof:
        raise HTTPException(400, "body is not valid gzip: the stream ends early")
    if inflater.unused_data:
        raise HTTPException(400, "body holds more than one gzip stream; send one per request")
    return body


def _too_large(size: int, max_bytes: int, qualifier: str = "", state: str = "") -> str:
    return (
        f"{state}body of {qualifier}{size} bytes is over the limit of {max_bytes} bytes "
        f"({MAX_BODY_BYTES_VARIABLE}); send the events in smaller batches"
    )


def _parse_events(
    body: bytes, max_events: int, event_types: frozenset[str]
) -> list[dict[str, Any]]:
    """The events of a body, or an HTTPException saying what is wrong and where."""
    try:
        events = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise HTTPException(400, "body is not usable JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, or a refused number
        raise HTTPException(400, f"body is not valid JSON: {error}") from None
    if not isinstance(events, list):
        raise HTTPException(
            422,
            f"body must be a JSON array of event objects, got a JSON {_json_kind(events)}",
        )
    if not events:
        raise HTTPException(422, "body is an empty array: no events to accept")
    if len(events) > max_events:
        raise HTTPException(
            413,
            f"{len(events)} events in one batch is over the limit of {max_events} "
            f"({MAX_EVENTS_VARIABLE}); send them in smaller batches",
        )
    problems = [
        problem
        for index, event in enumerate(events)
        for problem in _event_problems(index, event, event_types)
    ]
    if problems:
        shown = "; ".join(problems[:_PROBLEMS_SHOWN])
        more = len(problems) - _PROBLEMS_SHOWN
        raise HTTPException(
            422,
            shown + (f"; and {more} more problem(s)" if more > 0 else "") + "; nothing was written",
        )
    return events


def _event_problems(index: int, event: object, event_types: frozenset[str]) -> list[str]:
    """What keeps one event from ever loading (none for a loadable event).

    Not an object, a required field missing or empty, an id that is an array or an object, or
    an event type outside the configured ones, compared as ingestion compares it (stripped
    text).
    """
    if not isinstance(event, dict):
        return [f"event {index}: expected an object, got a JSON {_json_kind(event)}"]
    problems = []
    for field in REQUIRED_EVENT_COLUMNS:
        if field not in event:
            problems.append(f"event {index}: missing '{field}'")
        elif _is_empty(event[field]):
            problems.append(f"event {index}: empty '{field}'")
        elif field in (USER_ID, ITEM_ID) and isinstance(event[field], list | dict):
            shape = _json_kind(event[field])
            problems.append(f"event {index}: '{field}' is a JSON {shape}, not an id")
        elif field in (USER_ID, ITEM_ID) and (problem := key_problem(str(event[field]).strip())):
            problems.append(f"event {index}: '{field}' {problem}")
    kind = event.get(EVENT_TYPE)
    if not _is_empty(kind) and (not isinstance(kind, str) or kind.strip() not in event_types):
        problems.append(
            f"event {index}: '{EVENT_TYPE}' {json.dumps(kind)} is not one of the configured "
            f"event types: {', '.join(sorted(event_types))}"
        )
    return problems


def _id_parameter(description: str) -> Any:
    """A path's id as ingestion admits ids: at most MAX_ID_LENGTH characters, none of them a
    control character (anything else could never have been loaded, and a NUL would reach
    PostgreSQL as an error); FastAPI answers 422 for the others."""
    return PathParameter(
        description=description,
        max_length=MAX_ID_LENGTH,
        pattern=f"^[^{CONTROL_CHARACTER[1:-1]}]*$",
    )


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _refuse_constant(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text} is out of range")
    return number


def _write_landing_file(folder: Path, events: list[dict[str, Any]]) -> str:
    """Write the events as one JSON Lines file, whole or not at all; returns its name.

    The lines go to a hidden file (the landing scanner skips names starting with '.'), are
    flushed to disk, and only then renamed to their visible name in one atomic step.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"api-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
    partial = folder / f".{name}.partial"
    text = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events)
    try:
        with partial.open("x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, folder / name)
    except BaseException:
        with suppress(FileNotFoundError):
            partial.unlink()
        raise
    _sync_folder(folder)
    return name


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
