// Reconnect, resubscribe and resume with `since`, through a TCP proxy this test controls: cutting
// the proxy's sockets is, to the client, exactly the server dropping the connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { WebSocketClient } from '../../server/static/ws-client.js';
import { QMX_URL, submitBacktest, getRun, eventually, assertWholeBacktest } from './helpers.mjs';

/** A TCP proxy to the daemon. mode: 'up' forwards, 'down' refuses, 'stall' swallows all bytes. */
async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const proxy = { mode: 'up', connections: 0 };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (proxy.mode === 'down') { client.destroy(); return; }
    proxy.connections += 1;
    const upstream = net.connect(Number(port), hostname);
    sockets.add(upstream);
    upstream.on('close', () => { sockets.delete(upstream); client.destroy(); });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    const forward = (from, to) => from.on('data', (chunk) => { if (proxy.mode !== 'stall') to.write(chunk); });
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  proxy.cut = () => { for (const s of sockets) s.destroy(); };
  proxy.close = () => { proxy.cut(); return new Promise((r) => server.close(r)); };
  return proxy;
}

// connectTimeoutMs: Node 20's WebSocket never reports a TCP connection refused mid-handshake.
const FAST = { initialDelayMs: 50, maxDelayMs: 200, maxReconnectAttempts: 50, requestTimeoutMs: 5000, connectTimeoutMs: 500 };

test('after the server drops the socket the client reconnects, resubscribes and replays what it missed', async () => {
  const proxy = await startProxy(QMX_URL);
  const client = new WebSocketClient(proxy.url, FAST);
  const seen = [];
  const lifecycle = [];
  const confirmations = [];
  client.on('*', (m) => seen.push(m));
  client.on('subscription_confirmed', (m) => confirmations.push(m));
  for (const t of ['close', 'reconnecting', 'reconnected', 'gap']) client.on(t, (e) => lifecycle.push(e.type));
  try {
    await client.connect();
    await client.subscribe('backtest');
    const first = await submitBacktest();
    await eventually(() => seen.some((m) => m.type === 'backtest_complete' && m.data.backtest_id === first));
    const lastSeq = client.lastSeq.get('backtest');
    assert.equal(typeof lastSeq, 'number');

    proxy.mode = 'down';
    proxy.cut(); // the connection dies under the client
    await eventually(() => lifecycle.includes('reconnecting'));
    const second = await submitBacktest(); // runs while the client is away
    await eventually(async () => (await getRun(second)).status === 'completed');
    assert.ok(!seen.some((m) => m.data?.backtest_id === second), 'nothing of the second run arrived while away');
    proxy.mode = 'up';

    await eventually(() => seen.some((m) => m.type === 'backtest_complete' && m.data.backtest_id === second));
    assert.ok(lifecycle.includes('reconnected'));
    assert.ok(!lifecycle.includes('gap'), 'the server still had the missed events');
    const resumed = confirmations.at(-1);
    assert.equal(resumed.recovered, true, `resubscribe with since=${lastSeq} is recovered`);
    assertWholeBacktest(seen, second); // start..complete, replayed in order
    const seqs = seen.filter((m) => typeof m.seq === 'number').map((m) => m.seq);
    assert.equal(new Set(seqs).size, seqs.length, 'no event delivered twice');
    assert.ok(client.connected);
  } finally {
    client.disconnect();
    await proxy.close();
  }
});

test('a missing pong forces a reconnect; a manual disconnect never reconnects', async () => {
  const proxy = await startProxy(QMX_URL);
  // Generous pong timeout: a loaded CI machine must not look like a dead connection.
  const client = new WebSocketClient(proxy.url, { ...FAST, pingIntervalMs: 150, pongTimeoutMs: 1500 });
  const lifecycle = [];
  for (const t of ['close', 'reconnecting', 'reconnected']) client.on(t, (e) => lifecycle.push(e));
  try {
    await client.connect();
    await client.subscribe('trading');
    await new Promise((r) => setTimeout(r, 500)); // several pings answered: no reconnect
    assert.equal(lifecycle.length, 0, JSON.stringify(lifecycle));
    proxy.mode = 'stall'; // the socket stays open but nothing comes back
    await eventually(() => lifecycle.some((e) => e.type === 'close' && e.reason === 'pong timeout'), 5000);
    proxy.mode = 'up';
    await eventually(() => lifecycle.some((e) => e.type === 'reconnected') && client.connected, 5000);
    assert.ok(proxy.connections >= 2);
    assert.deepEqual([...client.topics], ['trading']);
  } finally {
    client.disconnect();
  }
  const before = proxy.connections;
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(proxy.connections, before, 'no connection attempt after disconnect()');
  assert.equal(client.connected, false);
  await proxy.close();
});

