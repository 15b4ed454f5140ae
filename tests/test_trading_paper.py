"""Paper bots: config validation, account arithmetic, risk limits, resume, bot == backtest."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.bars import Bars
from engine.config import ConfigError
from engine.feeds import ReplayFeed
from engine.importers import read_bars
from engine.paper import BotState, PaperBot, parse_bot_config

STRATS = '''
from engine.strategy import Param, Strategy

class AlwaysLong(Strategy):
    name = "always_long"
    def next(self, i, position):
        return 1

class Boom(Strategy):
    name = "boom"
    params = (Param("at", 3, int, "bar index that raises", min=0),)
    def next(self, i, position):
        if i >= self.at:
            raise RuntimeError(f"boom at bar {i}")
        return None
'''


@pytest.fixture(scope="module")
def eurusd(shared_data_dir: Path) -> Bars:
    return read_bars(shared_data_dir / "EURUSD_H1.csv", "EURUSD", "H1")


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    from tests.conftest import SHARED_DATA

    return SHARED_DATA


@pytest.fixture
def strats(tmp_path: Path) -> Path:
    path = tmp_path / "strats.py"
    path.write_text(STRATS)
    return path


def line(n: int, start: float = 1.0, step: float = 0.0) -> Bars:
    """``n`` H1 bars whose open/close walk by ``step`` from ``start`` (one day = 24 bars)."""
    t0 = 1_600_000_000 * 1_000_000_000 - (1_600_000_000 % 86400) * 1_000_000_000  # a UTC midnight
    close = start + step * np.arange(1, n + 1)
    opn = close - step
    return Bars("TEST", "H1", time=t0 + np.arange(n, dtype=np.int64) * 3600 * 1_000_000_000,
                open=opn, high=np.maximum(opn, close) + 0.0001, low=np.minimum(opn, close) - 0.0001,
                close=close, volume=np.ones(n))


def run_bot(bot: PaperBot, n: int) -> None:
    for _ in range(n):
        bar = bot.feed.next_bar(0.0)
        assert bar is not None
        bot.on_bar(bar)


def make_bot(body: dict[str, Any], bars: Bars, start: int = 0, state: BotState | None = None) -> PaperBot:
    bot = PaperBot("b1", parse_bot_config(body), ReplayFeed(bars, 0, start), state=state)
    bot.set_status("running")
    return bot


def test_parse_bot_config_accepts_a_full_request() -> None:
    cfg = parse_bot_config({"symbol": "EURUSD", "timeframe": "H1", "strategy": "sma_cross",
                            "params": {"fast": 10, "slow": 20}, "name": "x",
                            "feed": {"type": "replay", "seconds_per_bar": 0},
                            "risk": {"max_daily_loss": 100, "max_open_positions": 1}})
    assert cfg.backtest.symbol == "EURUSD" and cfg.feed.seconds_per_bar == 0
    assert cfg.risk.max_daily_loss == 100.0 and cfg.to_dict()["feed"]["type"] == "replay"


def test_parse_bot_config_names_every_bad_field_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_bot_config({"symbol": "", "timeframe": "H2", "variant": "vanilla_full",
                          "feed": {"type": "tape", "seconds_per_bar": -1, "x": 1},
                          "risk": {"max_daily_loss": -5, "max_daily_loss_pct": 150,
                                   "max_open_positions": 1.5}, "name": 3})
    e = exc.value.errors
    assert "symbol" in e and "['M1'" in e["timeframe"]
    assert "feed.type" in e and "['replay', 'synthetic']" in e["feed.type"]
    assert set(e) >= {"feed.seconds_per_bar", "feed.x", "risk.max_daily_loss",
                      "risk.max_daily_loss_pct", "risk.max_open_positions", "name"}
    with pytest.raises(ConfigError) as exc:
        parse_bot_config({"symbol": "EURUSD", "variant": "vanilla_full"})
    assert "['vanilla', 'spiced']" in exc.value.errors["variant"]
    with pytest.raises(ConfigError) as exc:
        parse_bot_config({"symbol": "EURUSD", "feed": {"type": "synthetic"}})
    assert "SYNTH" in exc.value.errors["symbol"]
    with pytest.raises(ConfigError) as exc:  # a falsy non-object is not "use the defaults"
        parse_bot_config({"symbol": "EURUSD", "feed": "", "risk": 0, "speed": 1})
    e = exc.value.errors
    assert "got ''" in e["feed"] and "got 0" in e["risk"]
    assert "'feed'" in e["speed"] and "'risk'" in e["speed"] and "'name'" in e["speed"]
    assert parse_bot_config({"symbol": "EURUSD", "feed": None, "risk": None}).risk.max_open_positions == 1


@pytest.mark.parametrize("extra", [
    {"params": {"fast": 10, "slow": 20}, "costs": {"spread": 0.0001, "commission": 0.00002}},
    {"params": {"fast": 5, "slow": 30, "mode": "long_only", "stop_loss_pct": 0.3,
                "take_profit_pct": 0.6}, "size": 1, "size_unit": "lots"},
    {"variant": "spiced", "end_date": "2017-06-05", "params": {"fast": 10, "slow": 20, "stop_loss_pct": 0.5}},
])
def test_bot_replay_makes_exactly_the_backtest_trades(eurusd: Bars, extra: dict[str, Any]) -> None:
    from engine.backtest import run_backtest

    body = {"symbol": "EURUSD", "timeframe": "H1", "strategy": "sma_cross",
            "start_date": "2017-05-01", "end_date": "2017-07-15", **extra}
    bars = eurusd.between(body["start_date"], body["end_date"])
    bot = make_bot(body, bars)
    opened: dict[int, int] = {}  # entry bar -> index of the newest bar when the bot booked it
    closed: dict[int, int] = {}
    for i in range(len(bars)):
        bar = bot.feed.next_bar(0.0)
        assert bar is not None
        bot.on_bar(bar)
        for p in bot.state.positions:
            opened.setdefault(p["entry_bar"], i)
        for t in bot.state.trades:
            opened.setdefault(t["entry_bar"], i)
            closed.setdefault(t["entry_bar"], i)
    cfg = parse_bot_config(body).backtest
    expected = run_backtest(cfg, bars=bars)["results"]
    keys = ("entry_bar", "exit_bar", "side", "size", "entry_price", "exit_price", "pnl", "exit_reason")
    assert len(expected["trades"]) > 5
    assert [{k: t[k] for k in keys} for t in bot.state.trades] == \
        [{k: t[k] for k in keys} for t in expected["trades"]]
    # ... and acts on the very bar the backtest does: a fill is booked as soon as its bar is in,
    # never one bar (or more) late
    assert {t["entry_bar"]: t["entry_bar"] for t in expected["trades"]} == \
        {t["entry_bar"]: opened[t["entry_bar"]] for t in expected["trades"]}
    assert {t["entry_bar"]: t["exit_bar"] for t in expected["trades"]} == closed
    open_trade = expected["open_trade"]
    assert [p["entry_bar"] for p in bot.state.positions] == ([open_trade["entry_bar"]] if open_trade else [])
    final = run_backtest(cfg, bars=bars)["final_balance"]
    assert bot.equity == pytest.approx(final, abs=1e-6)


def test_account_arithmetic_mark_and_flatten(strats: Path) -> None:
    bars = line(10, 1.0, 0.001)
    body = {"symbol": "TEST", "strategy": f"{strats}:AlwaysLong", "size": 1000,
            "costs": {"spread": 0.0002, "commission": 0.001, "slippage": 0.0001}}
    bot = make_bot(body, bars)
    run_bot(bot, 5)
    (pos,) = bot.state.positions
    entry = bars.open[1] + 0.0001 + 0.0001  # decided on bar 0, filled at bar 1's open + spread/2 + slip
    assert pos["entry_bar"] == 1 and pos["entry_price"] == pytest.approx(entry)
    mark = (bars.close[4] - entry) * 1000 - 0.001 * entry * 1000
    assert bot.unrealized == pytest.approx(mark) and bot.pnl == pytest.approx(mark)
    assert bot.balance == 10_000 and bot.equity == pytest.approx(10_000 + mark)
    kinds = bot.stop("stopped by request")
    exit_px = bars.close[4] - 0.0001 - 0.0001
    (trade,) = bot.state.trades
    assert "trade" in kinds and bot.state.status == "stopped" and not bot.state.positions
    assert trade["exit_price"] == pytest.approx(exit_px) and trade["exit_reason"] == "stopped by request"
    assert trade["pnl"] == pytest.approx((exit_px - entry) * 1000 - 0.001 * (entry + exit_px) * 1000)
    assert bot.pnl == pytest.approx(trade["pnl"]) and bot.unrealized == 0


def test_daily_loss_limit_flattens_and_stops_with_a_reason(strats: Path) -> None:
    bars = line(20, 1.0, -0.001)  # falls 10 pips an hour against a long
    body = {"symbol": "TEST", "strategy": f"{strats}:AlwaysLong", "size": 10_000,
            "risk": {"max_daily_loss": 35}}
    bot = make_bot(body, bars)
    for _ in range(20):
        bar = bot.feed.next_bar(0.0)
        assert bar is not None
        bot.on_bar(bar)
        if bot.state.status != "running":
            break
    assert bot.state.status == "stopped" and not bot.state.positions
    assert bot.state.reason is not None and bot.state.reason.startswith("daily loss limit reached: lost 4")
    assert bot.pnl == pytest.approx(-40.0, abs=1e-6) and bot.feed.position == 5


def test_max_open_positions_zero_skips_entries(strats: Path) -> None:
    bot = make_bot({"symbol": "TEST", "strategy": f"{strats}:AlwaysLong",
                    "risk": {"max_open_positions": 0}}, line(6, 1.0, 0.001))
    run_bot(bot, 6)
    assert bot.state.blocked == [1] and not bot.state.positions and bot.pnl == 0


def test_strategy_exception_propagates_to_the_owner(strats: Path) -> None:
    bot = make_bot({"symbol": "TEST", "strategy": f"{strats}:Boom", "params": {"at": 2}}, line(6))
    run_bot(bot, 2)
    with pytest.raises(RuntimeError, match="boom at bar 2"):
        run_bot(bot, 1)


@pytest.mark.parametrize("rewind", [0, 7])
def test_restored_bot_continues_without_double_counting(eurusd: Bars, rewind: int) -> None:
    body = {"symbol": "EURUSD", "strategy": "sma_cross", "params": {"fast": 5, "slow": 12}}
    bars = eurusd.window(0, 400)
    straight = make_bot(body, bars)
    run_bot(straight, 400)
    first = make_bot(body, bars)
    run_bot(first, 200)
    saved = BotState.from_dict(first.state.to_dict())
    # a crash may lose the last few bars' progress: they are replayed and must not count twice
    saved.feed_position -= rewind
    resumed = make_bot(body, bars, start=saved.feed_position, state=saved)
    run_bot(resumed, 200 + rewind)
    assert resumed.state.trades == straight.state.trades and len(straight.state.trades) > 10
    assert resumed.state.positions == straight.state.positions
    assert resumed.pnl == pytest.approx(straight.pnl)


def test_open_feed_builds_a_store_replay_or_the_synthetic_live_feed(tmp_path: Path) -> None:
    from engine.feeds import SyntheticLiveFeed
    from engine.paper import open_feed
    from engine.store import DataStore

    store = DataStore(tmp_path)
    cfg = parse_bot_config({"symbol": "SYNTH", "timeframe": "H1", "start_date": "2018-01-01",
                            "end_date": "2018-01-02", "feed": {"seconds_per_bar": 0}})
    feed = open_feed(cfg, store)
    assert isinstance(feed, ReplayFeed) and feed.synthetic
    assert all(feed.next_bar(0.0) for _ in range(48)) and feed.exhausted
    live = open_feed(parse_bot_config({"symbol": "SYNTH", "timeframe": "M5", "feed": {
        "type": "synthetic", "bar_interval": 0.5, "seed": 3}}), store, start_index=10)
    assert isinstance(live, SyntheticLiveFeed) and live.position == 10 and len(live.history()) == 10
