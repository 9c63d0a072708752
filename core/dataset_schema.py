"""The dataset schema: what a team's logs hold, declared once and read by every job.

A typed frozen dataclass, built strictly (core/strict.py) from the `schema:` section of an
ingest mapping or from the synthetic world's etl/synthetic/schema.yaml, and stored in the
lakehouse as `raw.dataset_schema` (core/schema_table.py). Later jobs read it from there,
never from a constant. The reference of every key is docs/dataset_schema.md.

The platform's own columns are fixed: `event_id`, `ts`, `user_id`, `poi_id` (the item id: the
paper calls items POIs), `dt` (the event's day) and the labels `clicked` / `ordered`; an ingest
mapping renames the export's columns onto them. Everything else (the scene features and the
columns they come from, the users' and items' text, categorical and numeric fields) is declared
here, under the export's own names.
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from core.strict import ConfigError, build

SCHEMA_VERSION = 1
COLUMN_TYPES = ("string", "double", "long", "int", "boolean", "timestamp", "date")
NUMERIC_TYPES = ("double", "long", "int")
# derivations from a timestamp: the hour (0-23, UTC), a part of the day, the weekday's name,
# weekend / weekday, the month (1-12)
DERIVATIONS = ("hour", "part_of_day", "weekday", "weekend", "month")
NUMERIC_DERIVATIONS = ("hour", "month")
PART_OF_DAY_EDGES = (6.0, 12.0, 18.0, 22.0)
PART_OF_DAY_LABELS = ("night", "morning", "afternoon", "evening", "night")
MAX_SCENE_FEATURES = 32
RECENT_LABELS = ("click", "conversion")
TRANSFORMS = ("log1p", "none")
TEXT_ROLES = ("input", "target")  # the stage-1 corpus: x = input slices, y = target slices
# the platform's own columns (an ingest mapping renames the export's columns onto them)
EVENT_KEYS = ("event_id", "ts", "user_id", "poi_id", "dt")
LABELS = {"click": "clicked", "conversion": "ordered"}
ENTITY_KEYS = {"users": "user_id", "items": "poi_id"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# `user_<x>` / `poi_<x>` sample columns that the statistics already use
SAMPLE_WEIGHT = "weight"  # the CTR samples' column of events.weight (1 for drawn negatives)
RESERVED_FIELDS = frozenset({"id", "impressions", "clicks", "orders", "ctr", "cvr"})
_SLICE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SCENE_SLICE_PREFIX = "scene_"  # scene feature f reads as the slice scene_f
CONTRASTIVE = {"users": ("profile", "none"), "items": ("business", "basic", "none")}
# request-item derivations: the great-circle distance from the request to the item (haversine on a
# sphere of EARTH_RADIUS_KM), and whether the item's opening hours include the event's UTC minute
REQUEST_ITEM_DERIVATIONS = ("distance_km", "open_now")
REQUEST_ITEM_LOG1P = ("distance_km",)  # those that enter the CTR models as log1p
EARTH_RADIUS_KM = 6371.0
# opening hours "HH:MM-HH:MM", the whole value (Spark and the scoring model each anchor it): close
# before open = past midnight, equal = open all day; a value that does not match is unreadable
OPENING_HOURS = r"([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})"
REQUEST_ITEM_FILL = 0.0  # the value of a request-item column whose inputs are missing or unreadable
# what a request-item feature may not be named: the samples' own columns and their prefixes
SAMPLE_PREFIXES = ("user_", "poi_", "scene_")
SAMPLE_OWN = ("sample_id", "click", "ctcvr", "neg_rate", SAMPLE_WEIGHT, "split")


class SchemaError(ConfigError):
    pass


def _placeholders(template: str) -> list[str]:
    """The `{name}` fields of a format string (ValueError for a malformed one)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _check_template(template: str, allowed: set[str], what: str) -> list[str]:
    try:
        names = _placeholders(template)
    except ValueError as err:
        raise ValueError(f"{what}: template {template!r} is not a format string ({err})") from None
    if not names:
        raise ValueError(f"{what}: template {template!r} has no {{value}}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{what}: template {template!r} names {{{unknown[0]}}} (allowed: {sorted(allowed)})")
    return names


