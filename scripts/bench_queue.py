"""Inter-process message throughput: one msgpack message per put vs batched puts, plus fan-out.

    python scripts/bench_queue.py [--messages 200000] [--subscribers 1000]

Measures, between a spawned producer process and this process:
  1. one ``put`` per message (each message msgpack-encoded on its own),
  2. one ``put`` per list of 256 messages (what ``actors.process.Outbox`` does under load),
  3. the real ``Outbox`` class (size/age flushing on its own thread),
and the ConnectionManager actor's fan-out rate (deliveries/s = frames x subscribers) with a
deliver callback that only counts. Numbers are noisy on a shared machine; run it twice.
Needs nothing beyond the project's dependencies.
"""
from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.codec import pack, unpack  # noqa: E402

EVENT = {"type": "backtest_progress", "data": {
    "backtest_id": "550e8400-e29b-41d4-a716-446655440000", "progress": 50.0,
    "status": "Processing bar 5000/10000", "bars_processed": 5000, "total_bars": 10000,
    "current_date": "2023-06-15", "trades_count": 25, "current_pnl": 500.0,
    "timestamp": "2024-01-15T10:30:30.000Z"}}


def produce(q: Any, mode: str, n: int) -> None:
    """Child process: send ``n`` events to ``q`` one per put, in lists of 256, or via Outbox."""
    if mode == "single":
        for _ in range(n):
            q.put(pack([EVENT]))
    elif mode == "batched":
        for start in range(0, n, 256):
            q.put(pack([EVENT] * min(256, n - start)))
    else:
        from actors.process import Outbox

        box = Outbox(q)
        for _ in range(n):
            box.send(EVENT)
        box.close(timeout=30)
    q.put(None)


def consume(mode: str, n: int) -> float:
    """Messages per second received by this process for one producer ``mode``."""
    mp = multiprocessing.get_context("spawn")
    q = mp.Queue(maxsize=4096)
    proc = mp.Process(target=produce, args=(q, mode, n))
    proc.start()
    first = q.get(timeout=60)
    start = time.perf_counter()
    got = len(unpack(first)) if first is not None else 0
    while True:
        raw = q.get(timeout=60)
        if raw is None:
            break
        got += len(unpack(raw))
    elapsed = time.perf_counter() - start
    proc.join(10)
    assert got == n, (got, n)
    return got / elapsed


def fanout(subscribers: int, frames: int) -> float:
    """Deliveries per second through the ConnectionManager actor to ``subscribers`` clients."""
    from actors.connections import ConnectionManager, Publish, Subscribe

    done = threading.Event()
    count = [0]

    def deliver(batch: list[tuple[str, tuple[int, ...]]]) -> None:
        for _, ids in batch:
            count[0] += len(ids)
        if count[0] >= subscribers * frames:
            done.set()

    ref = ConnectionManager.start(deliver)
    try:
        for client in range(subscribers):
            ref.tell(Subscribe(client, "logs"))
        ref.ask(Publish([]), timeout=30)
        count[0] = 0
        event = {"type": "log_entry", "data": {"timestamp": "2024-01-15T10:30:31.000Z",
                                               "level": "INFO", "message": "x" * 80}}
        start = time.perf_counter()
        for _ in range(frames // 100):
            ref.tell(Publish([event] * 100))
        done.wait(120)
        return count[0] / (time.perf_counter() - start)
    finally:
        ref.stop(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="events per producer run")
    parser.add_argument("--subscribers", type=int, default=1000, help="clients for the fan-out run")
    args = parser.parse_args()
    if args.messages < 1000 or args.subscribers < 1:
        parser.error("--messages must be >= 1000 and --subscribers >= 1")
    n = args.messages
    print(f"inter-process queue, {n} backtest_progress events (msgpack), spawned producer:")
    single = consume("single", n // 4)  # the slow mode: a quarter of the messages is plenty
    print(f"  one message per put   : {single:>10,.0f} msgs/s")
    batched = consume("batched", n)
    print(f"  256 messages per put  : {batched:>10,.0f} msgs/s  ({batched / single:.1f}x)")
    outbox = consume("outbox", n)
    print(f"  actors.process.Outbox : {outbox:>10,.0f} msgs/s  ({outbox / single:.1f}x)")
    rate = fanout(args.subscribers, 20_000)
    print(f"ConnectionManager fan-out to {args.subscribers} subscribers: {rate:>12,.0f} deliveries/s "
          f"({rate / args.subscribers:,.0f} frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
