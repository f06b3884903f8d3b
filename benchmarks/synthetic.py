"""Seeded synthetic behaviour log and item catalog in freshrank's data contract.

Realistic enough for a recommender to learn from, and fast enough for scale runs (vectorised
numpy; on 2 cores one million events take about 3 s, ten million about 22 s and 1.9 GB):

- 24 topics in 6 departments; each item belongs to one topic, and its title, description and
  categories use that topic's words, so item text carries the topic signal.
- Items have power-law popularity within their topic (a random Zipf rank each). About 60% of the
  catalog exists before the log starts; the rest arrives over the log's span (``created_at``),
  and no item has an event before it was created.
- Users have tastes: one to three topics with random weights, heavy-tailed activity, a favourite
  device, and an arrival time (40% are there from the start, the rest arrive over the span).
- Sessions: a user's session picks a topic from their tastes (10% of sessions explore a random
  topic) and starts at an hour drawn from a daily rhythm; its interactions follow each other
  seconds apart. Each interaction walks a funnel (impression -> click -> view -> add_to_cart ->
  purchase, stopping early most of the time; less far when exploring) and some viewed items get
  feedback (rate with a 1-5 value, like, dislike; worse when exploring).
- Every event has a ``session_id`` and a JSON ``context`` such as {"hour": 13, "device": "mobile"}.

Files: ``items.<ext>`` and ``events.<ext>`` (or ``events-<i>-of-<K>.<ext>`` with
``--event-files K``, split in event-time order) plus ``synthetic.json`` describing the run. Parquet
by default (timestamps as UTC timestamps, categories as lists); CSV (ISO-8601 text, categories
``|``-separated) and JSON Lines (context and categories as JSON values) on request.

    .venv/bin/python -m benchmarks.synthetic --events 1000000 --users 100000 --items 20000 \\
        --out DIR [--seed 0] [--format parquet|csv|jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
MANIFEST = "synthetic.json"
ROWS_PER_CHUNK = 1_000_000
DAY = 86_400

# department -> topic -> words a title or description about that topic uses.
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "music": {
        "jazz": ("saxophone", "trumpet", "swing", "bebop", "improvisation", "quartet", "blues",
                 "standards", "trio", "double bass", "ballad", "nightclub"),
        "rock": ("guitar", "riff", "drums", "amplifier", "anthem", "garage", "stadium",
                 "distortion", "vinyl", "band", "solo", "punk"),
        "classical": ("symphony", "orchestra", "violin", "sonata", "piano", "concerto", "opera",
                      "baroque", "cello", "chamber", "composer", "overture"),
        "electronic": ("synthesizer", "techno", "house", "beats", "remix", "bassline", "ambient",
                       "dj", "sequencer", "dancefloor", "rave", "modular"),
    },
    "food": {
        "baking": ("sourdough", "bread", "flour", "oven", "pastry", "croissant", "cake", "yeast",
                   "dough", "cookies", "tart", "loaf"),
        "grilling": ("barbecue", "charcoal", "smoker", "brisket", "ribs", "skewers", "marinade",
                     "grill", "steak", "dry rub", "burgers", "flame"),
        "vegan": ("plant-based", "tofu", "lentils", "chickpeas", "salad", "vegetables", "quinoa",
                  "tempeh", "oat milk", "curry", "greens", "hummus"),
        "coffee": ("espresso", "beans", "roast", "grinder", "latte", "arabica", "brew", "barista",
                   "crema", "pour-over", "mug", "cold brew"),
    },
    "outdoors": {
        "hiking": ("trail", "boots", "backpack", "summit", "mountain", "trekking", "poles", "map",
                   "ridge", "waterproof", "compass", "alpine"),
        "camping": ("tent", "sleeping bag", "campfire", "camp stove", "lantern", "hammock",
                    "cooler", "campsite", "tarp", "firewood", "outdoor", "cot"),
        "cycling": ("bike", "helmet", "saddle", "gears", "road", "mountain bike", "pedals",
                    "jersey", "chain", "tires", "gravel", "commuter"),
        "fishing": ("rod", "reel", "lure", "bait", "tackle", "fly fishing", "lake", "trout",
                    "fishing line", "hook", "boat", "angler"),
    },
    "tech": {
        "smartphones": ("phone", "touchscreen", "battery", "charger", "camera", "case",
                        "android", "wireless", "app", "unlocked", "display", "5g"),
        "gaming": ("console", "controller", "multiplayer", "rpg", "shooter", "headset", "quest",
                   "level", "arcade", "strategy", "esports", "open world"),
        "photography": ("lens", "tripod", "aperture", "portrait", "mirrorless", "flash", "zoom",
                        "landscape", "shutter", "prime lens", "sensor", "viewfinder"),
        "audio": ("headphones", "speaker", "hi-fi", "noise cancelling", "turntable", "earbuds",
                  "subwoofer", "stereo", "soundbar", "dac", "bluetooth", "receiver"),
    },
    "home": {
        "gardening": ("seeds", "soil", "compost", "pruning", "planter", "roses", "tomatoes",
                      "watering can", "greenhouse", "herbs", "shovel", "mulch"),
        "furniture": ("sofa", "table", "chair", "shelf", "oak", "wardrobe", "desk",
                      "upholstered", "bed frame", "dresser", "ottoman", "bookcase"),
        "kitchenware": ("skillet", "chef knife", "cutting board", "saucepan", "dutch oven",
                        "whisk", "blender", "cast iron", "spatula", "nonstick", "mixing bowl",
                        "wok"),
        "lighting": ("lamp", "bulb", "led", "chandelier", "pendant", "dimmer", "sconce",
                     "floor lamp", "warm white", "fixture", "string lights", "shade"),
    },
    "style": {
        "running": ("sneakers", "marathon", "cushioning", "trail running", "lightweight",
                    "stride", "racing", "jogging", "insoles", "breathable", "sprint", "10k"),
        "watches": ("chronograph", "automatic", "dial", "strap", "quartz", "diver", "stainless",
                    "bezel", "sapphire", "wristwatch", "leather", "dress watch"),
        "skincare": ("moisturizer", "serum", "cleanser", "sunscreen", "retinol", "hydrating",
                     "toner", "face mask", "vitamin c", "spf", "night cream", "exfoliating"),
        "denim": ("jeans", "denim jacket", "indigo", "slim fit", "raw denim", "selvedge",
                  "straight leg", "stretch", "stone wash", "distressed", "overalls",
                  "button fly"),
    },
}  # fmt: skip
ADJECTIVES = (
    "classic", "essential", "premium", "compact", "deluxe", "modern", "vintage", "everyday",
    "pro", "ultimate", "handmade", "limited edition", "signature", "portable", "original",
    "advanced", "eco", "smart", "heritage", "urban",
)  # fmt: skip
PHRASES = (
    "a favourite with {topic} fans",
    "designed for everyday {topic}",
    "for beginners and experts in {topic}",
    "built to last",
    "great value for {topic} lovers",
    "a gift idea for anyone into {topic}",
)

EVENT_TYPES = ("impression", "view", "click", "add_to_cart", "purchase", "rate", "like", "dislike")
IMPRESSION, VIEW, CLICK, ADD_TO_CART, PURCHASE, RATE, LIKE, DISLIKE = range(len(EVENT_TYPES))
# An interaction walks the funnel in this order and stops at a depth drawn below.
FUNNEL = np.array([IMPRESSION, CLICK, VIEW, ADD_TO_CART, PURCHASE], dtype=np.int8)
DEPTH_ON_TASTE = (0.70, 0.12, 0.10, 0.05, 0.03)
DEPTH_EXPLORING = (0.85, 0.08, 0.05, 0.015, 0.005)
FEEDBACK_AFTER_VIEW = 0.2  # share of interactions that reached a view and leave feedback
FEEDBACK_ON_TASTE = (0.45, 0.45, 0.10)  # rate, like, dislike
FEEDBACK_EXPLORING = (0.35, 0.15, 0.50)
STARS_ON_TASTE = (0.02, 0.05, 0.18, 0.35, 0.40)
STARS_EXPLORING = (0.20, 0.25, 0.30, 0.15, 0.10)
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_SHARES = (0.6, 0.3, 0.1)
# Sessions per hour of day (UTC): quiet nights, a lunch bump, busy evenings.
HOURLY_RHYTHM = np.array(
    [2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 11, 11, 9, 6, 4], dtype=float
)
EXPLORING_SESSIONS = 0.10
OFF_TOPIC_INTERACTIONS = 0.15  # an interaction inside a session about another topic
INTERACTIONS_PER_SESSION = 4.0  # mean of a geometric distribution
SECONDS_BETWEEN_EVENTS = 40.0  # mean of an exponential distribution
CATALOG_AT_START = 0.6
TOPIC_COUNT = sum(len(topics) for topics in TOPICS.values())
ZIPF_EXPONENT = 1.1


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; the same config and seed give the same files, byte for byte."""

    events: int = 1_000_000
    users: int = 100_000
    items: int = 20_000
    seed: int = 0
    format: str = "parquet"
    start: str = "2024-01-01"
    days: int = 180
    event_files: int = 1