@dataclass(frozen=True)
class Buckets:
    """A numeric value -> a label: below edges[0] -> labels[0], edges[i-1] <= v < edges[i] ->
    labels[i], from edges[-1] on -> labels[-1]. Labels may repeat (winter at both ends)."""

    edges: tuple[float, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("buckets.edges must hold at least one edge")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"buckets.edges must be increasing, got {list(self.edges)}")
        if len(self.labels) != len(self.edges) + 1:
            raise ValueError(
                f"buckets.labels must hold {len(self.edges) + 1} labels (one more than the edges),"
                f" got {len(self.labels)}"
            )
        if any(not label.strip() for label in self.labels):
            raise ValueError("buckets.labels must be non-empty")


@dataclass(frozen=True)
class SceneFeature:
    """One real-time scene feature: its source, its kind and how it reads as text for the LLM.

    Exactly one source: `column` (an event column), `derive` (from the event timestamp, or from
    `column` when that is a timestamp column) or `recent` (an item field of the user's latest
    positive on an earlier day: a behaviour feature, point in time). `buckets` turns a numeric
    value into labels; `values` renames values (e.g. booleans); `default` is the text of a
    missing value ("" keeps it missing).
    """

    name: str
    column: str = ""
    column_type: str = "string"
    derive: str = ""
    recent: str = ""
    recent_label: str = "conversion"  # click | conversion: which positives `recent` looks at
    buckets: Buckets | None = None
    values: dict[str, str] = field(default_factory=dict)
    default: str = ""
    template: str = "{value}"

    def __post_init__(self) -> None:
        what = f"scene feature {self.name!r}"
        if not _NAME.match(self.name):
            raise ValueError(f"{what}: name must be lower snake case (it names tokens and columns)")
        sources = [key for key in ("column", "derive", "recent") if getattr(self, key)]
        if self.derive and self.column:
            sources.remove("column")
        if len(sources) != 1:
            raise ValueError(
                f"{what}: give exactly one source of column, derive or recent, got {sources or 'none'}"
            )
        if self.column_type not in COLUMN_TYPES:
            raise ValueError(
                f"{what}: column_type must be one of {', '.join(COLUMN_TYPES)}, got {self.column_type!r}"
            )
        if self.derive:
            if self.derive not in DERIVATIONS:
                raise ValueError(
                    f"{what}: derive must be one of {', '.join(DERIVATIONS)}, got {self.derive!r}"
                )
            if self.column and self.column_type != "timestamp":
                raise ValueError(
                    f"{what}: derive {self.derive} needs a timestamp column, {self.column} is declared"
                    f" {self.column_type}"
                )
        if self.recent and self.recent_label not in RECENT_LABELS:
            raise ValueError(f"{what}: recent_label must be one of {', '.join(RECENT_LABELS)}")
        if self.buckets is not None:
            numeric = self.derive in NUMERIC_DERIVATIONS or (
                self.column and not self.derive and self.column_type in NUMERIC_TYPES
            )
            if not numeric:
                raise ValueError(
                    f"{what}: buckets need a numeric source (a double/long/int column, or derive"
                    f" {' or '.join(NUMERIC_DERIVATIONS)})"
                )
        _check_template(self.template, {"value"}, what)

    @property
    def kind(self) -> str:
        return "bucketed" if self.buckets is not None else "categorical"

    def text(self, value: str) -> str:
        """The text the LLM reads for a value: the template filled in."""
        return self.template.format(value=value)


