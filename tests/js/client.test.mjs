// The spec's TypeScript client example, run against the module the daemon serves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QMX_URL, submitBacktest, eventually, assertWholeBacktest } from './helpers.mjs';

test('the spec client example receives a whole backtest', async () => {
  // Import the very file the daemon serves at /static/ws-client.js (data: URL of its text).
  const resp = await fetch(`${QMX_URL}/static/ws-client.js`);
  assert.equal(resp.status, 200);
  assert.match(resp.headers.get('content-type'), /javascript/);
  const source = await resp.text();
  const { WebSocketClient, createBacktestClient } = await import(`data:text/javascript,${encodeURIComponent(source)}`);
  assert.equal(typeof WebSocketClient, 'function');

  const seen = [];
  const lines = [];
  const console = { log: (...a) => lines.push(a.join(' ')), error: (...a) => lines.push(a.join(' ')) };
  // ---- spec example begins (URL: the test daemon instead of localhost:8000)
  // Create client with auto-subscribe
  const client = await createBacktestClient(QMX_URL);

  // Register event handlers
  client.on('backtest_start', (message) => {
    console.log('Backtest started:', message.data);
  });

  client.on('backtest_progress', (message) => {
    console.log(`Progress: ${message.data.progress}%`);
  });

  client.on('backtest_complete', (message) => {
    console.log('Backtest complete:', message.data);
    client.disconnect();
  });

  client.on('backtest_error', (message) => {
    console.error('Backtest error:', message.data.error);
  });

  client.on('log_entry', (message) => {
    console.log(`[${message.data.level}] ${message.data.message}`);
  });
  // ---- spec example ends
  const reconnecting = [];
  client.on('reconnecting', (e) => reconnecting.push(e));
  client.on('*', (m) => seen.push(m));
  assert.ok(client.connected, 'createBacktestClient resolves to a connected client');
  assert.deepEqual([...client.topics], ['backtest']);

  const id = await submitBacktest();
  // Other tests may share the daemon: the example disconnects on the first complete it sees.
  await eventually(() => !client.connected);
  if (!seen.some((m) => m.type === 'backtest_complete' && m.data.backtest_id === id)) {
    // Another run finished first and the example disconnected; follow ours to the end.
    client.off('backtest_complete');
    await client.connect();
    await client.subscribe(`backtest:${id}`, { since: 0 });
    await eventually(() => seen.some((m) => m.type === 'backtest_complete' && m.data.backtest_id === id));
    client.disconnect();
  }
  assertWholeBacktest(seen, id);
  assert.ok(lines.some((l) => l.startsWith('Backtest complete:')));
  assert.ok(lines.includes('Progress: 100%'));
  // A manual disconnect never reconnects.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(reconnecting.length, 0);
  assert.equal(client.connected, false);
});

test('subscribe and unsubscribe are confirmed; bad input gets an error frame', async () => {
  const { WebSocketClient } = await import('../../server/static/ws-client.js');
  const client = new WebSocketClient(QMX_URL);
  const errors = [];
  client.on('error', (m) => errors.push(m));
  try {
    await client.connect();
    const confirmed = await client.subscribe('logs');
    assert.equal(confirmed.type, 'subscription_confirmed');
    assert.equal(confirmed.topic, 'logs');
    await client.unsubscribe('logs');
    assert.equal(client.topics.size, 0);
    client.ws.send(JSON.stringify({ action: 'subscribe', topic: 'nope' }));
    await eventually(() => errors.length > 0);
    assert.match(errors[0].error, /topic/);
    assert.ok(client.connected, 'bad input never closes the socket');
  } finally {
    client.disconnect();
  }
  assert.throws(() => client.subscribe('news'), /`topic` must be one of/);
  const { toWebSocketUrl } = await import('../../server/static/ws-client.js');
  assert.equal(toWebSocketUrl('http://h:8000'), 'ws://h:8000/ws');
  assert.equal(toWebSocketUrl('https://h/qmx/'), 'wss://h/qmx/ws');
  assert.equal(toWebSocketUrl('ws://h:1/ws'), 'ws://h:1/ws');
  assert.throws(() => new WebSocketClient('ftp://x'), /http, https, ws, wss/);
  assert.throws(() => new WebSocketClient(QMX_URL, { retries: 3 }), /unknown option "retries"/);
  assert.throws(() => new WebSocketClient(QMX_URL, { maxDelayMs: '5s' }), /option "maxDelayMs" must be a number >= 0, got "5s"/);
  assert.throws(() => new WebSocketClient(QMX_URL, { jitter: 2 }), /option "jitter" must be between 0 and 1/);
  assert.throws(() => new WebSocketClient(QMX_URL, { reconnect: 'no' }), /option "reconnect" must be true or false/);
});

test('createTradingClient resolves subscribed to trading', async () => {
  const { createTradingClient } = await import('../../server/static/ws-client.js');
  const client = await createTradingClient(QMX_URL);
  try {
    assert.ok(client.connected);
    assert.deepEqual([...client.topics], ['trading']);
  } finally {
    client.disconnect();
  }
});

test('disconnect() before the socket opens settles connect() and nothing opens later', async () => {
  const { WebSocketClient } = await import('../../server/static/ws-client.js');
  const client = new WebSocketClient(QMX_URL);
  const opens = [];
  client.on('open', (e) => opens.push(e));
  const pending = client.connect();
  client.disconnect();
  await assert.rejects(pending, /disconnect\(\) before the connection/);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(opens.length, 0);
  assert.equal(client.connected, false);
});
