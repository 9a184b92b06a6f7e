"""Property tests of the codec: every event type round-trips, encodes deterministically, and
canonical_json agrees with RFC 8785 on the values the ledger hashes."""

from __future__ import annotations

import typing
from typing import Any, Union

import attrs
import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.codec import canonical_json, event_from_dict, event_from_json, event_to_dict, event_to_json
from ledger.errors import UnknownEventType
from ledger.events import TAGS, ResponseAccepted, ResponseFinished, Usage

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # any code point but lone surrogates
BMP_TEXT = st.text(st.characters(exclude_categories=("Cs",), max_codepoint=0xFFFF), max_size=12)


def json_values(ints=INT64, keys=TEXT) -> st.SearchStrategy:
    """JSON-ish values without floats: null, bools, ints, strings, and lists/dicts of them."""
    return st.recursive(
        st.none() | st.booleans() | ints | TEXT,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


JSON_DICTS = st.dictionaries(TEXT, json_values(), max_size=4)


def strategy_for(tp: Any) -> st.SearchStrategy:
    """A strategy for one event field's type, recursing into Optional, containers and attrs classes."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str:
        return TEXT
    if tp is bool:
        return st.booleans()
    if tp is int:
        return INT64
    if tp is Any:
        return json_values()
    if origin is Union:
        return st.one_of([st.none() if a is type(None) else strategy_for(a) for a in args])
    if origin is dict:
        assert args[0] is str
        return JSON_DICTS if args[1] is Any else st.dictionaries(TEXT, strategy_for(args[1]), max_size=4)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if attrs.has(tp):
        return builds(tp)
    raise TypeError(f"no strategy for field type {tp!r}: teach tests/test_codec.py about it")


def builds(cls: type) -> st.SearchStrategy:
    """st.builds(cls) with a strategy for every field (so defaults are exercised too)."""
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in attrs.fields(cls)})


EVENT_CLASSES = sorted(TAGS, key=TAGS.__getitem__)
ANY_EVENT = st.one_of([builds(cls) for cls in EVENT_CLASSES])


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: TAGS[c])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_event_type_round_trips(cls, data):
    """event_from_json(event_to_json(e)) == e for generated instances of each event type."""
    event = data.draw(builds(cls))
    encoded = event_to_json(event)
    decoded = event_from_json(encoded)
    assert decoded == event
    assert type(decoded) is cls
    assert orjson.loads(encoded)["type"] == TAGS[cls]


@settings(max_examples=200, deadline=None)
@given(ANY_EVENT)
def test_event_encoding_is_deterministic(event):
    """Encoding is a function of the event's value: repeated, and after a decode (dict order reset)."""
    encoded = event_to_json(event)
    assert event_to_json(event) == encoded
    assert event_to_json(event_from_json(encoded)) == encoded
    assert event_to_json(event_from_dict(orjson.loads(encoded))) == encoded
    assert encoded == canonical_json(event_to_dict(event))
    assert orjson.dumps(orjson.loads(encoded), option=orjson.OPT_SORT_KEYS) == encoded


@settings(max_examples=300, deadline=None)
@given(json_values(ints=st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1), keys=BMP_TEXT))
def test_canonical_json_is_rfc8785_for_float_free_values(value):
    """canonical_json == rfc8785.dumps for float-free JSON values with BMP-only keys."""
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=100, deadline=None)
@given(ANY_EVENT.map(event_to_dict))
def test_stored_events_are_rfc8785(data):
    """What the ledger stores for an event is its RFC 8785 form whenever the event's keys are BMP-only."""
    def bmp_keys(v: Any) -> bool:
        if isinstance(v, dict):
            return all(max(map(ord, k), default=0) <= 0xFFFF and bmp_keys(x) for k, x in v.items())
        if isinstance(v, list):
            return all(map(bmp_keys, v))
        return isinstance(v, (str, bool, type(None))) or abs(v) < 2**53

    if bmp_keys(data):
        assert canonical_json(data) == rfc8785.dumps(data)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "response.no_such_thing", "response_id": "r"},
        {"type": "ResponseFinished", "response_id": "r"},  # a class name is not a tag
        {"type": None},
        {"response_id": "r"},
        ["response.deleted"],
    ],
)
def test_unknown_tag_raises_unknown_event_type(data):
    """A tag no event class claims (or no tag at all) raises UnknownEventType carrying the tag."""
    with pytest.raises(UnknownEventType) as info:
        event_from_json(orjson.dumps(data))
    assert info.value.tag == (data.get("type") if isinstance(data, dict) else None)


@settings(max_examples=40, deadline=None)
@given(ANY_EVENT, st.text(min_size=1, max_size=10).filter(lambda k: k != "type"), json_values())
def test_extra_field_is_rejected(event, key, value):
    """A stored event with a field its class does not have is refused (forbid_extra_keys), not dropped."""
    data = event_to_dict(event)
    if key in data:
        key = key + "_extra"
    data[key] = value
    with pytest.raises(ValueError, match="extra fields"):
        event_from_dict(data)


def test_extra_field_in_a_nested_value_is_rejected():
    """forbid_extra_keys applies to nested attrs values (Usage) too."""
    data = event_to_dict(ResponseFinished("r", "completed", Usage(1, 2, 3, 4)))
    data["usage"]["surprise_tokens"] = 5
    with pytest.raises(ValueError, match="extra fields"):
        event_from_dict(data)


def test_missing_required_field_is_rejected():
    """A stored event missing a required field does not decode."""
    data = event_to_dict(ResponseFinished("r", "completed", Usage()))
    del data["status"]
    with pytest.raises(ValueError):
        event_from_dict(data)


@pytest.mark.parametrize("field, value", [("params", ["not", "an", "object"]), ("input_items", {"an": "object"}),
                                          ("params", "text")])
def test_json_tree_field_of_the_wrong_shape_is_rejected(field, value):
    """JSON-tree fields pass through undecoded, but their outer type is still checked."""
    data = {"type": TAGS[ResponseAccepted], "response_id": "r", "platform_id": "p", "model": "m", "provider": "demo",
            "stream": False, "params": {}, "input_items": []}
    assert event_from_dict(data) == ResponseAccepted("r", "p", "m", "demo", False, {}, [])
    data[field] = value
    with pytest.raises(ValueError, match=field):
        event_from_dict(data)