@dataclass(frozen=True)
class SyntheticFiles:
    """The generated files and what they hold."""

    items: Path
    events: tuple[Path, ...]
    manifest: dict


def generate(config: SyntheticConfig, out: Path) -> SyntheticFiles:
    """Write the catalog, the events and the manifest of one synthetic log into ``out``."""
    if config.format not in FORMATS:
        raise ValueError(f"unknown format {config.format!r}; use one of {', '.join(FORMATS)}")
    if min(config.events, config.users, config.days, config.event_files) < 1:
        raise ValueError("events, users, days and event files must all be at least 1")
    if config.items < TOPIC_COUNT:
        raise ValueError(f"items must be at least {TOPIC_COUNT}: one per topic")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    start = int(datetime.fromisoformat(config.start).replace(tzinfo=UTC).timestamp())
    span = config.days * DAY
    topic_names = [topic for topics in TOPICS.values() for topic in topics]
    topic_shares = rng.dirichlet(np.full(len(topic_names), 4.0))

    catalog = _catalog(config.items, topic_shares, span, rng)
    users = _users(config.users, topic_shares, span, rng)
    events = _events(config.events, catalog, users, topic_shares, span, rng)

    extension = FORMATS[config.format]
    items_path = out / f"items{extension}"
    _write(_items_batches(catalog, topic_names, start, rng), items_path, config.format)
    if config.event_files == 1:
        event_paths = [out / f"events{extension}"]
    else:
        width = len(str(config.event_files))
        event_paths = [
            out / f"events-{index:0{width}d}-of-{config.event_files}{extension}"
            for index in range(1, config.event_files + 1)
        ]
    bounds = np.linspace(0, config.events, config.event_files + 1).astype(np.int64)
    for path, low, high in zip(event_paths, bounds[:-1], bounds[1:], strict=True):
        _write(_event_batches(events, low, high, start), path, config.format)

    counts = np.bincount(events.types, minlength=len(EVENT_TYPES))
    manifest = {
        "config": asdict(config),
        "items": items_path.name,
        "events": [path.name for path in event_paths],
        "event_types": {name: int(count) for name, count in zip(EVENT_TYPES, counts, strict=True)},
        "active_users": int(np.count_nonzero(np.bincount(events.users))),
        "sessions": int(events.sessions.max()) + 1,
        "items_created_during_log": int((catalog.created > 0).sum()),
        "first_event": _iso(start + int(events.times[0])),
        "last_event": _iso(start + int(events.times[-1])),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return SyntheticFiles(items_path, tuple(event_paths), manifest)


def existing(config: SyntheticConfig, out: Path) -> SyntheticFiles | None:
    """The files in ``out`` when an earlier run wrote them with this very config, else None."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("config") != asdict(config):
        return None
    files = SyntheticFiles(
        out / manifest["items"], tuple(out / name for name in manifest["events"]), manifest
    )
    if not all(path.is_file() for path in (files.items, *files.events)):
        return None
    return files


# ---------------------------------------------------------------------------------------------
# The population


@dataclass(frozen=True)
class _Catalog:
    topics: np.ndarray  # topic per item
    created: np.ndarray  # seconds after the log's start (negative: there before it)
    popularity: np.ndarray  # Zipf weight within the topic
    available: np.ndarray


def _catalog(count: int, topic_shares: np.ndarray, span: int, rng: np.random.Generator) -> _Catalog:
    topic_count = len(topic_shares)
    topics = rng.choice(topic_count, size=count, p=topic_shares)
    # Every topic gets an item that exists from the start, so every session finds one.
    topics[:topic_count] = rng.permutation(topic_count)
    at_start = rng.random(count) < CATALOG_AT_START
    at_start[:topic_count] = True
    created = np.where(
        at_start,
        -rng.integers(1, 365 * DAY, size=count),
        rng.integers(0, int(span * 0.95), size=count),
    )
    # A random Zipf rank per item: rank r has weight r^-s within its topic.
    ranks = np.empty(count, dtype=np.int64)
    order = np.lexsort((rng.random(count), topics))
    first_of_topic = np.searchsorted(topics[order], topics[order], side="left")
    ranks[order] = np.arange(count) - first_of_topic + 1
    popularity = ranks.astype(float) ** -ZIPF_EXPONENT
    available = rng.random(count) >= 0.02
    return _Catalog(topics, created, popularity, available)


@dataclass(frozen=True)
class _Users:
    tastes: np.ndarray  # users x 3 topics
    taste_weights: np.ndarray  # users x 3, cumulative, last column 1
    arrival: np.ndarray  # seconds after the log's start
    activity: np.ndarray
    device: np.ndarray


def _users(count: int, topic_shares: np.ndarray, span: int, rng: np.random.Generator) -> _Users:
    topic_count = len(topic_shares)
    tastes = np.empty((count, 3), dtype=np.int64)
    # Three distinct topics per user, drawn by topic share (Gumbel top-k), in chunks.
    for low in range(0, count, 200_000):
        high = min(count, low + 200_000)
        keys = np.log(topic_shares) + rng.gumbel(size=(high - low, topic_count))
        tastes[low:high] = np.argsort(-keys, axis=1)[:, :3]
    kept = rng.choice([1, 2, 3], size=count, p=[0.35, 0.45, 0.2])
    weights = rng.gamma(1.0, size=(count, 3)) * (np.arange(3) < kept[:, None])
    cumulative = np.cumsum(weights, axis=1)
    cumulative /= cumulative[:, -1:]
    arrival = np.where(rng.random(count) < 0.4, 0, rng.integers(0, int(span * 0.9), size=count))
    activity = rng.lognormal(0.0, 1.2, size=count) * (span - arrival) / span
    device = rng.choice(len(DEVICES), size=count, p=DEVICE_SHARES)
    return _Users(tastes, cumulative, arrival, activity, device)


# ---------------------------------------------------------------------------------------------
# The behaviour log


@dataclass(frozen=True)
class _Sessions:
    """Per session: user, start, topic, exploring, context; per interaction: its session,
    funnel depth (1-5 events) and feedback event type (-1: none)."""

    users: np.ndarray
    starts: np.ndarray  # seconds after the log's start, ascending
    topics: np.ndarray
    exploring: np.ndarray
    contexts: np.ndarray  # hour * len(DEVICES) + device
    session_of_interaction: np.ndarray
    depth: np.ndarray
    feedback: np.ndarray

    def event_count(self) -> int:
        return int(self.depth.sum() + (self.feedback >= 0).sum())


@dataclass(frozen=True)
class _Events:
    """One row per event, sorted by time; ``times`` in seconds after the log's start."""

    users: np.ndarray
    items: np.ndarray
    types: np.ndarray
    times: np.ndarray
    values: np.ndarray  # NaN except for rate
    sessions: np.ndarray  # numbered in order of start
    contexts: np.ndarray


def _events(
    count: int,
    catalog: _Catalog,
    users: _Users,
    topic_shares: np.ndarray,
    span: int,
    rng: np.random.Generator,
) -> _Events:
    session_count = max(1, count // 6)
    sessions = _sessions(session_count, users, topic_shares, span, rng)
    while sessions.event_count() < count:
        session_count = int(session_count * 1.3) + 1
        sessions = _sessions(session_count, users, topic_shares, span, rng)

    # Expand interactions into events and keep the first `count` (the last session may end early).
    per_interaction = sessions.depth + (sessions.feedback >= 0)
    owner = np.repeat(np.arange(len(per_interaction)), per_interaction)[:count]
    step = np.arange(count) - (np.cumsum(per_interaction) - per_interaction)[owner]
    types = np.where(
        step < sessions.depth[owner],
        FUNNEL[np.minimum(step, len(FUNNEL) - 1)],
        sessions.feedback[owner],
    ).astype(np.int8)

    session = sessions.session_of_interaction[owner]
    stars = np.where(
        sessions.exploring[session],
        rng.choice(5, size=count, p=STARS_EXPLORING),
        rng.choice(5, size=count, p=STARS_ON_TASTE),
    )
    values = np.where(types == RATE, stars + 1.0, np.nan)

    # Seconds apart within a session, the first event at the session's start.
    gaps = rng.exponential(SECONDS_BETWEEN_EVENTS, size=count).round() + 1
    first_of_session = np.r_[True, session[1:] != session[:-1]]
    gaps[first_of_session] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= np.maximum.accumulate(np.where(first_of_session, elapsed, 0))
    times = sessions.starts[session] + elapsed.astype(np.int64)

    items = _pick_items(sessions, catalog, topic_shares, rng)[owner]
    order = np.argsort(times, kind="stable")
    return _Events(
        users=sessions.users[session][order],
        items=items[order],
        types=types[order],
        times=times[order],
        values=values[order],
        sessions=session[order],
        contexts=sessions.contexts[session][order],
    )


def _sessions(
    count: int, users: _Users, topic_shares: np.ndarray, span: int, rng: np.random.Generator
) -> _Sessions:
    user_count = len(users.arrival)
    # Up to half the sessions give every user a first one; the rest follow activity.
    everyone = min(user_count, count // 2)
    by_activity = np.searchsorted(
        np.cumsum(users.activity) / users.activity.sum(), rng.random(count - everyone)
    )
    session_user = np.minimum(
        np.r_[rng.permutation(user_count)[:everyone], by_activity], user_count - 1
    )

    arrival = users.arrival[session_user]
    moment = arrival + rng.random(count) * (span - arrival - 3_600)
    hour = rng.choice(24, size=count, p=HOURLY_RHYTHM / HOURLY_RHYTHM.sum())
    start = (moment // DAY) * DAY + hour * 3_600 + rng.integers(0, 3_600, size=count)
    start = np.clip(start, arrival, span - 3_600).astype(np.int64)
    order = np.argsort(start, kind="stable")
    session_user, start = session_user[order], start[order]

    pick = (rng.random(count)[:, None] > users.taste_weights[session_user]).sum(axis=1)
    topic = users.tastes[session_user, np.minimum(pick, 2)]
    exploring = rng.random(count) < EXPLORING_SESSIONS
    topic = np.where(exploring, rng.choice(len(topic_shares), size=count, p=topic_shares), topic)
    device = np.where(
        rng.random(count) < 0.8,
        users.device[session_user],
        rng.integers(0, len(DEVICES), size=count),
    )
    context = (start % DAY) // 3_600 * len(DEVICES) + device

    lengths = rng.geometric(1 / INTERACTIONS_PER_SESSION, size=count)
    session_of_interaction = np.repeat(np.arange(count), lengths)
    interactions = len(session_of_interaction)
    on_taste = ~exploring[session_of_interaction]
    depth = 1 + np.where(
        on_taste,
        rng.choice(5, size=interactions, p=DEPTH_ON_TASTE),
        rng.choice(5, size=interactions, p=DEPTH_EXPLORING),
    )
    kinds = [RATE, LIKE, DISLIKE]
    feedback = np.where(
        on_taste,
        rng.choice(kinds, size=interactions, p=FEEDBACK_ON_TASTE),
        rng.choice(kinds, size=interactions, p=FEEDBACK_EXPLORING),
    )
    leaves_feedback = (depth >= 3) & (rng.random(interactions) < FEEDBACK_AFTER_VIEW)
    return _Sessions(
        users=session_user,
        starts=start,
        topics=topic,
        exploring=exploring,
        contexts=context,
        session_of_interaction=session_of_interaction,
        depth=depth,
        feedback=np.where(leaves_feedback, feedback, -1),
    )


def _pick_items(
    sessions: _Sessions, catalog: _Catalog, topic_shares: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """An item per interaction: by popularity among its topic's items created by the session."""
    session = sessions.session_of_interaction
    count = len(session)
    topic = np.where(
        rng.random(count) < OFF_TOPIC_INTERACTIONS,
        rng.choice(len(topic_shares), size=count, p=topic_shares),
        sessions.topics[session],
    )
    # Items sorted by (topic, created): the ones alive at a moment are a prefix of their topic.
    oldest = int(catalog.created.min())
    stride = int(catalog.created.max()) - oldest + 1
    keys = catalog.topics * stride + (catalog.created - oldest)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cumulative = np.r_[0.0, np.cumsum(catalog.popularity[order])]
    moment = np.minimum(sessions.starts[session] - oldest, stride - 1)
    first = np.searchsorted(keys, topic * stride, side="left")
    alive_end = np.searchsorted(keys, topic * stride + moment, side="right")
    draw = cumulative[first] + rng.random(count) * (cumulative[alive_end] - cumulative[first])
    position = np.clip(np.searchsorted(cumulative, draw, side="right") - 1, first, alive_end - 1)
    return order[position]


# ---------------------------------------------------------------------------------------------
# Files


def _items_batches(
    catalog: _Catalog, topic_names: list[str], start: int, rng: np.random.Generator
) -> Iterator[pa.RecordBatch]:
    department_of = {topic: department for department, topics in TOPICS.items() for topic in topics}
    words_of = {topic: words for topics in TOPICS.values() for topic, words in topics.items()}
    count = len(catalog.topics)
    adjectives = rng.integers(0, len(ADJECTIVES), size=count)
    picks = rng.integers(0, 12, size=(count, 5))
    phrases = rng.integers(0, len(PHRASES), size=count)
    series = rng.integers(2, 1_000, size=count)
    numbered = rng.random(count) < 0.3
    titles, descriptions, categories = [], [], []
    for index in range(count):
        topic = topic_names[catalog.topics[index]]
        words = words_of[topic]
        first, second, third, fourth, fifth = (words[pick] for pick in picks[index])
        adjective = ADJECTIVES[adjectives[index]]
        title = f"{adjective} {first} {second if second != first else third}".title()
        titles.append(f"{title} {series[index]}" if numbered[index] else title)
        phrase = PHRASES[phrases[index]].format(topic=topic)
        descriptions.append(
            f"{adjective.capitalize()} {first} for {topic}: {second}, {third} and {fourth}, "
            f"with {fifth}; {phrase}."
        )
        categories.append([department_of[topic], topic])
    created = pa.array((start + catalog.created) * 1_000, pa.timestamp("ms", tz="UTC"))
    table = pa.table(
        {
            "item_id": _prefixed("i", np.arange(count)),
            "title": pa.array(titles, pa.string()),
            "description": pa.array(descriptions, pa.string()),
            "categories": pa.array(categories, pa.list_(pa.string())),
            "created_at": created,
            "available": pa.array(catalog.available),
        }
    )
    yield from table.to_batches()


def _event_batches(events: _Events, low: int, high: int, start: int) -> Iterator[pa.RecordBatch]:
    type_names = pa.array(EVENT_TYPES)
    contexts = pa.array(
        [
            json.dumps({"hour": hour, "device": device}, separators=(", ", ": "))
            for hour in range(24)
            for device in DEVICES
        ]
    )
    for chunk_low in range(low, high, ROWS_PER_CHUNK):
        rows = slice(chunk_low, min(high, chunk_low + ROWS_PER_CHUNK))
        values = events.values[rows]
        yield pa.RecordBatch.from_pydict(
            {
                "user_id": _prefixed("u", events.users[rows]),
                "item_id": _prefixed("i", events.items[rows]),
                "event_type": type_names.take(pa.array(events.types[rows])),
                "timestamp": pa.array(
                    (start + events.times[rows]) * 1_000, pa.timestamp("ms", tz="UTC")
                ),
                "value": pa.array(values, pa.float64(), mask=np.isnan(values)),
                "session_id": _prefixed("s", events.sessions[rows]),
                "context": contexts.take(pa.array(events.contexts[rows])),
            }
        )


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    """Text ids such as 'u42' (ids are text in the contract)."""
    digits = pc.cast(pa.array(numbers, pa.int64()), pa.string())
    return pc.binary_join_element_wise(prefix, digits, "")


def _write(batches: Iterator[pa.RecordBatch], path: Path, file_format: str) -> None:
    """Stream batches into one file, under a temporary name until complete."""
    partial = path.with_name(f".{path.name}.partial")
    first = next(batches)
    if file_format == "parquet":
        with pq.ParquetWriter(partial, first.schema, compression="zstd") as writer:
            for batch in (first, *batches):
                writer.write_batch(batch, row_group_size=ROWS_PER_CHUNK)
    elif file_format == "csv":
        with pa_csv.CSVWriter(partial, _as_text(first).schema) as writer:
            for batch in (first, *batches):
                writer.write_batch(_as_text(batch))
    else:
        with partial.open("w", encoding="utf-8") as handle:
            for batch in (first, *batches):
                handle.write(_as_json_lines(batch))
    partial.replace(path)


def _as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV cells: ISO-8601 times with Z, '|'-separated categories."""
    columns = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            seconds = pc.cast(column, pa.timestamp("s", tz="UTC"))
            column = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
        elif pa.types.is_list(column.type):
            column = pc.binary_join(column, "|")
        columns[name] = column
    return pa.RecordBatch.from_pydict(columns)


def _as_json_lines(batch: pa.RecordBatch) -> str:
    """One JSON object per line; context as a JSON value, nulls left out."""
    text = _as_text(batch).to_pydict()
    if "categories" in text:
        text["categories"] = batch.column("categories").to_pylist()
    names = list(text)
    lines = []
    for row in zip(*(text[name] for name in names), strict=True):
        record = {name: cell for name, cell in zip(names, row, strict=True) if cell is not None}
        if "context" in record:
            record["context"] = json.loads(record["context"])
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat().replace("+00:00", "Z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SyntheticConfig()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--items", type=int, default=defaults.items)
    parser.add_argument("--out", type=Path, required=True, help="folder for the files")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--format", choices=list(FORMATS), default=defaults.format)
    parser.add_argument("--start", default=defaults.start, help="first day (ISO date, UTC)")
    parser.add_argument("--days", type=int, default=defaults.days, help="span of the log")
    parser.add_argument(
        "--event-files", type=int, default=1, help="split the events into this many files"
    )
    arguments = parser.parse_args()
    date.fromisoformat(arguments.start)
    config = SyntheticConfig(
        events=arguments.events,
        users=arguments.users,
        items=arguments.items,
        seed=arguments.seed,
        format=arguments.format,
        start=arguments.start,
        days=arguments.days,
        event_files=arguments.event_files,
    )
    files = generate(config, arguments.out)
    print(json.dumps(files.manifest, indent=2))


if __name__ == "__main__":
    main()
