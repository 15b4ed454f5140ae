"""Paper trading: a bot = strategy + parameters + feed + paper account + risk limits.

A bot decides exactly as a backtest does, by construction: each time its feed delivers a bar,
it runs the engine's simulation (the steps of ``engine.run_backtest`` up to the fills: strategy,
the spiced plan, ``simulate_strategy``; not the metrics) over every bar seen so far and acts on
the fills that newly appeared. The engine never looks ahead, so the fills of bar *i* cannot
change when bar *i+1* arrives; replaying a range through a bot gives the trades a backtest gives.

What the bot adds on top of the engine is the account and its limits: the balance and PnL in
account currency, the daily loss limit (flatten and stop with a reason), the cap on open
positions (entries beyond it are skipped), and flattening on stop/kill. Orders go through a
:class:`Broker`; :class:`PaperBroker` fills at the engine's simulated prices.

Position PnL convention (the engine's): ``(exit - entry) * units`` for a long, the reverse for a
short, minus commission on both fills; prices include half the spread and the slippage.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol

import numpy as np

from engine.bars import NS_PER_S, Bars, ns_to_iso
from engine.config import BacktestConfig, ConfigError, parse_config
from engine.feeds import (Bar, FeedSpec, MarketFeed, feed_from_spec, number_field,
                          parse_feed_spec, unknown_fields)

STATUSES: tuple[str, ...] = ("starting", "running", "paused", "stopped", "error", "killed")
BOT_VARIANTS: tuple[str, ...] = ("vanilla", "spiced")
BOT_FIELDS: tuple[str, ...] = ("name", "feed", "risk")
#: the per-trade columns of ``engine.fills.SimResult``
_TRADE_COLUMNS = ("entry_bar", "exit_bar", "side", "size", "entry_price", "exit_price", "pnl",
                  "return_pct", "commission", "exit_reason")
_QUIET = logging.getLogger("engine.paper.replay")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False  # the per-bar re-runs would log every old trade again


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class RiskLimits:
    """Per-bot limits. ``max_daily_loss`` in account currency and/or ``max_daily_loss_pct``
    (percent of the day's starting equity); None = no limit. A "day" is a UTC date of bar time.
    ``max_open_positions``: entries that would exceed it are skipped (0 = never trade)."""

    max_daily_loss: float | None = None
    max_daily_loss_pct: float | None = None
    max_open_positions: int = 1


@dataclass(frozen=True)
class BotConfig:
    """A validated bot request (see :func:`parse_bot_config`)."""

    backtest: BacktestConfig
    feed: FeedSpec
    risk: RiskLimits
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = self.backtest.to_dict()
        for key in ("spiced", "robustness"):
            if not d[key]:
                del d[key]
        d["feed"] = vars(self.feed).copy()
        d["risk"] = vars(self.risk).copy()
        d["name"] = self.name
        return d


def parse_bot_config(body: Mapping[str, Any]) -> BotConfig:
    """Validate a bot request, or raise :class:`ConfigError` naming every bad field.

    The backtest fields (symbol, timeframe, variant, dates, strategy, params, initial_balance,
    size, size_unit, costs, seed) are checked by ``engine.config.parse_config`` exactly as for a
    backtest; ``feed`` and ``risk`` are objects described by :class:`FeedSpec` and
    :class:`RiskLimits`; ``name`` is an optional label.
    """
    if not isinstance(body, Mapping):
        raise ConfigError({"body": f"must be a JSON object, got {type(body).__name__}"})
    errors: dict[str, str] = {}
    core = {k: v for k, v in body.items() if k not in BOT_FIELDS}
    backtest: BacktestConfig | None = None
    try:
        backtest = parse_config(core)
    except ConfigError as exc:
        errors.update(exc.errors)
    allowed = sorted(set(BacktestConfig.__dataclass_fields__) | set(BOT_FIELDS))
    for key, msg in list(errors.items()):
        if msg.startswith("unknown field"):  # the backtest's list lacks name, feed and risk
            errors[key] = f"unknown field; allowed: {allowed}"
    variant = core.get("variant", "vanilla")
    if variant not in BOT_VARIANTS and "variant" not in errors:
        errors["variant"] = f"bots run one of {list(BOT_VARIANTS)}, got {variant!r}"
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 100:
        errors["name"] = f"must be a string of at most 100 characters, got {name!r}"
    # absent or null = defaults; anything else that is not an object is an error (0, "", [])
    feed = parse_feed_spec(_object(body, "feed"), errors)
    risk = _risk(_object(body, "risk"), errors)
    if feed.type == "synthetic" and core.get("symbol") != "SYNTH" and "symbol" not in errors:
        errors["symbol"] = f"a synthetic feed trades the symbol 'SYNTH', got {core.get('symbol')!r}"
    if errors or backtest is None:
        raise ConfigError(errors)
    return BotConfig(backtest, feed, risk, name)


def _object(body: Mapping[str, Any], key: str) -> Any:
    value = body.get(key)
    return {} if value is None else value


def _risk(raw: Any, errors: dict[str, str]) -> RiskLimits:
    if not isinstance(raw, Mapping):
        errors["risk"] = f"must be an object like {{'max_daily_loss': 500}}, got {raw!r}"
        return RiskLimits()
    unknown_fields(raw, RiskLimits, "risk", errors)
    loss = number_field(raw, "max_daily_loss", None, errors, "risk", positive=True)
    pct = number_field(raw, "max_daily_loss_pct", None, errors, "risk", positive=True)
    if pct is not None and pct > 100:
        errors["risk.max_daily_loss_pct"] = f"must be a percent in (0, 100], got {pct!r}"
    cap = raw.get("max_open_positions", 1)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        errors["risk.max_open_positions"] = f"must be an integer >= 0, got {cap!r}"
        cap = 1
    return RiskLimits(None if loss is None else float(loss), None if pct is None else float(pct), cap)


def open_feed(config: BotConfig, store: Any, start_index: int = 0) -> MarketFeed:
    """The feed a bot config asks for, resumed after ``start_index`` bars already seen."""
    bt = config.backtest
    return feed_from_spec(config.feed, bt.symbol, bt.timeframe, bt.start_date, bt.end_date,
                          store, start_index)


# ---------------------------------------------------------------------------- broker
@dataclass(frozen=True)
class Fill:
    """An executed order as the broker reports it."""

    side: str  # "long"/"short" of the position opened or closed
    units: float
    price: float
    time: int  # ns
    reason: str


class Broker(Protocol):
    """Order execution. ``price`` is the simulated fill price; a paper broker fills at it,
    a live broker sends a market order and reports the price it really got."""

    def open(self, symbol: str, side: str, units: float, price: float, time: int) -> Fill: ...

    def close(self, symbol: str, side: str, units: float, price: float, time: int,
              reason: str) -> Fill: ...


class PaperBroker:
    """Fills every order immediately at the engine's simulated price."""

    def open(self, symbol: str, side: str, units: float, price: float, time: int) -> Fill:
        return Fill(side, units, price, time, "entry")

    def close(self, symbol: str, side: str, units: float, price: float, time: int,
              reason: str) -> Fill:
        return Fill(side, units, price, time, reason)


# ---------------------------------------------------------------------------- the bot
@dataclass
class BotState:
    """Everything needed to restore a bot exactly: persisted after every trade/status change.

    ``trades`` are closed trades in the engine's format (plus ``"source"``: ``engine`` or
    ``flatten``); ``positions`` the open ones; ``blocked`` the entry bars skipped by
    ``max_open_positions``; ``feed_position`` how many bars the bot has consumed.
    """

    status: str = "starting"
    reason: str | None = None
    feed_position: int = 0
    trades: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[int] = field(default_factory=list)
    day: str | None = None
    day_start_equity: float | None = None
    last_price: float | None = None
    last_time: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BotState:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class PaperBot:
    """One paper-trading bot. Not thread-safe: one owner (an actor) calls it.

    Every method that changes something returns the list of *update kinds* that happened
    (``"status"``, ``"trade"``, ``"mark"``) so the owner can persist and publish; read the
    result with :meth:`update`.
    """

    def __init__(self, bot_id: str, config: BotConfig, feed: MarketFeed, *,
                 state: BotState | None = None, broker: Broker | None = None) -> None:
        self.bot_id = bot_id
        self.config = config
        self.feed = feed
        self.state = state if state is not None else BotState()
        self.broker: Broker = broker if broker is not None else PaperBroker()
        self._run_config = replace(config.backtest, start_date=None, end_date=None)
        # bot.<id> records reach the daemon's `logs` topic as log_entry events
        self.log = logging.getLogger(f"bot.{bot_id}")

    # -- account arithmetic ------------------------------------------------------------
    @property
    def realized(self) -> float:
        """Sum of closed trades' PnL (account currency)."""
        return float(sum(t["pnl"] for t in self.state.trades))

    @property
    def balance(self) -> float:
        return self.config.backtest.initial_balance + self.realized

    @property
    def unrealized(self) -> float:
        """Open positions marked at the last price, net of the entry commission already paid."""
        price = self.state.last_price
        if price is None:
            return 0.0
        comm = self.config.backtest.costs.commission
        total = 0.0
        for p in self.state.positions:
            sign = 1.0 if p["side"] == "long" else -1.0
            total += (price - p["entry_price"]) * sign * p["size"] - comm * p["entry_price"] * p["size"]
        return total

    @property
    def equity(self) -> float:
        return self.balance + self.unrealized

    @property
    def pnl(self) -> float:
        """Realised plus unrealised PnL in account currency."""
        return self.realized + self.unrealized

    def update(self, reason: str | None = None) -> dict[str, Any]:
        """The ``trading_update`` data object for the bot's current state."""
        s = self.state
        return {"bot_id": self.bot_id, "status": s.status, "pnl": round(self.pnl, 2),
                "equity": round(self.equity, 2), "balance": round(self.balance, 2),
                "open_positions": len(s.positions), "last_price": s.last_price,
                "trades": len(s.trades), "timestamp": _now_iso(),
                "reason": reason if reason is not None else s.reason}

    # -- lifecycle ----------------------------------------------------------------------
    def set_status(self, status: str, reason: str | None = None) -> list[str]:
        if status not in STATUSES:
            raise ValueError(f"`status` must be one of {list(STATUSES)}, got {status!r}")
        self.state.status, self.state.reason = status, reason
        return ["status"]

    def step(self, timeout: float) -> list[str]:
        """Wait at most ``timeout`` s for one bar and process it; [] when none arrived."""
        if self.state.status != "running":
            return []
        bar = self.feed.next_bar(timeout)
        if bar is None:
            if self.feed.exhausted:
                return self.stop("feed ended: no more bars")
            return []
        return self.on_bar(bar)

    def stop(self, reason: str, status: str = "stopped") -> list[str]:
        """Flatten every position at the last price and end the bot with ``status``."""
        kinds = self.flatten(reason)
        return kinds + self.set_status(status, reason)

    def on_bar(self, bar: Bar) -> list[str]:
        """Act on one new bar (already consumed from the feed). Raises what the strategy raises."""
        s = self.state
        day = dt.datetime.fromtimestamp(bar.time // NS_PER_S, tz=dt.timezone.utc).date().isoformat()
        if day != s.day:
            s.day, s.day_start_equity = day, self.equity
        history = self.feed.history()
        # one bar cannot fill anything (decisions fill on the next bar); the engine needs two
        kinds = self._sync(self._run(history), history) if len(history) >= 2 else []
        s.feed_position = self.feed.position
        s.last_price, s.last_time = bar.close, bar.time
        kinds.append("mark")
        breach = self._daily_loss_breach()
        if breach:
            kinds += self.stop(breach)
        return kinds

    def _run(self, history: Bars) -> Any:
        """``run_backtest``'s simulation over ``history`` (its ``SimResult``), without the metrics
        and JSON results it would then build: those cost ~10x the simulation and a bot needs only
        the fills. The bot-vs-backtest tests hold these steps to ``run_backtest``'s."""
        from engine.simulator import simulate_strategy  # noqa: PLC0415 - heavy import on first use
        from engine.strategies import make_strategy  # noqa: PLC0415

        cfg = self._run_config
        strategy = make_strategy(cfg.strategy, cfg.params)
        plan = None
        if cfg.variant == "spiced":
            from engine.spiced import prepare_spiced  # noqa: PLC0415

            plan = prepare_spiced(history, strategy, cfg, _QUIET)
        return simulate_strategy(history, strategy, cfg, allow_entry=getattr(plan, "allow_entry", None),
                                 sizer=getattr(plan, "sizer", None), logger=_QUIET)

    # -- fills --------------------------------------------------------------------------
    def _sync(self, sim: Any, history: Bars) -> list[str]:
        """Apply the fills that appeared since the last bar (entries first, then exits)."""
        from engine.backtest import trades_json  # noqa: PLC0415

        s = self.state
        done = {t["entry_bar"] for t in s.trades}
        skip = set(s.blocked)
        # only trades not booked yet become JSON rows (the backtest's format, to the bit)
        new = np.flatnonzero(~np.isin(sim.entry_bar, np.fromiter(done | skip, np.int64)))
        engine_trades = trades_json(history, replace(sim, **{k: getattr(sim, k)[new]
                                                             for k in _TRADE_COLUMNS}))
        ot = sim.open_trade
        open_trade: dict[str, Any] | None = None if ot is None else {
            "entry_bar": int(ot.entry_bar), "side": "long" if ot.side > 0 else "short",
            "size": float(ot.size), "entry_price": float(ot.entry_price)}
        kinds: list[str] = []
        for t in engine_trades:
            key = t["entry_bar"]
            if key in done or key in skip:
                continue
            held = self._position(key)
            if held is None and not self._enter(t, history):
                continue
            self._exit(t, history)
            kinds.append("trade")
        if open_trade and open_trade["entry_bar"] not in done | skip \
                and self._position(open_trade["entry_bar"]) is None:
            if self._enter(open_trade, history):
                kinds.append("trade")
        return kinds

    def _position(self, entry_bar: int) -> dict[str, Any] | None:
        return next((p for p in self.state.positions if p["entry_bar"] == entry_bar), None)

    def _enter(self, t: Mapping[str, Any], history: Bars) -> bool:
        s = self.state
        if len(s.positions) >= self.config.risk.max_open_positions:
            s.blocked.append(int(t["entry_bar"]))
            return False
        bt = self.config.backtest
        when = int(history.time[int(t["entry_bar"])])
        fill = self.broker.open(bt.symbol, t["side"], float(t["size"]), float(t["entry_price"]), when)
        s.positions.append({"entry_bar": int(t["entry_bar"]), "entry_time": ns_to_iso(when),
                            "side": fill.side, "size": fill.units, "entry_price": fill.price})
        self.log.info("Trade executed: %s %g units %s @ %.5f", "BUY" if fill.side == "long" else "SELL",
                      fill.units, bt.symbol, fill.price)
        return True

    def _exit(self, t: Mapping[str, Any], history: Bars) -> None:
        p = self._position(t["entry_bar"])
        assert p is not None
        when = int(history.time[int(t["exit_bar"])])
        fill = self.broker.close(self.config.backtest.symbol, p["side"], p["size"],
                                 float(t["exit_price"]), when, str(t.get("exit_reason", "signal")))
        trade = {**t, "entry_time": p["entry_time"], "exit_time": ns_to_iso(when)}
        if fill.price == t["exit_price"]:  # the engine's own numbers, to the last bit
            self._book(p, trade, fill.price, float(t["pnl"]), "engine")
        else:
            self._book(p, trade, fill.price, self._pnl(p, fill.price), "broker")

    def _pnl(self, p: Mapping[str, Any], exit_price: float) -> float:
        sign = 1.0 if p["side"] == "long" else -1.0
        comm = self.config.backtest.costs.commission
        return (exit_price - p["entry_price"]) * sign * p["size"] \
            - comm * (p["entry_price"] + exit_price) * p["size"]

    def _book(self, p: dict[str, Any], trade: dict[str, Any], exit_price: float, pnl: float,
              source: str) -> None:
        self.state.positions.remove(p)
        trade.update(exit_price=exit_price, pnl=pnl, source=source)
        self.log.info("Trade closed: %s %g units %s @ %.5f (%s), PnL %.2f",
                      "SELL" if p["side"] == "long" else "BUY", p["size"], self.config.backtest.symbol,
                      exit_price, trade.get("exit_reason", source), pnl)
        if source != "engine":
            entry_value = p["entry_price"] * p["size"]
            trade["return_pct"] = 100.0 * pnl / entry_value if entry_value else 0.0
        self.state.trades.append(trade)

    def flatten(self, reason: str) -> list[str]:
        """Close every open position at the last price (with spread, slippage, commission)."""
        s = self.state
        if not s.positions or s.last_price is None:
            return []
        costs = self.config.backtest.costs
        n = s.feed_position - 1
        for p in list(s.positions):
            sign = 1.0 if p["side"] == "long" else -1.0
            price = s.last_price - sign * (costs.spread / 2 + costs.slippage)
            fill = self.broker.close(self.config.backtest.symbol, p["side"], p["size"], price,
                                     s.last_time or 0, reason)
            trade = {**p, "exit_bar": n, "exit_time": ns_to_iso(s.last_time or 0),
                     "exit_reason": reason}
            self._book(p, trade, fill.price, self._pnl(p, fill.price), "flatten")
        return ["trade"]

    def _daily_loss_breach(self) -> str | None:
        s, risk = self.state, self.config.risk
        start = s.day_start_equity if s.day_start_equity is not None else self.equity
        loss = start - self.equity
        if risk.max_daily_loss is not None and loss >= risk.max_daily_loss:
            return (f"daily loss limit reached: lost {loss:.2f} on {s.day} "
                    f"(max_daily_loss {risk.max_daily_loss:g})")
        if risk.max_daily_loss_pct is not None and start > 0 \
                and 100.0 * loss / start >= risk.max_daily_loss_pct:
            return (f"daily loss limit reached: lost {100.0 * loss / start:.2f}% on {s.day} "
                    f"(max_daily_loss_pct {risk.max_daily_loss_pct:g})")
        return None

    def snapshot(self) -> dict[str, Any]:
        """State for REST: the update fields plus config, positions and trades."""
        return {**self.update(), "config": self.config.to_dict(), "positions": list(self.state.positions),
                "trade_list": list(self.state.trades), "feed_position": self.state.feed_position,
                "realized_pnl": round(self.realized, 2), "unrealized_pnl": round(self.unrealized, 2)}


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
