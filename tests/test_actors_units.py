"""Unit tests of the actor layer's parts that need no child process: codec, budget, outbox, fan-out."""
from __future__ import annotations

import json
import queue
import threading
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.codec import pack, unpack
from actors.connections import ConnectionManager, Disconnect, Publish, Subscribe, Unsubscribe, topics_for
from actors.process import CrashBudget, Outbox, describe_exit
from tests.conftest import eventually

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_codec_round_trips_plain_data(value: Any) -> None:
    assert unpack(pack(value)) == value


def test_codec_turns_numpy_and_tuples_into_plain_values() -> None:
    msg = {"f": np.float64(1.5), "i": np.int64(-3), "b": np.bool_(True), "a": np.arange(3),
           "t": (1, "x"), "raw": b"\x00\xff"}
    out = unpack(pack(msg))
    assert out == {"f": 1.5, "i": -3, "b": True, "a": [0, 1, 2], "t": [1, "x"], "raw": b"\x00\xff"}
    assert type(out["i"]) is int and type(out["b"]) is bool


def test_codec_rejects_unknown_objects_with_the_type_name() -> None:
    with pytest.raises(TypeError, match="object"):
        pack({"x": object()})


def test_describe_exit_names_the_signal() -> None:
    assert describe_exit(-9) == "killed by signal SIGKILL (exit code -9)"
    assert describe_exit(-15) == "killed by signal SIGTERM (exit code -15)"
    assert describe_exit(3) == "exited with code 3"


def test_crash_budget_allows_limit_deaths_per_window_then_stops() -> None:
    now = [0.0]
    budget = CrashBudget(limit=2, window=10.0, clock=lambda: now[0])
    assert budget.record() and budget.record()
    now[0] = 11.0  # the first two fell out of the window
    assert budget.record() and budget.record()
    assert not budget.record()
    assert budget.snapshot()["exhausted"] is True
    assert not budget.record()  # once exhausted it stays exhausted: no restart loop
    with pytest.raises(ValueError, match="`limit`"):
        CrashBudget(limit=0)


def test_outbox_batches_keeps_order_and_flushes_by_age() -> None:
    q: queue.Queue[bytes] = queue.Queue()
    box = Outbox(q, batch_size=100, batch_age=0.003)
    try:
        for n in range(250):
            box.send({"n": n})
        got: list[int] = []

        def drained() -> bool:
            while not q.empty():
                got.extend(m["n"] for m in unpack(q.get_nowait()))
            return len(got) == 250

        eventually(drained, timeout=5)
        assert got == list(range(250))
        box.send({"n": "late"})  # a lone message still goes out by age, not by size
        assert unpack(q.get(timeout=2)) == [{"n": "late"}]
    finally:
        box.close()


def test_outbox_drops_only_droppable_messages_when_the_queue_stays_full() -> None:
    q: queue.Queue[bytes] = queue.Queue(maxsize=1)
    q.put(b"blocker")
    box = Outbox(q, batch_size=10, batch_age=0.001)
    try:
        box.send({"n": "progress"}, droppable=True)
        box.send({"n": "final"})
        eventually(lambda: box.dropped == 1, timeout=5)
        q.get_nowait()  # the consumer catches up
        assert unpack(q.get(timeout=5)) == [{"n": "final"}]
    finally:
        box.close(timeout=0.5)


# ------------------------------------------------------------------ ConnectionManager
class Frames:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, tuple[int, ...]]] = []
        self.calls = 0

    def __call__(self, batch: list[tuple[str, tuple[int, ...]]]) -> None:
        with self.lock:
            self.items.extend(batch)
            self.calls += 1

    def for_client(self, client: int) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(f) for f, ids in self.items if client in ids]


@pytest.fixture
def cm() -> Iterator[tuple[Any, Frames]]:
    frames = Frames()
    ref = ConnectionManager.start(frames)
    try:
        yield ref, frames
    finally:
        ref.stop(timeout=5)