@dataclass(frozen=True)
class SliceText:
    """How one keyword slice's text is made from fields.

    Each field's value is renamed by `values[field]` (a value renamed to "" is left out), else
    formatted by `formats[field]` (printf style, as Spark's format_string: "rating %.1f of 5");
    the fields are joined by `separator` (missing ones left out) and put into `template`. A row
    whose fields are all missing has no slice.
    """

    name: str  # the slice, e.g. POI_name -> <POI_name>...</POI_name>
    fields: tuple[str, ...]
    separator: str = ", "
    template: str = "{value}"
    formats: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"text slice {self.name!r}"
        if not _SLICE.match(self.name):
            raise ValueError(f"{what}: name must be letters, digits and underscores")
        if self.name.startswith(SCENE_SLICE_PREFIX):
            raise ValueError(f"{what}: names starting {SCENE_SLICE_PREFIX} are the scene features' slices")
        if not self.fields:
            raise ValueError(f"{what}: fields must name at least one column")
        _check_template(self.template, {"value"}, what)
        for key in (*self.formats, *self.values):
            if key not in self.fields:
                raise ValueError(f"{what}: formats / values name {key}, not one of its fields")
        for key, fmt in self.formats.items():
            if fmt.count("%") - 2 * fmt.count("%%") != 1:
                raise ValueError(f"{what}: formats.{key} must hold exactly one %-conversion, got {fmt!r}")


@dataclass(frozen=True)
class TextSlice(SliceText):
    """A slice of a user's or an item's own text: its stage-1 role and its stage-2 part.

    `contrastive`: items: business (text a of the item-item pairs) | basic (text b) | none;
    users: profile | none. The comprehensive text (user-item pairs, `embed texts`) is every slice
    not `none`. "" = business for items, profile for users.
    """

    role: str = "input"  # stage 1: input (x) or target (y)
    contrastive: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.role not in TEXT_ROLES:
            raise ValueError(
                f"text slice {self.name!r}: role must be one of {', '.join(TEXT_ROLES)}, got {self.role!r}"
            )


@dataclass(frozen=True)
class UserActions:
    """The user's action slices (the b text of the user-user pairs), built from each user's
    positives before the history end (conversions when the log has them, else clicks):
    - history: the items of the latest positives, each by these item fields, oldest first;
    - environment: the scene of each of those positives, by event columns, non-`recent` scene
      features (their text value) or timestamp derivations (hour, weekday, ...);
    - statistics: numeric item fields, their mean over the user's clicks (and conversions).
    Not declared: history = the first item slice's fields, environment = the non-recent scene
    features; `user_actions: {}` = no action text.
    """

    history: SliceText | None = None
    environment: SliceText | None = None
    statistics: SliceText | None = None

    def slices(self) -> tuple[SliceText, ...]:
        return tuple(s for s in (self.history, self.environment, self.statistics) if s is not None)


@dataclass(frozen=True)
class NumericField:
    column: str
    transform: str = "log1p"  # log1p | none
    column_type: str = "double"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"numeric field {self.column}: transform must be one of {', '.join(TRANSFORMS)}")
        if self.column_type not in NUMERIC_TYPES:
            raise ValueError(
                f"numeric field {self.column}: column_type must be one of {', '.join(NUMERIC_TYPES)}"
            )


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"range low {self.low} is above high {self.high}")


