// QuantMindX WebSocket client: an ES module for browsers and Node >= 20 (no dependencies).
//
//   import { createBacktestClient } from './ws-client.js';
//   const client = await createBacktestClient('http://localhost:8000');
//   client.on('backtest_progress', (m) => console.log(m.data.progress));
//
// Beyond the spec it reconnects with capped exponential backoff and jitter, re-subscribes its
// topics with `since` (the last `seq` seen per topic) so the server can replay what was missed,
// and sends an application-level `ping` so a silent dead connection is noticed and replaced.

export const DEFAULT_OPTIONS = Object.freeze({
  reconnect: true,
  maxReconnectAttempts: 10, // per outage; the counter resets after a successful connect
  initialDelayMs: 500,
  maxDelayMs: 30000,
  backoffFactor: 2,
  jitter: 0.5, // each delay is scaled by a random factor in [1 - jitter, 1]
  pingIntervalMs: 25000, // 0 disables keep-alive pings
  pongTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  requestTimeoutMs: 10000, // how long subscribe()/unsubscribe() wait for the confirmation
});

/** Topics the daemon accepts (`bench` only with `qmx serve --diagnostics`). */
const TOPIC_RE = /^(?:backtest|trading|logs|bench|(?:backtest|sweep):[A-Za-z0-9_.-]{1,64})$/;