def _start(bid: str) -> dict[str, Any]:
    return {"type": "backtest_start", "data": {"backtest_id": bid}}


def test_topics_route_by_event_type() -> None:
    assert topics_for(_start("a")) == ("backtest", "backtest:a")
    assert topics_for({"type": "log_entry", "data": {"backtest_id": "a"}}) == ("backtest", "backtest:a")
    assert topics_for({"type": "log_entry", "data": {}}) == ("logs",)
    assert topics_for({"type": "trading_update", "data": {}}) == ("trading",)
    assert topics_for({"type": "sweep_progress", "data": {"sweep_id": "s"}}) == ("backtest", "sweep:s")
    assert topics_for({"type": "bench_event", "data": {}}) == ("bench",)


def test_seq_increases_per_topic_and_frames_are_encoded_once(cm: tuple[Any, Frames]) -> None:
    ref, frames = cm
    for client in (1, 2):
        ref.tell(Subscribe(client, "backtest"))
    ref.tell(Subscribe(3, "backtest:b"))
    ref.tell(Subscribe(3, "logs"))
    ref.tell(Publish([_start("a"), _start("b"), {"type": "log_entry", "data": {"message": "m"}},
                      _start("b")]))
    got = eventually(lambda: len(frames.for_client(3)) == 5 and frames.for_client(3))
    assert [(m["type"], m.get("seq")) for m in got] == [
        ("subscription_confirmed", None), ("subscription_confirmed", None),
        ("backtest_start", 1), ("log_entry", 1), ("backtest_start", 2)]
    assert [m["seq"] for m in frames.for_client(1)[1:]] == [1, 2, 3]
    with frames.lock:  # one frame object per topic event, delivered to both clients at once
        shared = [ids for f, ids in frames.items if '"seq":' in f and len(ids) == 2]
    assert len(shared) == 3 and all(set(ids) == {1, 2} for ids in shared)


def test_subscribe_since_replays_buffered_frames_or_says_not_recovered(cm: tuple[Any, Frames]) -> None:
    ref, frames = cm
    ref.tell(Publish([_start(str(n)) for n in range(5)]))
    ref.tell(Subscribe(7, "backtest", since=3))
    got = eventually(lambda: len(frames.for_client(7)) == 3 and frames.for_client(7))
    assert got[0] == {"type": "subscription_confirmed", "topic": "backtest", "recovered": True}
    assert [m["seq"] for m in got[1:]] == [4, 5]
    ref.tell(Subscribe(8, "backtest", since=99))  # a seq from a previous daemon life
    got = eventually(lambda: frames.for_client(8))
    assert got == [{"type": "subscription_confirmed", "topic": "backtest", "recovered": False}]


def test_ring_buffer_is_bounded_and_gap_is_reported(cm: tuple[Any, Frames]) -> None:
    from actors.connections import RING_SIZE

    ref, frames = cm
    ref.tell(Publish([_start("x")] * (RING_SIZE + 10)))
    ref.tell(Subscribe(5, "backtest", since=3))
    ref.tell(Subscribe(6, "backtest", since=10))
    eventually(lambda: frames.for_client(5) and frames.for_client(6))
    assert frames.for_client(5) == [{"type": "subscription_confirmed", "topic": "backtest",
                                     "recovered": False}]
    assert len(frames.for_client(6)) == 1 + RING_SIZE


def test_unsubscribe_disconnect_and_unknown_topic(cm: tuple[Any, Frames]) -> None:
    ref, frames = cm
    ref.tell(Subscribe(1, "nonsense"))
    ref.tell(Subscribe(1, "trading"))
    ref.tell(Subscribe(2, "trading"))
    ref.tell(Unsubscribe(1, "trading"))
    ref.tell(Disconnect(2))
    ref.tell(Publish([{"type": "trading_update", "data": {"bot_id": "b", "status": "running", "pnl": 1}}]))
    ref.tell(Subscribe(3, "trading"))
    eventually(lambda: frames.for_client(3))
    got = frames.for_client(1)
    assert got[0]["type"] == "error" and "nonsense" in got[0]["error"] and "'trading'" in got[0]["error"]
    assert [m["type"] for m in got] == ["error", "subscription_confirmed", "unsubscription_confirmed"]
    assert [m["type"] for m in frames.for_client(2)] == ["subscription_confirmed"]