@dataclass(frozen=True)
class EntitySchema:
    """Users or items: text slices in slice order, categorical fields (hashed embeddings in the CTR
    models), numeric fields, and what `etl clean` checks (vocabularies, ranges, required)."""

    text: tuple[TextSlice, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[NumericField, ...] = ()
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    columns: dict[str, str] = field(
        default_factory=dict
    )  # further columns kept in the raw table: name -> type

    def column_types(self) -> dict[str, str]:
        """Every declared column of the table (not the id) and its type."""
        types: dict[str, str] = {}
        for text_slice in self.text:
            for name in text_slice.fields:
                types.setdefault(name, "string")
        for name in self.categorical:
            types.setdefault(name, "string")
        for numeric in self.numeric:
            types[numeric.column] = numeric.column_type
        types.update(self.columns)
        return types


@dataclass(frozen=True)
class EventsSchema:
    """What the event log holds beyond the platform's own columns."""

    positive_only: bool = False  # no click label: every event is a positive
    conversion: bool = False  # a conversion label (`ordered`) beside the click
    request_id: bool = False  # events of one request (a list shown at once) share it
    position: bool = False  # the list position, 1-based
    weight: str = ""  # a numeric event column (a usage count or weight); "" = none
    categorical: tuple[str, ...] = ()  # event context fields that are not scene features (CTR fields)
    test_days: int = 1  # the log's last days held out as the test split
    columns: dict[str, str] = field(default_factory=dict)  # further event columns: name -> type
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.positive_only and self.conversion:
            pass  # a positive-only log may still say which positives converted
        if self.test_days < 1:
            raise ValueError(f"events.test_days must be >= 1, got {self.test_days}")

    def labels(self) -> tuple[str, ...]:
        """The label columns the export must provide."""
        click = () if self.positive_only else (LABELS["click"],)
        return click + ((LABELS["conversion"],) if self.conversion else ())


@dataclass(frozen=True)
class GroupKey:
    """Negatives share the event's value of a scene feature with the item's column."""

    scene: str  # a scene feature of the event
    item: str  # an items column holding the same values


@dataclass(frozen=True)
class OpenHours:
    """Negatives are open at the event's time: an item column of "HH:MM-HH:MM" opening hours
    (close before open = past midnight, equal = all day) against an hour-derived scene feature;
    an item is available at a value when it is open at the start of at least one of its hours."""

    item: str
    scene: str


@dataclass(frozen=True)
class NegativesSchema:
    """Where positive-only sampling draws negatives: the items of the event's group (no group
    keys and no open hours = every item)."""

    group: tuple[GroupKey, ...] = ()
    open_hours: OpenHours | None = None

    def pool_columns(self) -> tuple[str, ...]:
        """The scene features that key a candidate pool, in order."""
        keys = tuple(g.scene for g in self.group)
        return keys + ((self.open_hours.scene,) if self.open_hours else ())


@dataclass(frozen=True)
class RequestItemFeature:
    """A numeric feature of the request and the item together, derived for every sample (`etl
    samples`) and by the scoring model from raw rows:
    - `distance_km`: `event: [lat, lon]` (numeric events columns) to `item: [lat, lon]` (numeric
      items columns), the great-circle (haversine) distance in km on a sphere of EARTH_RADIUS_KM;
    - `open_now`: `item: <opening-hours column>` (a string items column, "HH:MM-HH:MM"): 1.0 when
      the item is open at the event's `ts` (its UTC minute of day), else 0.0.
    A missing or unreadable input gives REQUEST_ITEM_FILL (0.0).
    """

    name: str
    derive: str
    event: tuple[str, ...] = ()
    item: str | tuple[str, ...] = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be lower snake case (it names a sample column)")
        if self.derive not in REQUEST_ITEM_DERIVATIONS:
            raise ValueError(
                f"derive must be one of {', '.join(REQUEST_ITEM_DERIVATIONS)}, got {self.derive!r}"
            )
        if self.derive == "distance_km":
            if len(self.event) != 2:
                raise ValueError(
                    f"event: distance_km needs [lat, lon] events columns, got {list(self.event)}"
                )
            if isinstance(self.item, str) or len(self.item) != 2:
                raise ValueError(f"item: distance_km needs [lat, lon] items columns, got {self.item!r}")
        if self.derive == "open_now":
            if self.event:
                raise ValueError("event: open_now reads the event's ts, declare no events columns")
            if not isinstance(self.item, str) or not self.item:
                raise ValueError(f"item: open_now needs one opening-hours items column, got {self.item!r}")

    @property
    def event_columns(self) -> tuple[str, ...]:
        """The event's columns it reads: `event`, or the platform's `ts` for open_now."""
        return ("ts",) if self.derive == "open_now" else tuple(self.event)

    @property
    def item_columns(self) -> tuple[str, ...]:
        return (self.item,) if isinstance(self.item, str) else tuple(self.item)

    @property
    def inputs(self) -> tuple[str, ...]:
        """What a scoring row needs to derive it, in the derivation's order: the event's columns
        under their own names, the item's as the samples name item fields (`poi_<c>`)."""
        return (*self.event_columns, *[f"poi_{c}" for c in self.item_columns])


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    events: EventsSchema = field(default_factory=EventsSchema)
    scene_features: tuple[SceneFeature, ...] = ()
    users: EntitySchema = field(default_factory=EntitySchema)
    items: EntitySchema = field(default_factory=EntitySchema)
    negatives: NegativesSchema = field(default_factory=NegativesSchema)
    user_actions: UserActions | None = None  # None: the defaults (see UserActions), filled here
    request_item: tuple[RequestItemFeature, ...] = ()  # absent (older stored schemas too): none

    def __post_init__(self) -> None:
        if self.user_actions is None:
            object.__setattr__(self, "user_actions", self._default_actions())
        if not self.name.strip():
            raise ValueError("name must be a non-empty dataset name")
        if not 1 <= len(self.scene_features) <= MAX_SCENE_FEATURES:
            raise ValueError(
                f"scene_features must declare 1 to {MAX_SCENE_FEATURES} features, got {len(self.scene_features)}"
            )
        names = [f.name for f in self.scene_features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"scene_features: two features are named {twice[0]}")
        slices = [s.name for entity in (self.users, self.items) for s in entity.text]
        slices += [s.name for s in self.user_actions.slices()]
        twice = sorted({n for n in slices if slices.count(n) > 1})
        if twice:
            raise ValueError(f"two text slices are named {twice[0]}")
        for side, entity in (("users", self.users), ("items", self.items)):
            for text_slice in entity.text:
                if text_slice.contrastive and text_slice.contrastive not in CONTRASTIVE[side]:
                    raise ValueError(
                        f"{side}.text {text_slice.name}: contrastive must be one of"
                        f" {', '.join(CONTRASTIVE[side])}, got {text_slice.contrastive!r}"
                    )
        item_columns = set(self.items.column_types())
        for feature in self.scene_features:
            if feature.recent and feature.recent not in item_columns:
                raise ValueError(
                    f"scene feature {feature.name!r}: recent names {feature.recent}, not a declared items column"
                )
            if feature.recent and feature.recent_label == "conversion" and not self.events.conversion:
                raise ValueError(
                    f"scene feature {feature.name!r}: recent_label conversion needs events.conversion: true"
                )
        event_columns = self.event_column_types()
        for name, kind in event_columns.items():
            if name in EVENT_KEYS or name in LABELS.values():
                raise ValueError(
                    f"events column {name} is one of the platform's own columns (declare it once)"
                )
            if kind not in COLUMN_TYPES:
                raise ValueError(
                    f"events column {name}: type must be one of {', '.join(COLUMN_TYPES)}, got {kind!r}"
                )
        if self.events.weight and event_columns.get(self.events.weight) not in NUMERIC_TYPES:
            raise ValueError(f"events.weight: {self.events.weight} must be a declared numeric event column")
        for side, entity in (("users", self.users), ("items", self.items)):
            for name, kind in entity.column_types().items():
                if name == ENTITY_KEYS[side]:
                    raise ValueError(f"{side} column {name} is the {side}' id (declare it once)")
                if kind not in COLUMN_TYPES:
                    raise ValueError(f"{side} column {name}: type must be one of {', '.join(COLUMN_TYPES)}")
            _check_known(side, entity.vocabularies, entity.ranges, entity.required, entity.column_types())
        _check_known(
            "events", self.events.vocabularies, self.events.ranges, self.events.required, event_columns
        )
        for side, entity in (("users", self.users), ("items", self.items)):
            fields = {*entity.categorical, *(n.column for n in entity.numeric)}
            clash = sorted(fields & RESERVED_FIELDS)
            if clash:
                raise ValueError(
                    f"{side} field {clash[0]} clashes with a statistics column"
                    f" (reserved: {', '.join(sorted(RESERVED_FIELDS))})"
                )
        self._check_negatives()
        self._check_actions()
        self._check_request_item()

    def _default_actions(self) -> UserActions:
        first = self.items.text[0] if self.items.text else None
        history = None
        if first is not None:  # the first item slice's formatting, as a plain slice
            shared = {f.name: getattr(first, f.name) for f in dataclass_fields(SliceText)}
            history = SliceText(**{**shared, "name": "user_hist"})
        scene = tuple(f.name for f in self.scene_features if not f.recent)
        environment = SliceText(name="user_env", fields=scene) if scene else None
        return UserActions(history=history, environment=environment)

    def _check_actions(self) -> None:
        actions = self.user_actions
        item_columns = self.items.column_types()
        if actions.history is not None:
            for name in actions.history.fields:
                if name not in item_columns:
                    raise ValueError(f"user_actions.history: {name} is not a declared items column")
        if actions.environment is not None:
            known = {*self.event_column_types(), *DERIVATIONS}
            for name in actions.environment.fields:
                feature = next((f for f in self.scene_features if f.name == name), None)
                if feature is not None and feature.recent:
                    raise ValueError(
                        f"user_actions.environment: {name} is a `recent` scene feature, not part of an event"
                    )
                if feature is None and name not in known:
                    raise ValueError(
                        f"user_actions.environment: {name} is not a scene feature, an events column"
                        f" or a derivation ({', '.join(DERIVATIONS)})"
                    )
        if actions.statistics is not None:
            for name in actions.statistics.fields:
                if item_columns.get(name) not in NUMERIC_TYPES:
                    raise ValueError(f"user_actions.statistics: {name} is not a numeric items column")

    def _check_negatives(self) -> None:
        item_columns = self.items.column_types()
        keys = self.negatives.pool_columns()
        if len(set(keys)) != len(keys):
            raise ValueError("negatives: a scene feature keys the pool twice")
        for key in self.negatives.group:
            self.scene_feature(key.scene)
            if key.item not in item_columns:
                raise ValueError(f"negatives.group: {key.item} is not a declared items column")
        hours = self.negatives.open_hours
        if hours is not None:
            if hours.item not in item_columns:
                raise ValueError(f"negatives.open_hours.item: {hours.item} is not a declared items column")
            scene = self.scene_feature(hours.scene)
            if scene.derive not in ("hour", "part_of_day") or scene.column:
                raise ValueError(
                    f"negatives.open_hours.scene: {hours.scene} is not derived from the event hour"
                )

    def _check_request_item(self) -> None:
        event_types, item_types = self.event_column_types(), self.items.column_types()
        names = [f.name for f in self.request_item]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"request_item: two features are named {twice[0]}")
        taken = {*SAMPLE_OWN, *EVENT_KEYS, *LABELS.values(), *event_types, "request_id", "position"}
        taken |= {f"{c}_id" for c in self.events.categorical}
        for i, feature in enumerate(self.request_item):
            key = f"request_item[{i}]"
            if feature.name in taken or feature.name.startswith(SAMPLE_PREFIXES):
                raise ValueError(
                    f"{key}.name: {feature.name} clashes with a sample column (or the {', '.join(SAMPLE_PREFIXES)}"
                    " columns of users, items and the scene)"
                )
            wanted = NUMERIC_TYPES if feature.derive == "distance_km" else ("string",)
            for side, columns, types in (
                ("events", feature.event, event_types),
                ("items", feature.item_columns, item_types),
            ):
                for column in columns:
                    if column not in types:
                        raise ValueError(f"{key}.{side[:-1]}: {column} is not a declared {side} column")
                    if types[column] not in wanted:
                        raise ValueError(
                            f"{key}.{side[:-1]}: {column} is declared {types[column]},"
                            f" {feature.derive} needs {' / '.join(wanted)}"
                        )

    # -- what the tables hold ---------------------------------------------------------------------
    @property
    def scene_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.scene_features)

    def scene_feature(self, name: str) -> SceneFeature:
        for feature in self.scene_features:
            if feature.name == name:
                return feature
        raise ValueError(
            f"no scene feature {name!r} in dataset schema {self.name!r} (has: {', '.join(self.scene_names)})"
        )

    def event_column_types(self) -> dict[str, str]:
        """The declared event columns beyond the platform's own, with their types."""
        types = {f.column: f.column_type for f in self.scene_features if f.column}
        types.update({name: "string" for name in self.events.categorical})
        types.update(self.events.columns)
        return types

    def raw_columns(self, table: str) -> dict[str, str]:
        """Every column of a raw table (`users`, `pois`, `impressions`) -> its type."""
        if table == "users":
            return {"user_id": "long", **self.users.column_types()}
        if table == "pois":
            return {"poi_id": "long", **self.items.column_types()}
        if table == "impressions":
            own = {"event_id": "long", "ts": "timestamp", "user_id": "long", "poi_id": "long"}
            optional = {"request_id": "long"} if self.events.request_id else {}
            optional |= {"position": "int"} if self.events.position else {}
            labels = {name: "int" for name in LABELS.values()}
            return {**own, **optional, **self.event_column_types(), **labels, "dt": "date"}
        raise KeyError(f"no raw table {table!r} (users, pois, impressions)")

    def to_dict(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, **_plain(asdict(self))}