/** Turn `http://host:8000`, `ws://host:8000` or `.../ws` into the daemon's WebSocket URL. */
export function toWebSocketUrl(url) {
  if (typeof url !== 'string' || !url) {
    throw new TypeError(`\`url\` must be an http(s):// or ws(s):// URL string, got ${JSON.stringify(url)}`);
  }
  const u = new URL(url, globalThis.location?.href);
  const schemes = { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' };
  if (!(u.protocol in schemes)) {
    throw new TypeError(`\`url\` must use one of http, https, ws, wss; got ${u.protocol}`);
  }
  u.protocol = schemes[u.protocol];
  if (!u.pathname.endsWith('/ws')) u.pathname = u.pathname.replace(/\/$/, '') + '/ws';
  return u.toString();
}

/** Topic a frame belongs to, for `seq` bookkeeping: the server's `topic` field when present. */
function frameTopic(msg, topics) {
  if (typeof msg.topic === 'string') return msg.topic;
  if (msg.type === 'trading_update') return 'trading';
  const id = msg.data?.backtest_id;
  if (msg.type === 'log_entry' && !id) return 'logs';
  if (id && topics.has(`backtest:${id}`) && !topics.has('backtest')) return `backtest:${id}`;
  return 'backtest';
}

export class WebSocketClient {
  /**
   * @param {string} url  daemon base URL (http://host:port) or its WebSocket URL (ws://host:port/ws)
   * @param {object} [options]  see DEFAULT_OPTIONS; `WebSocket` overrides the implementation
   */
  constructor(url, options = {}) {
    this.url = toWebSocketUrl(url);
    for (const key of Object.keys(options)) {
      if (!(key in DEFAULT_OPTIONS) && key !== 'WebSocket') {
        throw new TypeError(`unknown option ${JSON.stringify(key)}; allowed: ${Object.keys(DEFAULT_OPTIONS).join(', ')}, WebSocket`);
      }
    }
    this.options = { ...DEFAULT_OPTIONS, ...options };
    for (const [key, value] of Object.entries(this.options)) {
      if (key === 'reconnect') {
        if (typeof value !== 'boolean') throw new TypeError(`option "reconnect" must be true or false, got ${JSON.stringify(value)}`);
      } else if (key in DEFAULT_OPTIONS && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
        throw new TypeError(`option ${JSON.stringify(key)} must be a number >= 0, got ${JSON.stringify(value)}`);
      }
    }
    if (this.options.jitter > 1) throw new TypeError(`option "jitter" must be between 0 and 1, got ${this.options.jitter}`);
    if (this.options.backoffFactor < 1) throw new TypeError(`option "backoffFactor" must be >= 1, got ${this.options.backoffFactor}`);
    this._WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new Error('no WebSocket implementation: use a browser, Node >= 22, or Node 20 with --experimental-websocket');
    }
    this.ws = null;
    this.topics = new Set(); // what we want to be subscribed to, restored after a reconnect
    this.lastSeq = new Map(); // topic -> last seq seen
    this.reconnectAttempts = 0;
    this._handlers = new Map();
    this._pending = new Map(); // "subscribe:topic" -> [{resolve, reject, timer}]
    this._manualClose = false;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._connecting = null;
    this._abortConnect = null;
  }

  /** True while the socket is open. */
  get connected() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /** Open the connection; resolves once it is open (rejects if the first attempt fails). */
  connect() {
    this._manualClose = false;
    if (this.connected) return Promise.resolve(this);
    if (this._connecting) return this._connecting;
    // Called while reconnecting: connect now rather than after the backoff delay, and drop a
    // background attempt still in its handshake, so only one socket is ever ours.
    clearTimeout(this._reconnectTimer);
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.onopen = old.onmessage = old.onclose = null;
      try { old.close(); } catch { /* not open yet */ }
    }
    this._connecting = new Promise((resolve, reject) => {
      this._abortConnect = reject; // disconnect() before the socket opens settles connect()
      this._open(resolve, reject);
    }).finally(() => { this._connecting = null; this._abortConnect = null; });
    return this._connecting;
  }

  /** Register `handler(message)` for a message `type` (`'*'` for every message). Returns an unregister function. */
  on(type, handler) {
    if (typeof handler !== 'function') throw new TypeError('`handler` must be a function');
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  /** Remove a handler registered with on(); without `handler`, remove all handlers of `type`. */
  off(type, handler) {
    const set = this._handlers.get(type);
    if (!set) return;
    if (handler) set.delete(handler); else set.clear();
  }

  /**
   * Subscribe to a topic (`backtest`, `trading`, `logs` or `backtest:<id>`). Resolves with the
   * server's `subscription_confirmed` message. The topic is restored after every reconnect.
   * @param {string} topic
   * @param {{since?: number}} [opts] replay buffered events with seq > since
   */
  subscribe(topic, opts = {}) {
    if (typeof topic !== 'string' || !TOPIC_RE.test(topic)) {
      throw new TypeError(`\`topic\` must be one of backtest, trading, logs, backtest:<id>, sweep:<id>; got ${JSON.stringify(topic)}`);
    }
    this.topics.add(topic);
    if (opts.since !== undefined) this.lastSeq.set(topic, opts.since);
    if (!this.connected) return this.connect().then(() => this._awaitConfirm('subscribe', topic));
    return this._sendSubscribe(topic);
  }

  /** Stop receiving a topic; resolves with the server's confirmation. */
  unsubscribe(topic) {
    this.topics.delete(topic);
    this.lastSeq.delete(topic);
    if (!this.connected) return Promise.resolve({ type: 'unsubscribed', topic });
    const p = this._expect('unsubscribe', topic);
    this._send({ action: 'unsubscribe', topic });
    return p;
  }

  /** Send an application-level ping now. */
  ping() {
    this._send({ action: 'ping' });
  }

  /** Close for good: no reconnect follows. */
  disconnect(code = 1000, reason = 'client disconnect') {
    this._manualClose = true;
    clearTimeout(this._reconnectTimer);
    this._stopKeepAlive();
    this._rejectPending(new Error('client disconnected'));
    this._abortConnect?.(new Error(`disconnect() before the connection to ${this.url} opened`));
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(code, reason); } catch { /* already closing */ }
      this._emit('close', { type: 'close', code, reason, wasClean: true });
    }
  }

  // ---- internals -------------------------------------------------------------------------

  _open(resolve, reject) {
    let ws;
    try {
      ws = new this._WS(this.url);
    } catch (err) {
      reject?.(err);
      return;
    }
    this.ws = ws;
    let opened = false;
    // Some implementations (Node 20's) never fire close when the TCP connection dies during the
    // handshake, so an attempt that has not opened in time is abandoned here.
    const timer = setTimeout(() => {
      if (opened || this.ws !== ws) return;
      if (reject) {
        ws.onclose = null;
        try { ws.close(); } catch { /* not open yet */ }
        this.ws = null;
        reject(new Error(`could not connect to ${this.url}: no answer within ${this.options.connectTimeoutMs} ms`));
      } else {
        this._drop(ws, 'connect timeout');
      }
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      if (this.ws !== ws) { try { ws.close(1000); } catch { /* gone */ } return; } // disconnect() came first
      opened = true;
      clearTimeout(timer);
      const wasReconnect = this.reconnectAttempts > 0 || this._everOpened;
      this._everOpened = true;
      this.reconnectAttempts = 0;
      this._startKeepAlive();
      for (const topic of this.topics) this._sendSubscribe(topic).catch(() => {});
      this._emit('open', { type: 'open' });
      if (wasReconnect) this._emit('reconnected', { type: 'reconnected', topics: [...this.topics] });
      resolve?.(this);
    };
    ws.onmessage = (event) => this._onMessage(event);
    ws.onerror = (event) => this._emit('error', { type: 'error', error: event?.message ?? 'WebSocket error' });
    ws.onclose = (event) => {
      clearTimeout(timer);
      if (this.ws !== ws) return; // replaced or manually closed already
      this.ws = null;
      this._stopKeepAlive();
      this._rejectPending(new Error('connection closed'));
      this._emit('close', { type: 'close', code: event?.code, reason: event?.reason, wasClean: !!event?.wasClean });
      if (!opened && reject) { reject(new Error(`could not connect to ${this.url}`)); return; }
      this._scheduleReconnect();
    };
  }

  /** Abandon a socket that looks dead (no pong, connect timeout) and start reconnecting. */
  _drop(ws, why) {
    if (this.ws !== ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    try { ws.close(4000, why); } catch { /* ignore */ }
    this.ws = null;
    this._stopKeepAlive();
    this._rejectPending(new Error(why));
    this._emit('close', { type: 'close', code: 4000, reason: why, wasClean: false });
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const o = this.options;
    if (this._manualClose || !o.reconnect) return;
    if (this.reconnectAttempts >= o.maxReconnectAttempts) {
      this._emit('error', { type: 'error', error: `gave up after ${this.reconnectAttempts} reconnect attempts` });
      return;
    }
    const base = Math.min(o.maxDelayMs, o.initialDelayMs * o.backoffFactor ** this.reconnectAttempts);
    const delay = Math.round(base * (1 - o.jitter * Math.random()));
    this.reconnectAttempts += 1;
    this._emit('reconnecting', { type: 'reconnecting', attempt: this.reconnectAttempts, delayMs: delay });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      if (!this._manualClose) this._open(null, null);
    }, delay);
  }

  _startKeepAlive() {
    this._stopKeepAlive();
    const { pingIntervalMs, pongTimeoutMs } = this.options;
    if (!pingIntervalMs) return;
    const ws = this.ws;
    this._pingTimer = setInterval(() => {
      if (this.ws !== ws || this._pongTimer) return;
      this._send({ action: 'ping' });
      this._pongTimer = setTimeout(() => this._drop(ws, 'pong timeout'), pongTimeoutMs);
    }, pingIntervalMs);
  }

  _stopKeepAlive() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  _sendSubscribe(topic) {
    const p = this._expect('subscribe', topic);
    const msg = { action: 'subscribe', topic };
    if (this.lastSeq.has(topic)) msg.since = this.lastSeq.get(topic);
    this._send(msg);
    return p;
  }

  _awaitConfirm(kind, topic) {
    // connect() already re-sent every wanted topic in onopen; wait for that confirmation.
    return this._expect(kind, topic);
  }

  _expect(kind, topic) {
    return new Promise((resolve, reject) => {
      const key = `${kind}:${topic}`;
      const timer = setTimeout(() => {
        const list = this._pending.get(key) ?? [];
        const i = list.findIndex((e) => e.timer === timer);
        if (i >= 0) list.splice(i, 1);
        reject(new Error(`no confirmation of ${kind} ${topic} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      if (!this._pending.has(key)) this._pending.set(key, []);
      this._pending.get(key).push({ resolve, reject, timer });
    });
  }

  _settle(key, value) {
    const list = this._pending.get(key);
    if (!list || !list.length) return;
    this._pending.delete(key);
    for (const e of list) { clearTimeout(e.timer); e.resolve(value); }
  }

  _rejectPending(err) {
    const all = [...this._pending.values()].flat();
    this._pending.clear();
    for (const e of all) { clearTimeout(e.timer); e.reject(err); }
  }

  _send(obj) {
    if (this.connected) this.ws.send(JSON.stringify(obj));
  }

  _onMessage(event) {
    let msg;
    try {
      msg = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
    } catch {
      this._emit('error', { type: 'error', error: 'server sent invalid JSON' });
      return;
    }
    switch (msg.type) {
      case 'pong':
        clearTimeout(this._pongTimer);
        this._pongTimer = null;
        break;
      case 'subscription_confirmed':
        if (msg.recovered === false) {
          // The server no longer holds what we missed (or restarted and its seq began again):
          // accept its numbering from here and tell the application to reload from REST.
          this._emit('gap', { type: 'gap', topic: msg.topic, since: this.lastSeq.get(msg.topic) });
          this.lastSeq.delete(msg.topic);
        }
        this._settle(`subscribe:${msg.topic}`, msg);
        break;
      case 'unsubscribed':
      case 'unsubscription_confirmed':
        this._settle(`unsubscribe:${msg.topic}`, msg);
        break;
      default:
        if (typeof msg.seq === 'number') {
          const topic = frameTopic(msg, this.topics);
          const last = this.lastSeq.get(topic);
          if (last !== undefined && msg.seq <= last) return; // already seen before a reconnect
          this.lastSeq.set(topic, msg.seq);
        }
    }
    this._emit(msg.type, msg);
    this._emit('*', msg);
  }

  _emit(type, msg) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const handler of [...set]) {
      try { handler(msg); } catch (err) {
        // A broken handler must not stop the others or the connection.
        console.error(`ws-client: handler for ${type} threw`, err);
      }
    }
  }
}

async function createSubscribed(url, topic, options) {
  const client = new WebSocketClient(url, options);
  await client.connect();
  await client.subscribe(topic);
  return client;
}

/** A connected client already subscribed to `backtest` (the spec's example). */
export function createBacktestClient(url, options = {}) {
  return createSubscribed(url, 'backtest', options);
}

/** A connected client already subscribed to `trading` (bot status and PnL). */
export function createTradingClient(url, options = {}) {
  return createSubscribed(url, 'trading', options);
}

export default WebSocketClient;
