"""The trading process: paper-trading bots, their persisted state, ``trading_update`` events.

Entry point :func:`trading_main` (a ``ChildSpec`` target ``"actors.trading:trading_main"``). The
process's main thread is the bridge: it decodes inbox commands and tells the
:class:`TradingActor`, which owns one :class:`BotActor` per live bot and the SQLite file
``data_dir/bots.sqlite`` (WAL). Commands (msgpack dicts on the inbox):

- ``{"cmd": "create", "bot_id": ID, "config": {...}}`` (the REST body; validated again here)
- ``{"cmd": "pause"|"resume"|"stop_bot", "bot_id": ID}`` (stop_bot flattens; plain ``"stop"``
  is the process-level command that ends this child)
- ``{"cmd": "kill"}`` flattens every bot (status ``killed``) and refuses new bots until
  ``{"cmd": "resume_trading"}``. The REST layer first writes the durable request file
  ``data_dir/trading.kill`` (:func:`request_kill`), so a kill that reaches no live trading
  process (it is restarting, or down for good after its crash budget) is applied when the next
  one starts, before any bot resumes; the process deletes the file once the halt is persisted.

Every bot change is persisted before its event is sent, so after a restart (clean or SIGKILL)
bots continue from their saved feed position; fills are keyed by entry bar, so bars processed
again after a crash never count twice.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from actors.process import ChildIO

BOTS_DB = "bots.sqlite"
KILL_REQUEST = "trading.kill"  # a kill switch not yet applied by a trading process
KILL_REASON = "kill switch: all positions flattened, trading halted"
MARK_INTERVAL = 1.0  # at most one PnL-only update per bot per second
#: seconds a bot gets to obey the kill switch (or a stop) before it is ended from its saved
#: state (a strategy stuck in a loop, a blocked broker call: neither must hold a kill up)
KILL_GRACE = 3.0
TICK_TIMEOUT = 0.05  # a bot waits at most this long for a bar before it reads its mailbox again
LIVE = ("starting", "running", "paused")
#: The OS-level process name (``ps``, ``psutil.Process.name()``) so operators can find us.
PROCESS_NAME = "qmx-trading"

log = logging.getLogger("actors.trading")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bots (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, status TEXT NOT NULL,
    config TEXT NOT NULL, state TEXT NOT NULL, summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def request_kill(data_dir: str | Path) -> None:
    """Record a kill-switch request durably (before the command is sent; see module doc)."""
    path = Path(data_dir) / KILL_REQUEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_now() + "\n")


def kill_requested(data_dir: str | Path) -> bool:
    """True while a kill-switch request waits for a trading process to apply it."""
    return (Path(data_dir) / KILL_REQUEST).exists()


def _now() -> str:
    ms = time.time_ns() // 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


class BotStore:
    """``bots.sqlite``: one row per bot (config, state, latest summary) plus the kill-switch flag.

    The trading process writes; readers (the REST layer, via ``run_in_executor``) open it with
    ``readonly=True``. Connections are per thread.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._conn() as c:
                c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.readonly:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
            else:
                conn = sqlite3.connect(self.path, timeout=5.0)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def save(self, bot_id: str, config: dict[str, Any], state: dict[str, Any],
             summary: dict[str, Any]) -> None:
        """Insert or replace one bot's row in a single short transaction."""
        now = _now()
        with self._conn() as c:
            c.execute(
                "INSERT INTO bots (id, created_at, updated_at, status, config, state, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET updated_at=excluded.updated_at,"
                " status=excluded.status, state=excluded.state, summary=excluded.summary",
                (bot_id, now, now, state["status"], json.dumps(config), json.dumps(state),
                 json.dumps(summary)))

    def set_halted(self, halted: bool) -> None:
        with self._conn() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('halted', ?)",
                      ("1" if halted else "0",))

    def halted(self) -> bool:
        """True while the kill switch is engaged (new bots are refused)."""
        if self.readonly and not self.path.exists():
            return False
        row = self._conn().execute("SELECT value FROM meta WHERE key='halted'").fetchone()
        return bool(row and row[0] == "1")

    def rows(self) -> list[dict[str, Any]]:
        """Every bot: ``id, created_at, updated_at, status, config, state, summary`` (decoded)."""
        if self.readonly and not self.path.exists():
            return []
        cur = self._conn().execute("SELECT id, created_at, updated_at, status, config, state, summary "
                                   "FROM bots ORDER BY created_at, id")
        return [self._row(r) for r in cur.fetchall()]

    def row(self, bot_id: str) -> dict[str, Any] | None:
        if self.readonly and not self.path.exists():
            return None
        r = self._conn().execute("SELECT id, created_at, updated_at, status, config, state, summary "
                                 "FROM bots WHERE id=?", (bot_id,)).fetchone()
        return None if r is None else self._row(r)

    @staticmethod
    def _row(r: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": r[0], "created_at": r[1], "updated_at": r[2], "status": r[3],
                "config": json.loads(r[4]), "state": json.loads(r[5]), "summary": json.loads(r[6])}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# ---------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class BotChanged:
    """A bot's report to the TradingActor: what changed and a snapshot to persist/publish."""

    bot_id: str
    kinds: tuple[str, ...]
    state: dict[str, Any]
    update: dict[str, Any]
    publish: bool = True


