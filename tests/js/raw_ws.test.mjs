// The spec's "Raw WebSocket" example, unchanged apart from recording what it logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QMX_URL, submitBacktest, eventually, assertWholeBacktest } from './helpers.mjs';

test('the spec raw WebSocket example receives a whole backtest', async () => {
  const seen = [];
  const lines = [];
  const console = { log: (...a) => lines.push(a.join(' ')), error: (...a) => lines.push(a.join(' ')) };
  let id = null;
  const ws = new WebSocket(`${QMX_URL.replace(/^http/, 'ws')}/ws`);
  // ---- spec example begins
  ws.onopen = () => {
    // Subscribe to backtest topic
    ws.send(JSON.stringify({
      action: 'subscribe',
      topic: 'backtest'
    }));
  };

  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    seen.push(message);

    switch (message.type) {
      case 'subscription_confirmed':
        console.log('Subscribed to:', message.topic);
        break;
      case 'backtest_start':
        console.log('Backtest started:', message.data);
        break;
      case 'backtest_progress':
        console.log(`Progress: ${message.data.progress}%`);
        break;
      case 'backtest_complete':
        console.log('Complete:', message.data);
        break;
      case 'backtest_error':
        console.error('Error:', message.data.error);
        break;
      case 'log_entry':
        console.log(`[${message.data.level}] ${message.data.message}`);
        break;
    }
  };

  ws.onerror = (error) => {
    console.error('WebSocket error:', error);
  };

  ws.onclose = () => {
    console.log('WebSocket closed');
  };
  // ---- spec example ends
  try {
    await eventually(() => seen.some((m) => m.type === 'subscription_confirmed' && m.topic === 'backtest'));
    id = await submitBacktest();
    await eventually(() => seen.some((m) => m.data?.backtest_id === id && (m.type === 'backtest_complete' || m.type === 'backtest_error')));
    assertWholeBacktest(seen, id);
    assert.ok(lines.includes('Subscribed to: backtest'));
    assert.ok(lines.some((l) => l === 'Progress: 100%'), 'the example printed 100% progress');
    await eventually(() => seen.some((m) => m.type === 'log_entry' && m.data.backtest_id === id)); // the run's logs arrive on the backtest topic
    ws.send(JSON.stringify({ action: 'ping' }));
    await eventually(() => seen.some((m) => m.type === 'pong'));
  } finally {
    ws.close();
  }
});