@dataclass(frozen=True)
class SampleFields:
    """The columns a CTR sample carries besides ids, statistics, scene values and labels, as the
    dataset schema declares them: users' and items' fields prefixed `user_` / `poi_`, event fields
    under their own names, request-item features under their names. String fields are hashed
    (`<column>_id` = xxhash64(column, value)), integer ones are embedded by value (`small_int`),
    numeric ones (and the request-item features) enter as they are or as log1p."""

    user_fields: dict[str, str]  # raw users column -> sample column
    item_fields: dict[str, str]  # raw pois column -> sample column
    event_fields: tuple[str, ...]  # raw impressions columns kept under their own names
    hashed: tuple[str, ...]  # sample columns hashed into embedding tables
    small_int: tuple[str, ...]  # integer sample columns embedded by value
    numeric: tuple[str, ...]  # declared numeric sample columns, then the request-item ones
    log1p: tuple[str, ...]  # those of `numeric` that enter as log1p
    request_item: tuple[RequestItemFeature, ...] = ()  # the request-item features (last in `numeric`)


def sample_fields(schema: DatasetSchema) -> SampleFields:
    """The sample columns of a schema, in a fixed order: users', events', then items' fields, then
    the request-item features (numeric: distance_km as log1p, open_now as it is)."""
    integer = ("int", "long")
    user_types, item_types = schema.users.column_types(), schema.items.column_types()
    user_fields = {
        c: f"user_{c}" for c in (*schema.users.categorical, *(n.column for n in schema.users.numeric))
    }
    item_fields = {
        c: f"poi_{c}" for c in (*schema.items.categorical, *(n.column for n in schema.items.numeric))
    }
    position = ("position",) if schema.events.position else ()
    hashed = (
        *[user_fields[c] for c in schema.users.categorical if user_types[c] not in integer],
        *schema.events.categorical,
        *[item_fields[c] for c in schema.items.categorical if item_types[c] not in integer],
    )
    small_int = (
        *[user_fields[c] for c in schema.users.categorical if user_types[c] in integer],
        *[item_fields[c] for c in schema.items.categorical if item_types[c] in integer],
        *position,
    )
    numerics = [(user_fields[n.column], n) for n in schema.users.numeric]
    numerics += [(item_fields[n.column], n) for n in schema.items.numeric]
    derived = [(f.name, f.derive in REQUEST_ITEM_LOG1P) for f in schema.request_item]
    return SampleFields(
        user_fields=user_fields,
        item_fields=item_fields,
        event_fields=(*schema.events.categorical, *position),
        hashed=hashed,
        small_int=small_int,
        numeric=(*[name for name, _ in numerics], *[name for name, _ in derived]),
        log1p=(
            *[name for name, n in numerics if n.transform == "log1p"],
            *[name for name, log in derived if log],
        ),
        request_item=schema.request_item,
    )