@dataclass(frozen=True)
class BotCommand:
    """TradingActor -> BotActor: ``pause``, ``resume``, ``stop``, ``kill``, ``announce``, ``tick``."""

    cmd: str
    reason: str | None = None


@dataclass(frozen=True)
class ForceEnd:
    """TradingActor -> itself, KILL_GRACE after a kill or stop: end the bots that have not
    obeyed with ``status`` (``killed`` or ``stopped``) and ``reason``."""

    bot_ids: tuple[str, ...]
    status: str
    reason: str


class BotActor(pykka.ThreadingActor):
    """Runs one :class:`engine.paper.PaperBot`: ticks its feed, reports every change upwards."""

    # a bot stuck in its strategy must not keep the trading process alive at shutdown (the
    # TradingActor saves every bot's state itself before the process ends)
    use_daemon_thread = True

    def __init__(self, bot: Any, parent: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self._bot = bot
        self._parent = parent
        self._last_mark = 0.0
        self._sent_pnl: float | None = None
        self._sent_position = -1

    def on_receive(self, message: Any) -> Any:
        bot = self._bot
        if not isinstance(message, BotCommand):
            return None
        if message.cmd == "tick":
            self._tick()
            return None
        before = bot.state.status
        if before in ("stopped", "error", "killed"):
            return None
        if message.cmd == "pause" and before == "running":
            self._report(bot.set_status("paused", message.reason))
        elif message.cmd == "resume" and before == "paused":
            self._report(bot.set_status("running", message.reason))
        elif message.cmd in ("stop", "kill"):
            status = "killed" if message.cmd == "kill" else "stopped"
            self._report(bot.stop(message.reason or f"{status} by request", status))
        elif message.cmd == "announce":  # first message: tell clients where we are, then run
            self._report(["status"], message.reason)
            self.actor_ref.tell(BotCommand("tick"))
        return None

    def _tick(self) -> None:
        bot = self._bot
        if bot.state.status not in ("running", "paused"):
            return
        try:
            kinds = bot.step(TICK_TIMEOUT) if bot.state.status == "running" else []
        except Exception as exc:  # a strategy bug ends this bot only
            log.warning("bot %s failed: %s", bot.bot_id, traceback.format_exc())
            reason = f"strategy error: {type(exc).__name__}: {exc}"
            try:
                kinds = bot.stop(reason, "error")
            except Exception:  # flattening needs only the last price; never let it escape
                kinds = bot.set_status("error", reason)
        if bot.state.status == "paused":
            time.sleep(TICK_TIMEOUT)  # nothing to read; keep the mailbox responsive
        self._report(kinds)
        if bot.state.status in ("running", "paused"):
            self.actor_ref.tell(BotCommand("tick"))

    def _report(self, kinds: list[str], reason: str | None = None) -> None:
        """Send changes upwards: status/trade at once; PnL moves and feed progress at most once
        a second (``publish`` False means persist only)."""
        bot = self._bot
        now = time.monotonic()
        pnl = round(bot.pnl, 2)
        publish = any(k in ("status", "trade") for k in kinds)
        due = now - self._last_mark >= MARK_INTERVAL
        if not publish and due and pnl != self._sent_pnl:
            publish = True
        if not publish and not (due and bot.state.feed_position != self._sent_position):
            return
        self._last_mark = now
        self._sent_position = bot.state.feed_position
        update = bot.update(reason)
        if publish:
            self._sent_pnl = pnl
        self._parent.tell(BotChanged(bot.bot_id, tuple(kinds), bot.state.to_dict(), update, publish))


class TradingActor(pykka.ThreadingActor):
    """Owns every bot of this process, the bot store and the kill switch."""

    def __init__(self, io: ChildIO, db: BotStore, data_dir: Path, restart_reason: str | None) -> None:
        super().__init__()
        self._io = io
        self._db = db
        self._data_dir = data_dir
        self._restart_reason = restart_reason
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._bots: dict[str, Any] = {}  # PaperBot per live bot; touched here only once stopped
        self._configs: dict[str, dict[str, Any]] = {}
        self._halted = db.halted()
        self._store: Any = None
        self._forced: set[str] = set()  # killed from saved state; their late reports are ignored

    def on_start(self) -> None:
        if kill_requested(self._data_dir):  # pressed while no trading process could hear it
            log.warning("kill switch requested while the trading process was down: applying it")
            self._halted = True
            self._db.set_halted(True)
            self._kill_done()  # the persisted halt now kills every live bot below, even after a crash
        for row in self._db.rows():
            if row["status"] in LIVE:
                self._restore(row)

    def on_stop(self) -> None:
        refs = list(self._refs.items())
        for _, ref in refs:
            ref.stop(block=False)
        deadline = time.monotonic() + 5.0
        for _, ref in refs:
            while ref.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
        for bot_id, bot in self._bots.items():  # the actors are gone: safe to read their bots
            self._db.save(bot_id, self._configs[bot_id], bot.state.to_dict(), bot.update())
        self._db.close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BotChanged):
            self._changed(message)
            return None
        if isinstance(message, ForceEnd):
            for stuck in message.bot_ids:
                if stuck in self._refs:
                    self._force_end(stuck, message.status, message.reason)
            return None
        if not isinstance(message, dict):
            return None
        cmd, bot_id = message.get("cmd"), message.get("bot_id")
        if cmd == "create":
            self._create(str(bot_id), message.get("config") or {})
        elif cmd in ("pause", "resume", "stop_bot"):
            ref = self._refs.get(str(bot_id))
            if ref is None:
                log.info("%s ignored: bot %s is not live", cmd, bot_id)
            else:
                ref.tell(BotCommand(str(cmd).removesuffix("_bot"), message.get("reason")))
                if cmd == "stop_bot":
                    self._grace(ForceEnd((str(bot_id),), "stopped", "stopped by request"))
        elif cmd == "kill":
            self._kill()
        elif cmd == "resume_trading":
            self._halted = False
            self._db.set_halted(False)
            log.info("trading resumed: new bots are accepted again")
        else:
            log.warning("unknown trading command %r", message)
        return None

    # -- commands -----------------------------------------------------------------------
    def _kill(self) -> None:
        self._halted = True
        self._db.set_halted(True)
        log.warning("kill switch: flattening and stopping %d bots", len(self._refs))
        for ref in list(self._refs.values()):
            ref.tell(BotCommand("kill", KILL_REASON))
        # halted is persisted: should we die before the bots act, they are killed on restore
        self._kill_done()
        if self._refs:
            self._grace(ForceEnd(tuple(self._refs), "killed", KILL_REASON))

    def _grace(self, message: ForceEnd) -> None:
        def fire() -> None:
            try:
                self.actor_ref.tell(message)
            except pykka.ActorDeadError:
                pass  # stopped meanwhile: nothing left to end
        timer = threading.Timer(KILL_GRACE, fire)
        timer.daemon = True
        timer.start()

    def _force_end(self, bot_id: str, status: str, reason: str) -> None:
        """End a bot whose actor did not answer: flatten its last saved state (every trade is
        saved when it happens) and ignore whatever its stuck thread reports later."""
        from engine.paper import BotState  # noqa: PLC0415

        log.error("bot %s did not answer within %.0f s: %s from its saved state", bot_id,
                  KILL_GRACE, status)
        ref = self._refs.pop(bot_id)
        self._bots.pop(bot_id, None)
        self._forced.add(bot_id)
        ref.stop(block=False)
        row = self._db.row(bot_id)
        body = self._configs.get(bot_id, {})
        reason = f"{reason} (the bot was not responding)"
        state = dict(row["state"]) if row else {}
        try:
            bot = self._build(bot_id, body, BotState.from_dict(state))
            bot.stop(reason, status)
            self._save_and_publish(bot_id, bot.state.to_dict(), bot.update(), True)
        except Exception as exc:  # never leave it live: record it ended even if unbuildable
            log.error("bot %s could not be flattened: %s", bot_id, exc)
            self._final(bot_id, body, status, f"{reason}; flattening failed: {exc}", state)

    def _kill_done(self) -> None:
        try:
            (self._data_dir / KILL_REQUEST).unlink(missing_ok=True)
        except OSError as exc:  # harmless: applying the request again changes nothing
            log.warning("could not remove %s: %s", KILL_REQUEST, exc)

    def _create(self, bot_id: str, body: dict[str, Any]) -> None:
        from engine.config import ConfigError  # noqa: PLC0415
        from engine.paper import BotState  # noqa: PLC0415

        if bot_id in self._configs or self._db.row(bot_id) is not None:
            log.warning("create ignored: bot %s already exists", bot_id)
            return
        self._configs[bot_id] = body
        if self._halted:
            self._final(bot_id, body, "stopped", "refused: trading is halted by the kill switch; "
                                                 "POST /api/trading/resume first")
            return
        # Stored before the build (loading bars can take seconds): a crash meanwhile restores
        # the bot as `starting` instead of losing a request that has left the inbox.
        self._final(bot_id, body, "starting", None, BotState().to_dict())
        try:
            bot = self._build(bot_id, body, BotState())
        except ConfigError as exc:
            self._final(bot_id, body, "error", f"invalid bot configuration: {exc}")
            return
        except Exception as exc:  # data missing, bad strategy file, ...
            self._final(bot_id, body, "error", f"could not start: {type(exc).__name__}: {exc}")
            return
        bot.set_status("running")
        self._spawn(bot_id, bot, "announce", None)

    def _restore(self, row: dict[str, Any]) -> None:
        from engine.paper import BotState  # noqa: PLC0415

        bot_id, body = row["id"], row["config"]
        self._configs[bot_id] = body
        state = BotState.from_dict(row["state"])
        try:
            bot = self._build(bot_id, body, state)
        except Exception as exc:
            self._final(bot_id, body, "error", f"could not restore: {type(exc).__name__}: {exc}",
                        row["state"])
            return
        if self._restart_reason and state.status in ("running", "paused"):
            # Clients see the crash, then the recovery, for every bot it interrupted.
            crash = {**bot.update(), "status": "error",
                     "reason": f"trading process restarted: {self._restart_reason}"}
            self._io.send({"type": "trading_update", "data": crash})
        if self._halted:  # the kill switch was engaged but this bot never heard it
            bot.stop(KILL_REASON, "killed")
            self._save_and_publish(bot_id, bot.state.to_dict(), bot.update(), True)
            return
        if state.status == "starting":
            bot.set_status("running")
        verb = "resumed" if state.status == "running" else "restored"
        note = f"{verb} after a {'crash' if self._restart_reason else 'restart'}"
        self._spawn(bot_id, bot, "announce", note)

    def _build(self, bot_id: str, body: dict[str, Any], state: Any) -> Any:
        from engine.paper import PaperBot, open_feed, parse_bot_config  # noqa: PLC0415
        from engine.store import DataStore  # noqa: PLC0415

        config = parse_bot_config(body)
        if self._store is None:
            self._store = DataStore(self._data_dir)
        feed = open_feed(config, self._store, state.feed_position)
        return PaperBot(bot_id, config, feed, state=state)

    def _spawn(self, bot_id: str, bot: Any, first: str, reason: str | None) -> None:
        self._bots[bot_id] = bot
        ref = BotActor.start(bot, self.actor_ref)
        self._refs[bot_id] = ref
        ref.tell(BotCommand(first, reason))

    def _final(self, bot_id: str, body: dict[str, Any], status: str, reason: str | None,
               state: dict[str, Any] | None = None) -> None:
        """Record a bot that has no PaperBot (yet: ``starting``; or never: refused, invalid,
        unrestorable) and tell clients."""
        st = {**(state or {}), "status": status, "reason": reason}
        st.setdefault("trades", [])
        st.setdefault("positions", [])
        pnl = float(sum(t.get("pnl", 0.0) for t in st["trades"]))
        update = {"bot_id": bot_id, "status": status, "pnl": round(pnl, 2), "open_positions": 0,
                  "trades": len(st["trades"]), "timestamp": _now(), "reason": reason}
        self._save_and_publish(bot_id, st, update, True)

    # -- persistence and events -------------------------------------------------------------
    def _changed(self, msg: BotChanged) -> None:
        if msg.bot_id in self._forced:
            return  # a stuck bot came back after it was killed for it: its news is stale
        self._save_and_publish(msg.bot_id, msg.state, msg.update, msg.publish)
        if msg.state["status"] not in LIVE:
            ref = self._refs.pop(msg.bot_id, None)
            self._bots.pop(msg.bot_id, None)
            if ref is not None:
                ref.stop(block=False)

    def _save_and_publish(self, bot_id: str, state: dict[str, Any], update: dict[str, Any],
                          publish: bool) -> None:
        self._db.save(bot_id, self._configs.get(bot_id, {}), state, update)
        if publish:
            self._io.send({"type": "trading_update", "data": update})
            self._io.outbox.flush()


def trading_main(io: ChildIO) -> None:
    """Entry point of the trading child process: restore bots, then serve inbox commands."""
    _set_process_name(PROCESS_NAME)
    data_dir = Path(io.ctx.data_dir)
    db = BotStore(data_dir / BOTS_DB)
    actor = TradingActor.start(io, db, data_dir, io.ctx.restart_reason)
    io.ready()
    try:
        for msg in io.messages():
            actor.tell(msg)
    finally:
        actor.stop(block=True, timeout=8.0)


def _set_process_name(name: str) -> None:
    # Linux: the main thread's comm is the process name that ps/top/psutil show.
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass  # not Linux, or not allowed: only cosmetic
