"""The Python client (server/client.py), `qmx watch` and `--follow` against a real `qmx serve`."""
from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from server.cli_client import follow_backtest, format_event
from server.client import QmxClient, QmxError, base_url, submit_and_follow
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e]

SMALL = {"symbol": "SYNTH", "timeframe": "H1", "variant": "vanilla", "strategy": "sma_cross",
         "start_date": "2023-01-01", "end_date": "2023-06-30"}


async def _until(client: QmxClient, pred: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Collect events until ``pred(event)`` holds for one; returns all collected."""
    got: list[dict[str, Any]] = []

    async def run() -> None:
        async for event in client:
            got.append(event)
            if pred(event):
                return
    await asyncio.wait_for(run(), timeout)
    return got


class Proxy:
    """A TCP proxy to the daemon; ``cut()`` drops every connection as a dying server would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.up = True
        self.stall = False  # keep sockets open but swallow every byte, like a dead network path
        self.connections = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self.stall:
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        pending = [t for t in self.tasks if not t.done()]
        if pending:  # let the pipes see their sockets die rather than being cancelled
            await asyncio.wait(pending, timeout=2)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def test_base_url_accepts_http_and_ws_forms() -> None:
    assert base_url("ws://h:1/ws") == "http://h:1"
    assert base_url("https://h:1/") == "https://h:1"
    with pytest.raises(ValueError, match="`url`"):
        base_url("ftp://h")
    with pytest.raises(ValueError, match="`max_delay` must be a number >= 0, got '5s'"):
        QmxClient(max_delay="5s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`queue_size` must be an integer >= 1, got 0"):
        QmxClient(queue_size=0)


def _with_client(url: str, body: Callable[[QmxClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with QmxClient(url) as client:
            await body(client)
    asyncio.run(main())


def test_follow_one_backtest_and_rest_helpers(daemon: dict[str, Any]) -> None:
    _with_client(daemon["url"], _follow_one)


async def _follow_one(client: QmxClient) -> None:
    bid = await client.submit_backtest(**SMALL)
    confirmed = await client.subscribe(f"backtest:{bid}", since=0)
    assert confirmed["type"] == "subscription_confirmed"
    seen_types: list[str] = []
    client.on("backtest_progress", lambda e: seen_types.append(e["type"]))
    events = await _until(client, lambda e: e.get("type") in ("backtest_complete", "backtest_error"))
    kinds = [e["type"] for e in events if "seq" in e]
    assert kinds[0] == "backtest_start" and kinds[-1] == "backtest_complete", kinds[:3] + kinds[-3:]
    assert "backtest_progress" in seen_types, "on() handlers see events too"
    assert all(e["data"]["backtest_id"] == bid for e in events if "seq" in e)
    run = await client.wait(bid, timeout=30)
    assert run["status"] == "completed"
    assert run["results"]["equity"]["equity"], "the stored run has its equity curve"
    assert any(r["backtest_id"] == bid for r in await client.backtests())
    gone = await client.unsubscribe(f"backtest:{bid}")
    assert gone == {"type": "unsubscription_confirmed", "topic": f"backtest:{bid}"} and not client.topics


def test_rest_errors_name_the_field(daemon: dict[str, Any]) -> None:
    _with_client(daemon["url"], _rest_errors)


async def _rest_errors(client: QmxClient) -> None:
    with pytest.raises(QmxError) as info:
        await client.submit_backtest(**{**SMALL, "timeframe": "H2"})
    assert info.value.status == 400
    assert "timeframe" in info.value.message
    with pytest.raises(QmxError) as info:
        await client.backtest("no-such-run")
    assert info.value.status == 404
    for bad in ("", "backtest:", "news"):
        with pytest.raises(ValueError, match="`topic`"):
            await client.subscribe(bad)


def test_reconnects_resubscribes_and_resumes(daemon: dict[str, Any]) -> None:
    asyncio.run(_reconnect(daemon))


async def _reconnect(daemon: dict[str, Any]) -> None:
    proxy = Proxy(daemon["port"])
    url = await proxy.start()
    try:
        async with QmxClient(url, initial_delay=0.05, max_delay=0.2) as c, QmxClient(daemon["url"]) as rest:
            await c.subscribe("backtest")
            first = await rest.submit_backtest(**SMALL)
            await _until(c, lambda e: e.get("type") == "backtest_complete" and e["data"]["backtest_id"] == first)
            proxy.up = False
            proxy.cut()
            second = await rest.submit_backtest(**SMALL)
            assert (await rest.wait(second, timeout=60))["status"] == "completed"
            proxy.up = True
            events = await _until(c, lambda e: e.get("type") == "backtest_complete"
                                  and e["data"]["backtest_id"] == second)
            assert c.reconnects >= 1
            assert any(e["type"] == "reconnected" for e in events)
            mine = [e["type"] for e in events if e.get("data", {}).get("backtest_id") == second
                    and e["type"].startswith("backtest_")]
            assert mine[0] == "backtest_start", "missed events were replayed from the start of the run"
            seqs = [e["seq"] for e in events if "seq" in e]
            assert seqs == sorted(set(seqs)), "no duplicates, in order"
    finally:
        await proxy.close()


def test_a_restarted_server_is_a_gap_not_a_silence(daemon: dict[str, Any], daemon_factory: Any) -> None:
    """Behind one URL the server is replaced by a fresh one whose seq starts again at 1."""
    asyncio.run(_restart(daemon, daemon_factory()))


async def _restart(old: dict[str, Any], new: dict[str, Any]) -> None:
    proxy = Proxy(old["port"])
    url = await proxy.start()
    try:
        async with QmxClient(url, initial_delay=0.05, max_delay=0.2) as c:
            await c.subscribe("backtest")
            first = await c.submit_backtest(**SMALL)
            await _until(c, lambda e: e.get("type") == "backtest_complete" and e["data"]["backtest_id"] == first)
            before = c.last_seq["backtest"]
            proxy.port = new["port"]
            proxy.cut()
            events = await _until(c, lambda e: e.get("type") == "gap")
            assert events[-1] == {"type": "gap", "topic": "backtest", "since": before}
            second = await c.submit_backtest(**SMALL)  # through the proxy: lands on the new server
            events = await _until(c, lambda e: e.get("type") == "backtest_complete"
                                  and e["data"]["backtest_id"] == second)
            seqs = [e["seq"] for e in events if "seq" in e]
            assert seqs[0] == 1 < before, "the new server's numbering is accepted, not dropped as seen"
            assert [e["type"] for e in events if "seq" in e][0] == "backtest_start"
    finally:
        await proxy.close()


def test_missing_pong_forces_a_reconnect(daemon: dict[str, Any]) -> None:
    asyncio.run(_pong_timeout(daemon))


async def _pong_timeout(daemon: dict[str, Any]) -> None:
    proxy = Proxy(daemon["port"])
    url = await proxy.start()
    try:
        # Generous pong timeout: a loaded CI machine must not look like a dead connection.
        async with QmxClient(url, ping_interval=0.15, pong_timeout=1.5, initial_delay=0.05,
                             max_delay=0.2) as c:
            await c.subscribe("trading")
            await asyncio.sleep(0.5)
            assert c.reconnects == 0, "answered pings keep the connection"
            proxy.stall = True
            await asyncio.wait_for(_poll(lambda: not c.connected), 10)
            proxy.stall = False
            await asyncio.wait_for(_poll(lambda: c.reconnects >= 1 and c.connected), 10)
            assert proxy.connections >= 2 and c.topics == {"trading"}
        before = proxy.connections  # close() (leaving the block) is for good: no reconnect
        await asyncio.sleep(0.5)
        assert proxy.connections == before and not c.connected
    finally:
        await proxy.close()


async def _poll(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)


def test_submit_and_follow_prints_progress_and_table(daemon: dict[str, Any], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncio.run(submit_and_follow(daemon["url"], dict(SMALL), json_output=False)) == 0
    out, err = capsys.readouterr()
    assert "100.0%" in err and "submitted" in err
    assert "Final balance" in out and "Sharpe ratio" in out and "[SYNTHETIC DATA]" in out
    out_json, err_json = io.StringIO(), io.StringIO()
    assert asyncio.run(follow_backtest(daemon["url"], dict(SMALL), json_output=True, out=out_json,
                                       err=err_json)) == 0
    done = json.loads(out_json.getvalue())  # the backtest_complete data object, as a local --json
    assert list(done) == ["backtest_id", "final_balance", "total_trades", "win_rate", "sharpe_ratio",
                          "drawdown", "return_pct", "duration_seconds", "timestamp", "results"]
    assert isinstance(done["total_trades"], int) and done["results"]["data"]["synthetic"] is True
    # accepted, then failed in the engine (the strategy raises): no table of dashes, one error
    # line; --json prints the backtest_error data
    broken = tmp_path / "broken.py"
    broken.write_text("from engine.strategy import Strategy\n\nclass Broken(Strategy):\n    name = 'broken'\n\n"
                      "    def next(self, i, position):\n        return 1 // 0\n")
    failing = {**SMALL, "strategy": f"{broken}:Broken"}
    out_f, err_f = io.StringIO(), io.StringIO()
    assert asyncio.run(follow_backtest(daemon["url"], failing, json_output=False, out=out_f, err=err_f)) == 1
    assert out_f.getvalue() == "" and " failed: " in err_f.getvalue().splitlines()[-1]
    out_f = io.StringIO()
    assert asyncio.run(follow_backtest(daemon["url"], failing, json_output=True, out=out_f, err=err_f)) == 1
    assert json.loads(out_f.getvalue())["status"] == "failed"
    bad = io.StringIO()
    assert asyncio.run(follow_backtest(daemon["url"], {**SMALL, "variant": "x"}, json_output=False,
                                       out=io.StringIO(), err=bad)) == 2
    assert "variant" in bad.getvalue()


def test_bot_helpers_and_the_kill_switch(daemon_factory: Any) -> None:
    daemon = daemon_factory()  # its own daemon: the kill switch halts all trading on it
    asyncio.run(_bots(daemon["url"]))


BOT = {"name": "py-bot", "symbol": "SYNTH", "timeframe": "H1",
       "feed": {"type": "synthetic", "bar_interval": 0.05}}


def _bot_is(bot_id: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (e.get("type") == "trading_update" and e["data"]["bot_id"] == bot_id
                      and e["data"]["status"] == status)


async def _bots(url: str) -> None:
    async with QmxClient(url) as c:
        await c.subscribe("trading")
        bot_id = (await c.start_bot(**BOT))["bot_id"]
        await _until(c, _bot_is(bot_id, "running"), timeout=30)
        assert any(b["bot_id"] == bot_id for b in await c.bots())
        await c.kill()
        await _until(c, _bot_is(bot_id, "killed"), timeout=30)
        with pytest.raises(QmxError) as info:
            await c.start_bot(**BOT)
        assert info.value.status == 409 and "kill switch" in info.value.message
        await c.resume()
        second = None
        for _ in range(100):  # resume is applied by the trading process shortly after the 202
            try:
                second = (await c.start_bot(**BOT))["bot_id"]
                break
            except QmxError as exc:
                assert exc.status == 409, exc
                await asyncio.sleep(0.05)
        assert second is not None
        await _until(c, _bot_is(second, "running"), timeout=30)
        await c.stop_bot(second)
        await _until(c, _bot_is(second, "stopped"), timeout=30)


def test_qmx_watch_prints_the_stream(daemon: dict[str, Any], tmp_path: Path) -> None:
    log = tmp_path / "watch.out"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "watch", "backtest", "--server",
                                 daemon["url"]], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        from tests.conftest import eventually
        from tests.fixtures_daemon import api

        eventually(lambda: "watching backtest" in log.read_text(), timeout=20)
        status, body = api(daemon, "POST", "/api/backtests", SMALL)
        assert status == 202
        short = body["backtest_id"][:8]
        text = str(eventually(lambda: (t := log.read_text()) and f"complete {short}" in t and t, timeout=60))
        lines = [ln for ln in text.splitlines() if short in ln]
        assert any(f"start    {short} SYNTH H1 vanilla" in ln for ln in lines)
        assert any("progress" in ln and "100.0%" in ln for ln in lines)
        assert any(" log " in ln and "INFO" in ln for ln in lines), "log lines carry their level"
    finally:
        proc.terminate()
        proc.wait(10)


def test_qmx_watch_rejects_a_bad_topic_and_an_unreachable_daemon(unused_port: int) -> None:
    proc = subprocess.run([sys.executable, "-m", "server.cli", "watch", "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "backtest, trading, logs" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "server.cli", "watch", "--server",
                           f"http://127.0.0.1:{unused_port}"], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_format_event_lines() -> None:
    line = format_event({"type": "trading_update", "data": {"bot_id": "b1", "status": "running", "pnl": 1.5}})
    assert "trading  b1 running pnl +1.50" in line
    assert format_event({"type": "pong"}) == ""
    line = format_event({"type": "log_entry", "data": {"level": "WARNING", "message": "odd", "logger_name": "x"}})
    assert line.endswith("log      x WARNING odd")
    done = {"sweep_id": "s1", "objective": "sharpe_ratio", "evaluated": 9, "skipped": 0, "duration_seconds": 0.3,
            "best": {"params": {"fast": 15}, "objective_value": 1.5}, "results": [{"rank": i} for i in range(50)]}
    assert format_event({"type": "sweep_complete", "data": done}).endswith(
        'sweep    s1 done 9 evaluated, 0 skipped; best {"fast": 15} sharpe_ratio 1.5 in 0.30s')


def test_json_of_a_run_that_did_not_complete_is_the_backtest_error_data() -> None:
    from server.cli_client import error_data  # noqa: PLC0415

    run = {"backtest_id": "b1", "status": "cancelled", "error": "cancelled by request", "error_details": None,
           "finished_at": "2024-01-15T10:30:45.000Z", "metrics": None, "results": None}
    assert error_data(run) == {"backtest_id": "b1", "error": "cancelled by request", "error_details": "",
                               "timestamp": "2024-01-15T10:30:45.000Z", "status": "cancelled"}


def test_seq_is_kept_per_frame_topic() -> None:
    """On `backtest` and `backtest:<id>` at once, each copy counts in the topic it names."""
    async def main() -> list[dict[str, Any]]:
        client = QmxClient("http://127.0.0.1:9")
        client.topics |= {"backtest", "backtest:b1"}
        frames = [{"type": "backtest_start", "data": {"backtest_id": "b1"}, "topic": "backtest", "seq": 40},
                  {"type": "backtest_start", "data": {"backtest_id": "b1"}, "topic": "backtest:b1", "seq": 1},
                  {"type": "backtest_progress", "data": {"backtest_id": "b1"}, "topic": "backtest:b1", "seq": 2},
                  {"type": "backtest_start", "data": {"backtest_id": "b1"}, "topic": "backtest:b1", "seq": 1}]
        for frame in frames:  # the last is a replayed copy after a reconnect
            await client._handle(frame)
        assert client.last_seq == {"backtest": 40, "backtest:b1": 2}
        return [e for e in [await client.next_event(0.1) for _ in range(4)] if e]
    got = asyncio.run(main())
    assert [(e["topic"], e["seq"]) for e in got] == [("backtest", 40), ("backtest:b1", 1), ("backtest:b1", 2)]


def test_gives_up_after_the_reconnect_limit(daemon: dict[str, Any]) -> None:
    asyncio.run(_give_up(daemon))


async def _give_up(daemon: dict[str, Any]) -> None:
    proxy = Proxy(daemon["port"])
    url = await proxy.start()
    try:
        async with QmxClient(url, initial_delay=0.02, max_delay=0.05, max_reconnect_attempts=3) as c:
            await c.subscribe("trading")
            proxy.up = False
            proxy.cut()
            async def drain() -> None:
                async for _ in c:  # the iteration ends once the client gives up
                    pass
            await asyncio.wait_for(drain(), 10)
            assert not c.connected and c.reconnects == 0
    finally:
        await proxy.close()