def _check_known(side, vocabularies, ranges, required, columns) -> None:
    for key, names in (("vocabularies", vocabularies), ("ranges", ranges), ("required", required)):
        for name in names:
            if name not in columns:
                raise ValueError(f"{side}.{key}: {name} is not a declared {side} column")


def _plain(value: Any) -> Any:
    """Tuples -> lists and None fields dropped, so to_dict() round-trips through YAML / JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_schema(data: Any, where: str) -> DatasetSchema:
    """A DatasetSchema from parsed YAML / JSON; `where` (a file and key) starts every error."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: the dataset schema must be a mapping")
    data = dict(data)
    version = data.pop("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{where}: key version must be {SCHEMA_VERSION}, got {version!r}")
    try:
        return build(DatasetSchema, data, label="schema")
    except ConfigError as err:
        raise SchemaError(f"{where}: {err}") from None


def schema_difference(stored: DatasetSchema, new: DatasetSchema) -> list[str]:
    """What differs between two schemas, one short line each (empty when they are the same)."""
    lines = []
    old_features, new_features = set(stored.scene_names), set(new.scene_names)
    if new_features - old_features:
        lines.append(f"scene features added: {', '.join(sorted(new_features - old_features))}")
    if old_features - new_features:
        lines.append(f"scene features removed: {', '.join(sorted(old_features - new_features))}")
    for name in sorted(old_features & new_features):
        if stored.scene_feature(name) != new.scene_feature(name):
            lines.append(f"scene feature {name} changed")
    old_derived = {f.name: f for f in stored.request_item}
    new_derived = {f.name: f for f in new.request_item}
    if new_derived.keys() - old_derived.keys():
        lines.append(f"request_item added: {', '.join(sorted(new_derived.keys() - old_derived.keys()))}")
    if old_derived.keys() - new_derived.keys():
        lines.append(f"request_item removed: {', '.join(sorted(old_derived.keys() - new_derived.keys()))}")
    for name in sorted(old_derived.keys() & new_derived.keys()):
        if old_derived[name] != new_derived[name]:
            lines.append(f"request_item {name} changed")
    for table in ("users", "pois", "impressions"):
        old_columns, new_columns = stored.raw_columns(table), new.raw_columns(table)
        if old_columns != new_columns:
            added = sorted(set(new_columns) - set(old_columns))
            removed = sorted(set(old_columns) - set(new_columns))
            retyped = sorted(
                c for c in set(old_columns) & set(new_columns) if old_columns[c] != new_columns[c]
            )
            parts = [f"+{c}" for c in added] + [f"-{c}" for c in removed] + [f"{c} retyped" for c in retyped]
            lines.append(f"raw.{table} columns: {', '.join(parts)}")
    if not lines and stored != new:
        lines.append("texts, fields or checks changed")
    return lines


def load_schema_file(path: str | Path | Traversable) -> DatasetSchema:
    """A dataset schema from its own YAML file (the synthetic world's: etl/synthetic/schema.yaml)."""
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise SchemaError(f"dataset schema {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SchemaError(f"dataset schema {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_schema(data, str(path))