def test_run_topics_are_bounded_but_a_subscribed_or_new_one_is_never_forgotten(
        cm: tuple[Any, Frames]) -> None:
    from actors.connections import MAX_RUN_TOPICS

    ref, frames = cm
    for n in range(MAX_RUN_TOPICS):  # every run topic has a subscriber
        ref.tell(Subscribe(n + 1, f"backtest:r{n}"))
    ref.tell(Subscribe(999, "backtest:new"))  # one more: nothing can be forgotten for it
    ref.tell(Publish([_start("new"), _start("r0"), _start("new")]))
    got = eventually(lambda: len(frames.for_client(999)) == 3 and frames.for_client(999))
    assert [m.get("seq") for m in got] == [None, 1, 2]  # the new topic kept its subscriber and seq
    assert [m.get("seq") for m in eventually(lambda: frames.for_client(1)[1:])] == [1]
    ref.tell(Publish([_start(f"unwatched{n}") for n in range(3 * MAX_RUN_TOPICS)]))
    ref.tell(Publish([_start("r5")]))
    assert eventually(lambda: frames.for_client(6)[1:])[0]["seq"] == 1  # still there


# ------------------------------------------------------------------ worker/log pieces
class FakeIO:
    """Collects what a child would put on its outbox (the pieces below only call send)."""

    label = "test-0"

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], bool]] = []

    def send(self, msg: dict[str, Any], droppable: bool = False) -> None:
        self.sent.append((msg, droppable))


def test_progress_emitter_throttles_always_sends_0_and_100_and_cancels() -> None:
    from engine import Cancelled, Progress

    from actors.worker import _Cancel, _ProgressEmitter

    io, cancel = FakeIO(), _Cancel()
    emit = _ProgressEmitter(io, "b1", 1000, cancel)  # type: ignore[arg-type]
    for done in (250, 260, 270):  # the engine's first report is past 0: a 0 % event comes first
        emit(Progress(done, 1000, "2020-01-02", 1, 2.5))
    emit.final()
    sent = [m["data"] for m, _ in io.sent]
    assert [d["progress"] for d in sent] == [0.0, 25.0, 100.0]  # 260/270 throttled away
    assert sent[-1]["status"] == "Processing bar 1000/1000" and sent[1]["trades_count"] == 1
    assert [drop for _, drop in io.sent] == [False, True, False]  # 0 and 100 are never dropped
    emit(Progress(1000, 1000, "2020-01-09", 1, 2.5))  # an engine reporting the end twice
    assert len(io.sent) == 3  # 100 % goes out once
    cancel.request("b1", "cancelled by test")
    with pytest.raises(Cancelled):
        emit(Progress(500, 1000, "2020-01-03", 1, 0.0))
    cancel.clear("b1")
    cancel.request_all("daemon shutting down")
    assert cancel.reason("anything") == "daemon shutting down"


def test_progress_of_a_million_bar_run_reporting_every_bar_stays_near_10_per_second() -> None:
    import time

    from engine import Progress

    from actors.worker import _Cancel, _ProgressEmitter

    io, total = FakeIO(), 1_000_000
    emit = _ProgressEmitter(io, "b1", total, _Cancel())  # type: ignore[arg-type]
    t0 = time.monotonic()
    for done in range(0, total + 1, 20):  # 50k reports as fast as the loop goes
        emit(Progress(done, total, "2020-01-02", 0, 0.0))
    elapsed = time.monotonic() - t0
    progress = [m["data"]["progress"] for m, _ in io.sent]
    assert progress[0] == 0.0 and progress[-1] == 100.0 and progress == sorted(progress)
    assert len(progress) <= 10 * elapsed + 3, (len(progress), elapsed)