test('backoff grows exponentially with jitter, is capped, and gives up after the limit', async () => {
  const proxy = await startProxy(QMX_URL);
  const client = new WebSocketClient(proxy.url, { initialDelayMs: 20, maxDelayMs: 80, backoffFactor: 2, jitter: 0.5, maxReconnectAttempts: 4, connectTimeoutMs: 300 });
  const delays = [];
  const errors = [];
  client.on('reconnecting', (e) => delays.push(e.delayMs));
  client.on('error', (e) => errors.push(e.error));
  try {
    await client.connect();
    proxy.mode = 'down'; // every reconnect attempt is refused
    proxy.cut();
    await eventually(() => errors.some((e) => /gave up after 4/.test(e)), 5000);
    assert.equal(delays.length, 4);
    const caps = [20, 40, 80, 80];
    delays.forEach((d, i) => assert.ok(d >= caps[i] * 0.5 && d <= caps[i], `delay ${i}: ${d} within [${caps[i] / 2}, ${caps[i]}]`));
    assert.equal(client.connected, false);
  } finally {
    client.disconnect();
    await proxy.close();
  }
});

test('on both backtest and backtest:<id>, seq is kept per frame topic and both topics resume', async () => {
  const proxy = await startProxy(QMX_URL);
  const client = new WebSocketClient(proxy.url, FAST);
  const seen = [];
  const confirmations = [];
  client.on('*', (m) => seen.push(m));
  client.on('subscription_confirmed', (m) => confirmations.push(m));
  try {
    await client.subscribe('backtest');
    const first = await submitBacktest();
    const runTopic = `backtest:${first}`;
    await client.subscribe(runTopic, { since: 0 });
    const onTopic = (t) => seen.filter((m) => m.topic === t && typeof m.seq === 'number');
    await eventually(() => onTopic(runTopic).some((m) => m.type === 'backtest_complete')
      && onTopic('backtest').some((m) => m.type === 'backtest_complete' && m.data.backtest_id === first));
    // Each copy names its topic; each topic's events arrive whole, in its own seq order.
    assertWholeBacktest(onTopic(runTopic), first);
    assertWholeBacktest(onTopic('backtest'), first);
    for (const t of ['backtest', runTopic]) {
      assert.equal(client.lastSeq.get(t), Math.max(...onTopic(t).map((m) => m.seq)), `lastSeq of ${t}`);
    }
    proxy.mode = 'down';
    proxy.cut();
    const second = await submitBacktest(); // on `backtest` only, while the client is away
    await eventually(async () => (await getRun(second)).status === 'completed');
    const before = confirmations.length;
    proxy.mode = 'up';
    await eventually(() => onTopic('backtest').some((m) => m.type === 'backtest_complete' && m.data.backtest_id === second));
    await eventually(() => confirmations.length >= before + 2);
    for (const c of confirmations.slice(before)) assert.equal(c.recovered, true, `${c.topic} resumed from its own seq`);
    assertWholeBacktest(onTopic('backtest'), second);
    for (const t of ['backtest', runTopic]) {
      const seqs = onTopic(t).map((m) => m.seq);
      assert.equal(new Set(seqs).size, seqs.length, `no ${t} event delivered twice`);
    }
  } finally {
    client.disconnect();
    await proxy.close();
  }
});

test('connect() while a reconnect is pending connects at once, with one socket', async () => {
  const proxy = await startProxy(QMX_URL);
  const client = new WebSocketClient(proxy.url, { ...FAST, initialDelayMs: 600, maxDelayMs: 600 });
  const reconnecting = [];
  client.on('reconnecting', (e) => reconnecting.push(e));
  try {
    await client.subscribe('trading');
    proxy.cut(); // the next automatic attempt is 300-600 ms away
    await eventually(() => reconnecting.length === 1);
    const before = proxy.connections;
    await client.connect();
    assert.ok(client.connected);
    await new Promise((r) => setTimeout(r, 800)); // past the pending attempt's time
    assert.equal(proxy.connections, before + 1, 'the pending attempt was cancelled');
    assert.deepEqual([...client.topics], ['trading']);
  } finally {
    client.disconnect();
    await proxy.close();
  }
});
