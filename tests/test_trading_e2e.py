"""End to end against a real `qmx serve`: bots over REST/CLI, `trading_update` over /ws,
the kill switch, a SIGKILLed trading process and a daemon restart with bot state intact."""
from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from actors.trading import kill_requested, request_kill
from server.cli import main as qmx
from tests.conftest import eventually
from tests.fixtures_daemon import Daemon, api, stop_daemon

pytestmark = pytest.mark.e2e

BOT = {"symbol": "SYNTH", "timeframe": "H1", "start_date": "2018-01-01", "end_date": "2018-06-30",
       "strategy": "sma_cross", "params": {"fast": 5, "slow": 12},
       "feed": {"type": "replay", "seconds_per_bar": 0.02}}
BOOM = '''
from engine.strategy import Param, Strategy

class Boom(Strategy):
    name = "boom"
    params = (Param("at", 3, int, "bar index that raises", min=0),)
    def next(self, i, position):
        if i >= self.at:
            raise RuntimeError(f"boom at bar {i}")
        return 1


class Hold(Strategy):
    name = "hold"
    def next(self, i, position):
        return 1
'''
# Stuck goes long, then hangs on bar 20 (and says so in .stuck<tag>) while the .gate file
# exists: a bot that cannot obey the kill switch or a stop.
STUCK = '''
import time
from pathlib import Path
from engine.strategy import Param, Strategy


class Stuck(Strategy):
    name = "stuck"
    params = (Param("tag", 0, int, "names the file saying it is stuck", min=0),)
    def next(self, i, position):
        if i >= 20:
            Path(__file__).with_suffix(f".stuck{self.tag}").touch()
            while Path(__file__).with_suffix(".gate").exists():
                time.sleep(0.05)
        return 1
'''
# In the trading process only, importing this waits while the .gate file beside it exists: a
# bot whose start (its build) is in progress when the process dies. Hold5 (a backtest) waits on
# its 6th bar while the .hold file exists: a backtest that is running when the process dies.
GATED = '''
import time
from pathlib import Path
from engine.strategy import Strategy

if open("/proc/self/comm").read().strip() == "qmx-trading":
    while Path(__file__).with_suffix(".gate").exists():
        time.sleep(0.05)


class Gated(Strategy):
    name = "gated"
    def next(self, i, position):
        return 1


class Hold5(Strategy):
    name = "hold5"
    def next(self, i, position):
        while i == 5 and Path(__file__).with_suffix(".hold").exists():
            time.sleep(0.05)
        return 1
'''


