"""Column names and defaults shared by every part of freshrank (the one place they live)."""

from __future__ import annotations

# Data contract: events.
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
TIMESTAMP = "timestamp"
EVENT_ID = "event_id"
VALUE = "value"
SESSION_ID = "session_id"
CONTEXT = "context"

# Data contract: items.
TITLE = "title"
DESCRIPTION = "description"
CATEGORIES = "categories"
CREATED_AT = "created_at"
AVAILABLE = "available"

# Columns added by freshrank.
OCCURRED_AT = "occurred_at"  # parsed event time, naive UTC
WEIGHT = "weight"
SCORE = "score"
RANK = "rank"
REASON = "reason"
MODEL_VERSION = "model_version"
GENERATED_AT = "generated_at"
ATTRIBUTES = "attributes"  # JSON object of columns outside the contract
CONTEXT_KEY = "context_key"  # the context field a trending list is for, e.g. hour
CONTEXT_VALUE = "context_value"  # its value, normalised as ml.rules.context_value does

REQUIRED_EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP)
OPTIONAL_EVENT_COLUMNS = (EVENT_ID, VALUE, SESSION_ID, CONTEXT)
REQUIRED_ITEM_COLUMNS = (ITEM_ID, TITLE)
OPTIONAL_ITEM_COLUMNS = (DESCRIPTION, CATEGORIES, CREATED_AT, AVAILABLE)

SERVING_COLUMNS = (USER_ID, RANK, ITEM_ID, SCORE, REASON, MODEL_VERSION, GENERATED_AT)
# An id (user, item) and a context value are keys of the serving store's tables, VARCHAR(255)
# there: a longer one could never be served (PostgreSQL refuses it, and the whole publish with it).
MAX_ID_LENGTH = 255
# What an id may not hold, as a regular expression both Python and DuckDB (RE2) read: the C0
# controls and DEL (PostgreSQL's text refuses NUL; a tab or a line break in an id is a broken
# export, and would break the next one).
CONTROL_CHARACTER = r"[\x00-\x1f\x7f]"

# Event types and their interaction weights; `rate` is scaled by value / RATING_MAX.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
    "rate": 4.0,
    "like": 4.0,
    "dislike": -4.0,
}
RATING_MAX = 5.0

DEFAULT_TOP_K = 10
DEFAULT_HISTORY_LENGTH = 50
DEFAULT_FUTURE_TOLERANCE_HOURS = 24.0
CATEGORY_SEPARATOR = "|"

# Evaluation: user segments on a temporal split.
SEGMENT = "segment"
NEW_USER = "new_user"
RETURNING_USER = "returning_user"

# Baseline recommenders and the first ranking layer.
DEFAULT_TRENDING_HALF_LIFE_DAYS = 7.0
DEFAULT_KNN_NEIGHBOURS = 100
DEFAULT_EASE_L2 = 500.0
DEFAULT_EASE_MAX_ITEMS = 20_000

# Event types that do not mean the user consumed the item (it may still be recommended).
NON_CONSUMING_EVENT_TYPES = ("impression",)

# Ranking rules (ml/rules.py).
DEFAULT_IMPRESSION_DEMOTION = 0.85  # per unclicked impression beyond the free ones
DEFAULT_FREE_IMPRESSIONS = 2
DEFAULT_MIN_IMPRESSION_FACTOR = 0.3
DEFAULT_CLICK_WITHOUT_CONVERSION_FACTOR = 0.9
DEFAULT_NEGATIVE_FEEDBACK_STRENGTH = 0.5
DEFAULT_LOW_RATING_THRESHOLD = 2.0  # a rating at or below this counts as a dislike
DEFAULT_MMR_MIN_CANDIDATES = 50  # MMR looks at max(5 x k, this) top-scored items
DEFAULT_CONTEXT_KEY = "hour"
DEFAULT_CONTEXT_MIN_EVENTS = 20  # fewer counted events: fall back to global trending

# Warehouse models: defaults of the dbt vars of the same name (the settings pass them to dbt).
DEFAULT_TRENDING_SHORT_WINDOW_DAYS = 1.0  # item_trending: recent-event windows before as_of
DEFAULT_TRENDING_LONG_WINDOW_DAYS = 7.0
# item_covisitation: each positive event pairs with the user's next this-many events that fall
# within this many hours after it; the later -> earlier pair weighs the backward weight.
DEFAULT_COVISITATION_WINDOW_EVENTS = 5
DEFAULT_COVISITATION_WINDOW_HOURS = 24
DEFAULT_COVISITATION_BACKWARD_WEIGHT = 0.5

# Candidate sources of the ranking pipeline (ml/pipeline/sources.py), by name; the default set
# leaves out the sequential model, which costs a training per backtest cut.
CANDIDATE_SOURCE_NAMES = ("popularity", "covisitation", "text", "item_knn", "ease", "sequential")
DEFAULT_CANDIDATE_SOURCES = ("popularity", "covisitation", "text", "item_knn", "ease")