def test_log_actor_maps_records_to_spec_entries_rate_limits_and_forwards_barriers(tmp_path: Any) -> None:
    import actors.logproc as lp

    io = FakeIO()
    ref = lp.LogActor.start(io, tmp_path / "logs")  # type: ignore[arg-type]
    rec = {"name": "backtest.abc", "levelname": "CRITICAL", "message": "m", "module": "simulator",
           "funcName": "opened", "lineno": 12, "created": 0.5, "processName": "worker-0", "dropped": 0}
    try:
        ref.ask([rec, {"barrier": "abc"}, dict(rec, name="actors.x")], timeout=5)
        entries = [m for m, _ in io.sent]
        assert entries[0] == {"type": "log_entry", "data": {
            "backtest_id": "abc", "timestamp": "1970-01-01T00:00:00.500Z", "level": "ERROR",
            "message": "m", "module": "simulator", "function": "opened", "line": 12,
            "logger_name": "backtest.abc"}}
        assert entries[1] == {"type": "_log_barrier", "data": {"job_id": "abc"}}
        assert "backtest_id" not in entries[2]["data"] and entries[2]["data"]["logger_name"] == "actors.x"
        io.sent.clear()
        ref.ask([dict(rec, message=str(n)) for n in range(lp.STREAM_LIMIT_PER_S + 50)], timeout=10)
        streamed = [m for m, _ in io.sent if m["type"] == "log_entry"]
        assert len(streamed) <= lp.STREAM_LIMIT_PER_S
    finally:
        ref.stop(timeout=5)
    text = (tmp_path / "logs" / "qmx.log").read_text()
    assert "simulator.opened:12 m" in text and text.count("\n") >= lp.STREAM_LIMIT_PER_S + 50
    assert "not streamed" in text and "[test-0]" in text  # the loss is reported, not silent


def test_record_handler_caps_records_per_second_and_reports_the_drops() -> None:
    import logging

    from actors.process import RecordHandler

    got: list[dict[str, Any]] = []
    handler = RecordHandler(lambda rec: got.append(rec) or True, "worker-0", max_per_second=10)
    logger = logging.getLogger("backtest.flood")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(25):
            logger.warning("record %d", n)
        assert len(got) == 10 and handler.dropped == 15
        assert got[0]["message"] == "record 0" and got[0]["processName"] == "worker-0"
        assert got[0]["module"] == "test_actors_units" and got[0]["lineno"] > 0
        handler._window -= 1.0  # the next second starts
        logger.warning("after")
        assert got[-1]["message"] == "after" and got[-1]["dropped"] == 15 and handler.dropped == 0
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_complete_event_for_transport_carries_the_last_trades_and_says_where_the_rest_are() -> None:
    from actors.supervisor import TRADES_IN_EVENT, for_transport

    trades = [{"entry_bar": i, "pnl": float(i)} for i in range(TRADES_IN_EVENT * 2 + 7)]
    event = {"type": "backtest_complete",
             "data": {"backtest_id": "b1", "total_trades": len(trades), "results": {"trades": trades}}}
    sent = for_transport(event)
    res = sent["data"]["results"]
    assert res["trades"] == trades[-TRADES_IN_EVENT:]
    assert res["trades_total"] == len(trades) and res["trades_truncated"] is True
    assert res["trades_url"] == "/api/backtests/b1/trades"
    assert event["data"]["results"]["trades"] is trades and len(trades) == TRADES_IN_EVENT * 2 + 7
    small = {"type": "backtest_complete", "data": {"backtest_id": "b2", "results": {"trades": trades[:3]}}}
    assert for_transport(small) is small
