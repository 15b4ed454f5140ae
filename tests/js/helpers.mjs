// Shared helpers of the Node tests. The pytest wrapper (tests/test_client_js.py) starts a real
// `qmx serve` and passes its base URL in QMX_URL.
import assert from 'node:assert/strict';

export const QMX_URL = process.env.QMX_URL;
assert.ok(QMX_URL, 'QMX_URL must point at a running `qmx serve` (tests/test_client_js.py sets it)');

/** A small, quick backtest on the synthetic data every store has. */
export const SMALL_BACKTEST = Object.freeze({
  symbol: 'SYNTH', timeframe: 'H1', variant: 'vanilla', strategy: 'sma_cross',
  start_date: '2023-01-01', end_date: '2023-06-30',
});

export async function submitBacktest(base = QMX_URL, body = SMALL_BACKTEST) {
  const resp = await fetch(`${base}/api/backtests`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const json = await resp.json();
  assert.equal(resp.status, 202, `POST /api/backtests: ${JSON.stringify(json)}`);
  assert.equal(typeof json.backtest_id, 'string');
  return json.backtest_id;
}

export async function getRun(id, base = QMX_URL) {
  const resp = await fetch(`${base}/api/backtests/${id}`);
  assert.equal(resp.status, 200);
  return resp.json();
}

/** Poll `check` until it returns a truthy value (like tests/conftest.py's `eventually`). */
export async function eventually(check, timeoutMs = 30000, intervalMs = 25) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${check}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Check one whole backtest's events against the spec's field names and types. */
export function assertWholeBacktest(events, id) {
  // log_entry frames come from another process; only the backtest_* order is guaranteed.
  const mine = events.filter((m) => m.data?.backtest_id === id && m.type.startsWith('backtest_'));
  const types = mine.map((m) => m.type);
  assert.equal(types[0], 'backtest_start', `first event of ${id}: ${types.slice(0, 3)}`);
  assert.equal(types.at(-1), 'backtest_complete', `last event of ${id}: ${types.slice(-3)}`);
  const start = mine[0].data;
  for (const k of ['variant', 'symbol', 'timeframe', 'start_date', 'end_date', 'timestamp']) assert.equal(typeof start[k], 'string', k);
  const progress = mine.filter((m) => m.type === 'backtest_progress').map((m) => m.data);
  assert.ok(progress.length >= 2, `expected progress events, got ${progress.length}`);
  for (const p of progress) {
    for (const k of ['progress', 'bars_processed', 'total_bars', 'trades_count', 'current_pnl']) assert.equal(typeof p[k], 'number', k);
    for (const k of ['status', 'current_date', 'timestamp']) assert.equal(typeof p[k], 'string', k);
  }
  const pct = progress.map((p) => p.progress);
  assert.deepEqual(pct, [...pct].sort((a, b) => a - b), 'progress never goes backwards');
  assert.equal(pct.at(-1), 100);
  const done = mine.at(-1).data;
  for (const k of ['final_balance', 'total_trades', 'win_rate', 'drawdown', 'return_pct', 'duration_seconds']) assert.equal(typeof done[k], 'number', k);
  assert.equal(typeof done.results, 'object');
  const seqs = mine.map((m) => m.seq);
  assert.ok(seqs.every((s, i) => typeof s === 'number' && (i === 0 || s > seqs[i - 1])), `seq increases: ${seqs}`);
  return mine;
}
