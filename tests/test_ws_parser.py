"""The /ws input parser: every client message yields exactly one well-formed action or error."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.ws import (APP_FRAME_LIMIT, Invalid, Ping, Subscribe, Unsubscribe, error_frame,
                       parse_message)


@pytest.mark.parametrize("text, expected", [
    ('{"action": "ping"}', Ping()),
    ('{"action": "subscribe", "topic": "backtest"}', Subscribe("backtest")),
    ('{"action": "subscribe", "topic": "trading"}', Subscribe("trading")),
    ('{"action": "subscribe", "topic": "logs", "since": 0}', Subscribe("logs", 0)),
    ('{"action": "subscribe", "topic": "backtest:550e8400-e29b", "since": 12}',
     Subscribe("backtest:550e8400-e29b", 12)),
    ('{"action": "subscribe", "topic": "sweep:abc_1"}', Subscribe("sweep:abc_1")),
    ('{"action": "unsubscribe", "topic": "logs"}', Unsubscribe("logs")),
])
def test_valid_actions(text: str, expected: object) -> None:
    assert parse_message(text) == expected


@pytest.mark.parametrize("text, words", [
    ("not json", ["invalid JSON"]),
    ("[1, 2]", ["JSON object", "an array"]),
    ('"ping"', ["JSON object", "a string"]),
    ("{}", ["missing 'action'", "subscribe", "ping"]),
    ('{"action": "dance"}', ["unknown action", '"dance"', "subscribe"]),
    ('{"action": 3}', ["unknown action", "3"]),
    ('{"action": "subscribe"}', ["missing 'topic'", "backtest", "trading", "logs"]),
    ('{"action": "subscribe", "topic": "weather"}', ["unknown topic", '"weather"', "logs"]),
    ('{"action": "subscribe", "topic": 5}', ["'topic' must be a string", "a number"]),
    ('{"action": "subscribe", "topic": "bench"}', ["unknown topic"]),
    ('{"action": "subscribe", "topic": "backtest:"}', ["unknown topic"]),
    ('{"action": "subscribe", "topic": "backtest", "since": -1}', ["'since'", "non-negative"]),
    ('{"action": "subscribe", "topic": "backtest", "since": "5"}', ["'since'"]),
    ('{"action": "subscribe", "topic": "backtest", "since": true}', ["'since'"]),
    ('{"action": "subscribe", "topic": "backtest", "since": 1.5}', ["'since'"]),
    ('{"action": "unsubscribe", "topic": null}', ["missing 'topic'"]),
])
def test_bad_input_says_what_is_wrong_and_allowed(text: str, words: list[str]) -> None:
    result = parse_message(text)
    assert isinstance(result, Invalid)
    for word in words:
        assert word in result.error


def test_oversized_message_is_refused_with_the_limit() -> None:
    text = json.dumps({"action": "ping", "pad": "x" * APP_FRAME_LIMIT})
    result = parse_message(text)
    assert isinstance(result, Invalid) and str(APP_FRAME_LIMIT) in result.error


def test_bench_topic_only_with_diagnostics() -> None:
    assert parse_message('{"action":"subscribe","topic":"bench"}', diagnostics=True) == Subscribe("bench")
    assert "'bench'" in parse_message('{"action":"subscribe"}', diagnostics=True).error  # type: ignore[union-attr]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert isinstance(parse_message("[" * 4000), Invalid)


def _check(result: object) -> None:
    assert isinstance(result, (Ping, Subscribe, Unsubscribe, Invalid))
    if isinstance(result, Invalid):
        frame = json.loads(error_frame(result.error))
        assert set(frame) == {"type", "error"} and frame["type"] == "error"
        assert isinstance(frame["error"], str) and frame["error"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_yields_exactly_one_reply(text: str) -> None:
    _check(parse_message(text))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["action", "topic", "since", "x"]), json_values, max_size=4)
       | st.fixed_dictionaries({"action": st.sampled_from(["subscribe", "unsubscribe", "ping"]),
                                "topic": json_values, "since": json_values}))
def test_any_json_object_yields_exactly_one_reply(body: dict[str, object]) -> None:
    result = parse_message(json.dumps(body))
    _check(result)
    if isinstance(result, Subscribe):
        assert body["action"] == "subscribe" and isinstance(result.topic, str)
        assert result.since is None or (isinstance(result.since, int) and result.since >= 0)