class Listener:
    """A WebSocket client on its own thread, subscribed to ``topic``, keeping every frame."""

    def __init__(self, daemon: Daemon, topic: str) -> None:
        self.frames: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(daemon["ws_url"], topic), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"no subscription_confirmed for {topic!r}"

    def _run(self, url: str, topic: str) -> None:
        with connect(url) as ws:
            ws.send(json.dumps({"action": "subscribe", "topic": topic}))
            if json.loads(ws.recv(10)) == {"type": "subscription_confirmed", "topic": topic}:
                self._ready.set()
            while not self._stop.is_set():
                try:
                    raw = ws.recv(0.2)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return
                with self._lock:
                    self.frames.append(json.loads(raw))

    def updates(self, bot_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [f["data"] for f in self.frames
                    if f["type"] == "trading_update" and f["data"]["bot_id"] == bot_id]

    def statuses(self, bot_id: str) -> list[str]:
        out: list[str] = []
        for u in self.updates(bot_id):
            if not out or out[-1] != u["status"]:
                out.append(u["status"])
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def listen() -> Any:
    opened: list[Listener] = []

    def open_(daemon: Daemon, topic: str) -> Listener:
        opened.append(Listener(daemon, topic))
        return opened[-1]

    yield open_
    for listener in opened:
        listener.close()


def start_bot(daemon: Daemon, **changes: Any) -> str:
    status, body = api(daemon, "POST", "/api/bots", {**BOT, **changes})
    assert status == 202 and body["status"] == "starting", body
    bot_id = str(body["bot_id"])
    # readable at once, even before the trading process has stored it
    assert bot(daemon, bot_id)["bot_id"] == bot_id
    assert bot_id in [b["bot_id"] for b in api(daemon, "GET", "/api/bots")[1]["bots"]]
    return bot_id


def bot(daemon: Daemon, bot_id: str) -> dict[str, Any]:
    status, body = api(daemon, "GET", f"/api/bots/{bot_id}")
    assert status == 200, body
    return dict(body)


def iso_seconds(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def has_status(listener: Listener, bot_id: str, *wanted: str) -> Callable[[], bool]:
    def check() -> bool:
        seq = listener.statuses(bot_id)
        it = iter(seq)
        return all(any(s == w for s in it) for w in wanted)  # in this order, gaps allowed
    return check


def test_bot_starts_trades_pauses_stops_and_a_failing_strategy_stays_isolated(
        daemon_factory: Callable[..., Daemon], listen: Any, tmp_path: Path) -> None:
    d = daemon_factory(workers=1)
    trading, backtests = listen(d, "trading"), listen(d, "backtest")
    status, body = api(d, "POST", "/api/bots", {"symbol": "", "timeframe": "H2", "feed": {"type": "tape"},
                                                "risk": {"max_daily_loss": -1}, "params": 5})
    assert status == 400 and body["error"] == "invalid request"
    assert {"symbol", "timeframe", "feed.type", "risk.max_daily_loss", "params"} <= set(body["errors"])
    assert "['replay', 'synthetic']" in body["errors"]["feed.type"]
    status, body = api(d, "POST", "/api/bots", {**BOT, "symbol": "NOPE"})
    assert status == 422 and "NOPE" in body["error"]
    (tmp_path / "boom.py").write_text(BOOM)
    good = start_bot(d)
    bad = start_bot(d, strategy=f"{tmp_path / 'boom.py'}:Boom", params={"at": 40})
    holder = start_bot(d, strategy=f"{tmp_path / 'boom.py'}:Hold", params={})
    eventually(has_status(trading, good, "starting", "running"), timeout=20)
    eventually(lambda: any(u["pnl"] != 0 and u["trades"] > 0 for u in trading.updates(good)), timeout=30)
    eventually(has_status(trading, bad, "starting", "running", "error"), timeout=30)
    error = [u for u in trading.updates(bad) if u["status"] == "error"][0]
    assert "boom at bar 40" in error["reason"] and error["open_positions"] == 0
    # the failing bot took nothing down: the good one keeps trading
    n = bot(d, good)["trades"]
    eventually(lambda: bot(d, good)["trades"] > n and bot(d, good)["status"] == "running", timeout=30)
    assert api(d, "POST", f"/api/bots/{good}/pause")[0] == 202
    eventually(has_status(trading, good, "running", "paused"))
    status, body = api(d, "POST", f"/api/bots/{bad}/resume")
    assert status == 409 and "'error'" in body["error"]
    assert api(d, "POST", f"/api/bots/{good}/resume")[0] == 202
    eventually(has_status(trading, good, "running", "paused", "running"))
    assert api(d, "DELETE", f"/api/bots/{good}")[0] == 202
    eventually(has_status(trading, good, "paused", "running", "stopped"))
    final = bot(d, good)
    assert final["status"] == "stopped" and final["positions"] == [] and final["open_positions"] == 0
    assert len(final["trade_list"]) == final["trades"] > 0
    assert final["pnl"] == pytest.approx(sum(t["pnl"] for t in final["trade_list"]), abs=0.01)
    assert trading.updates(good)[-1]["pnl"] == final["pnl"]
    updates = trading.updates(good)
    for u in updates:  # the spec's three fields, always
        assert isinstance(u["bot_id"], str) and isinstance(u["status"], str)
        assert isinstance(u["pnl"], (int, float)) and not isinstance(u["pnl"], bool)
    # while PnL moves without trades, updates come at most once a second
    eventually(lambda: len([u for u in trading.updates(holder) if u["open_positions"]]) >= 3, timeout=30)
    # from the entry on (a loaded box may also publish a mark of bar 0 before it)
    held = [u for u in trading.updates(holder) if u["open_positions"] == 1]
    assert len(held) >= 3 and all(u["trades"] == 0 and u["status"] == "running" for u in held)
    assert len({u["pnl"] for u in held}) > 1
    gaps = [iso_seconds(b["timestamp"]) - iso_seconds(a["timestamp"]) for a, b in zip(held, held[1:])]
    assert min(gaps) >= 0.95 and max(gaps) < 5.0, gaps  # 5: slack for a loaded CI box
    seqs = [f["seq"] for f in trading.frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert api(d, "GET", "/api/bots/nope")[0] == 404
    assert not [f for f in backtests.frames if f["type"] == "trading_update"]


def test_kill_switch_flattens_every_bot_and_refuses_new_ones_until_resume(
        daemon_factory: Callable[..., Daemon], listen: Any, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    d = daemon_factory(workers=1)
    trading = listen(d, "trading")
    url = d["url"]
    assert qmx(["bots", "start", "--symbol", "SYNTH", "--from", "2018-01-01", "--to", "2018-06-30",
                "--param", "fast=5", "--param", "slow=12", "--speed", "0.02", "--server", url,
                "--max-open-positions", "1", "--spread", "0.0002", "--max-daily-loss-pct", "50",
                "--max-open-positions", "1.5"]) == 1
    assert "risk.max_open_positions: must be an integer >= 0, got 1.5" in capsys.readouterr().err
    assert qmx(["bots", "start", "--symbol", "SYNTH", "--from", "2018-01-01", "--to", "2018-06-30",
                "--param", "fast=5", "--param", "slow=12", "--speed", "0.02", "--server", url,
                "--max-open-positions", "1", "--spread", "0.0002", "--max-daily-loss-pct", "50"]) == 0
    first = capsys.readouterr().out.split()[-1]
    config = bot(d, first)["config"]
    assert config["costs"]["spread"] == 0.0002 and config["risk"]["max_daily_loss_pct"] == 50
    second = start_bot(d, name="second")
    (tmp_path / "stuck.py").write_text(STUCK)
    (tmp_path / "stuck.gate").touch()
    stuck, stuck2 = (start_bot(d, strategy=f"{tmp_path / 'stuck.py'}:Stuck", params={"tag": t})
                     for t in (1, 2))
    for b in (first, second, stuck, stuck2):
        eventually(lambda: bot(d, b)["open_positions"] == 1, timeout=30)  # noqa: B023
    for t in (1, 2):
        eventually((tmp_path / f"stuck.stuck{t}").exists, timeout=30)
    assert api(d, "DELETE", f"/api/bots/{stuck2}")[0] == 202  # a stop does not wait forever either
    eventually(has_status(trading, stuck2, "running", "stopped"), timeout=20)
    state = bot(d, stuck2)
    assert state["positions"] == [] and state["reason"] == "stopped by request (the bot was not responding)"
    assert qmx(["bots", "list", "--server", url]) == 0
    listing = capsys.readouterr().out
    assert first in listing and "second" in listing and "running" in listing
    assert qmx(["bots", "kill", "--server", url]) == 0
    assert "3 bots" in capsys.readouterr().out
    for b in (first, second, stuck):  # the stuck one too, from its saved state, after a grace
        eventually(has_status(trading, b, "running", "killed"), timeout=20)
        state = bot(d, b)
        assert state["status"] == "killed" and state["positions"] == [] and state["trades"] > 0
        assert state["trade_list"][-1]["exit_reason"].startswith("kill switch")
    assert "not responding" in bot(d, stuck)["reason"]
    (tmp_path / "stuck.gate").unlink()  # its thread finishes; what it reports now is ignored
    assert not kill_requested(d["data_dir"])  # applied, so no longer pending
    status, body = api(d, "POST", "/api/bots", BOT)
    assert status == 409 and "kill switch" in body["error"]
    assert qmx(["bots", "start", "--symbol", "SYNTH", "--server", url]) == 1
    assert "halted" in capsys.readouterr().err
    listing = api(d, "GET", "/api/bots")[1]
    assert listing["halted"] is True and listing["trading_process"] == "running"
    assert qmx(["bots", "resume-trading", "--server", url]) == 0
    eventually(lambda: api(d, "GET", "/api/bots")[1]["halted"] is False)
    third = start_bot(d)
    eventually(has_status(trading, third, "starting", "running"), timeout=20)
    # resuming trading does not revive killed bots; the stuck bot's late report changed nothing
    assert bot(d, first)["status"] == "killed" and bot(d, stuck)["status"] == "killed"
    # a trading process that crashes until its budget stops the restarts: commands get a 503
    # (not a 202 nobody carries out) and the kill switch waits on disk for the next process
    for _ in range(6):  # the daemon's budget: 5 deaths a minute, the 6th stops the restarts
        victim = trading_process(d)
        victim.kill()
        victim.wait(10)
    eventually(lambda: api(d, "GET", "/api/health")[1]["degraded"], timeout=30)
    for method, path, body in (("POST", "/api/bots", BOT), ("POST", f"/api/bots/{third}/pause", None),
                               ("DELETE", f"/api/bots/{third}", None), ("POST", "/api/trading/resume", None)):
        status, reply = api(d, method, path, body)
        assert status == 503 and "trading process is not running" in reply["error"], (path, reply)
    assert api(d, "POST", "/api/trading/kill")[0] == 202
    assert kill_requested(d["data_dir"]) and api(d, "GET", "/api/bots")[1]["halted"] is True
    assert api(d, "GET", "/api/bots")[1]["trading_process"] == "down"
    assert qmx(["bots", "list", "--server", url]) == 0
    assert "trading process is DOWN" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert qmx(["bots", "list", "--server", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "http://127.0.0.1:9" in err and "\n" not in err
    assert qmx(["bots", "stop", "--server", "http://127.0.0.1:9"]) == 2
    assert "BOT_ID" in capsys.readouterr().err
    assert qmx(["bots", "start", "--server", "http://127.0.0.1:9"]) == 2
    assert qmx(["bots", "start", "--symbol", "X", "--feed", "tape"]) == 2
    assert "['replay', 'synthetic']" in capsys.readouterr().err
    assert qmx(["bots", "frobnicate"]) == 2
    assert "ACTION must be one of ['list'" in capsys.readouterr().err
    assert qmx(["bots", "start", "--symbol", "X", "--speed", "fast"]) == 2
    assert capsys.readouterr().err.strip() == "qmx bots: --speed must be a number, got 'fast'"


def test_a_bot_in_the_daemon_makes_the_trades_a_backtest_of_the_same_bars_makes(daemon: Daemon) -> None:
    run = {"symbol": "SYNTH", "timeframe": "H1", "start_date": "2018-01-01", "end_date": "2018-01-20",
           "strategy": "sma_cross", "params": {"fast": 5, "slow": 12}}
    bot_id = start_bot(daemon, **run, feed={"type": "replay", "seconds_per_bar": 0})
    status, body = api(daemon, "POST", "/api/backtests", run)
    assert status == 202
    bid = body["backtest_id"]
    eventually(lambda: bot(daemon, bot_id)["status"] == "stopped", timeout=60)
    eventually(lambda: api(daemon, "GET", f"/api/backtests/{bid}")[1]["status"] == "completed", timeout=60)
    done = bot(daemon, bot_id)
    assert done["reason"] == "feed ended: no more bars" and done["positions"] == []
    result = api(daemon, "GET", f"/api/backtests/{bid}")[1]["results"]
    expected = api(daemon, "GET", f"/api/backtests/{bid}/trades")[1]["trades"]
    keys = ("entry_bar", "exit_bar", "entry_time", "exit_time", "side", "size", "entry_price",
            "exit_price", "pnl", "exit_reason")
    *traded, last = done["trade_list"]  # the feed's end flattens what the backtest leaves open
    assert len(expected) > 10
    assert [{k: t[k] for k in keys} for t in traded] == [{k: t[k] for k in keys} for t in expected]
    assert last["source"] == "flatten" and last["entry_bar"] == result["open_trade"]["entry_bar"]


def trading_process(daemon: Daemon) -> psutil.Process:
    def find() -> psutil.Process:
        procs = []
        for p in psutil.Process(daemon["proc"].pid).children(recursive=True):
            try:  # a child may exit (or be a zombie being reaped) while we look
                if p.name() == "qmx-trading" and p.status() != psutil.STATUS_ZOMBIE:
                    procs.append(p)
            except psutil.Error:
                continue
        assert len(procs) == 1, procs
        return procs[0]
    return eventually(find, timeout=30)  # a respawned process names itself once it runs


def test_sigkill_of_the_trading_process_and_a_daemon_restart_keep_bots_intact(
        daemon_factory: Callable[..., Daemon], listen: Any, tmp_path: Path) -> None:
    d = daemon_factory(data_dir=tmp_path / "data", workers=1)
    trading = listen(d, "trading")
    a, b = start_bot(d), start_bot(d, params={"fast": 3, "slow": 8})
    eventually(lambda: bot(d, a)["trades"] >= 3 and bot(d, b)["trades"] >= 3, timeout=30)
    victim = trading_process(d)
    (tmp_path / "gated.py").write_text(GATED)
    (tmp_path / "gated.gate").touch()
    (tmp_path / "gated.hold").touch()
    status, body = api(d, "POST", "/api/backtests", {
        "symbol": "SYNTH", "timeframe": "H1", "start_date": "2019-01-01", "end_date": "2019-03-31",
        "strategy": f"{tmp_path / 'gated.py'}:Hold5", "params": {}})
    assert status == 202
    bid = body["backtest_id"]
    eventually(lambda: api(d, "GET", f"/api/backtests/{bid}")[1]["status"] == "running", timeout=30)
    before = {x: bot(d, x)["trade_list"] for x in (a, b)}
    c = start_bot(d, strategy=f"{tmp_path / 'gated.py'}:Gated", params={})
    eventually(has_status(trading, c, "starting"), timeout=30)  # stored; its build hangs in the gate
    victim.kill()
    (tmp_path / "gated.gate").unlink()
    for x in (a, b):
        eventually(has_status(trading, x, "running", "error", "running"), timeout=30)
        crash = [u for u in trading.updates(x) if u["status"] == "error"][0]
        assert "SIGKILL" in crash["reason"]
    # the bot that was starting when the process died is not lost: it starts after the restart
    eventually(has_status(trading, c, "starting", "running"), timeout=30)
    eventually(lambda: bot(d, c)["open_positions"] == 1, timeout=30)
    assert trading_process(d).pid != victim.pid
    # the backtest running all along finishes normally
    assert api(d, "GET", f"/api/backtests/{bid}")[1]["status"] == "running"
    (tmp_path / "gated.hold").unlink()
    eventually(lambda: api(d, "GET", f"/api/backtests/{bid}")[1]["status"] == "completed", timeout=60)
    for x in (a, b):  # trades survive the crash once, in order, none counted twice
        eventually(lambda: len(bot(d, x)["trade_list"]) > len(before[x]), timeout=30)  # noqa: B023
        after = bot(d, x)["trade_list"]
        assert after[:len(before[x])] == before[x]
        assert len({t["entry_bar"] for t in after}) == len(after)
    # a clean daemon restart: bots come back running from where they were
    saved = {x: bot(d, x) for x in (a, b)}
    stop_daemon(d)
    d2 = daemon_factory(data_dir=tmp_path / "data", workers=1)
    restored = {x: bot(d2, x) for x in (a, b)}
    for x in (a, b):
        assert restored[x]["status"] == "running"
        assert restored[x]["feed_position"] >= saved[x]["feed_position"]
        assert restored[x]["trade_list"][:len(saved[x]["trade_list"])] == saved[x]["trade_list"]
        eventually(lambda: bot(d2, x)["feed_position"] > restored[x]["feed_position"] + 20,  # noqa: B023
                   timeout=30)
        trades = bot(d2, x)["trade_list"]
        assert len({t["entry_bar"] for t in trades}) == len(trades)
    # the kill switch pressed while no trading process could hear it (REST records the request
    # on disk first): the next trading process applies it before any bot trades again
    stop_daemon(d2)
    request_kill(tmp_path / "data")
    d3 = daemon_factory(data_dir=tmp_path / "data", workers=1)
    for x in (a, b):
        eventually(lambda: bot(d3, x)["status"] == "killed", timeout=30)  # noqa: B023
        killed = bot(d3, x)
        assert killed["positions"] == [] and killed["reason"].startswith("kill switch")
    listing = api(d3, "GET", "/api/bots")[1]
    assert listing["halted"] is True and not kill_requested(tmp_path / "data")
    assert api(d3, "POST", "/api/bots", BOT)[0] == 409
