// QuantMindX dashboard: plain ES module, no build step. REST for state, WebSocket for live events.
import { WebSocketClient } from './ws-client.js';
import { h, fmt, signed, renderResults } from './render.js';

const $ = (sel) => document.querySelector(sel);
const TIMEFRAMES = ['M1', 'M5', 'M15', 'M30', 'H1', 'H4', 'D1'];
const MAX_LOG_LINES = 500;

const state = {
  runs: new Map(), // id -> {id, symbol, timeframe, variant, status, progress, trades, pnl, error}
  bots: new Map(), // id -> trading_update data
  strategies: [],
  datasets: [], // {symbol, timeframes, synthetic, start, end}
  selected: null,
};

async function api(path, options = {}) {
  const init = { ...options, headers: { 'Content-Type': 'application/json' } };
  if (options.body !== undefined) init.body = JSON.stringify(options.body);
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const errors = data?.errors ? Object.entries(data.errors).map(([k, v]) => `${k}: ${v}`).join('; ') : '';
    const err = new Error(errors || data?.error || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// ---------------------------------------------------------------- form: data, strategies, params

/** Accept the shapes GET /api/data may use and return [{symbol, timeframes, synthetic, ...}]. */
function normalizeData(json) {
  const list = Array.isArray(json) ? json : json?.symbols ?? json?.data ?? json?.datasets ?? [];
  const bySymbol = new Map();
  for (const item of list) {
    const entry = typeof item === 'string' ? { symbol: item } : item;
    const sym = entry.symbol ?? entry.name;
    if (!sym) continue;
    const prev = bySymbol.get(sym) ?? { symbol: sym, timeframes: new Set(), synthetic: false, start: entry.start, end: entry.end };
    for (const tf of entry.timeframes ?? (entry.timeframe ? [entry.timeframe] : [])) prev.timeframes.add(typeof tf === 'string' ? tf : tf.timeframe);
    prev.synthetic ||= !!entry.synthetic || sym === 'SYNTH';
    prev.start ??= entry.start;
    prev.end ??= entry.end;
    bySymbol.set(sym, prev);
  }
  if (!bySymbol.has('SYNTH')) bySymbol.set('SYNTH', { symbol: 'SYNTH', timeframes: new Set(TIMEFRAMES), synthetic: true });
  return [...bySymbol.values()].sort((a, b) => (a.synthetic - b.synthetic) || a.symbol.localeCompare(b.symbol));
}

/** True when `symbol` is generated data (SYNTH, or a data set the daemon marks synthetic). */
function isSynthetic(symbol) {
  return symbol === 'SYNTH' || !!state.datasets.find((d) => d.symbol === symbol)?.synthetic;
}

const synthTag = (symbol) => (isSynthetic(symbol) ? h('span', { class: 'tag-synth', title: 'generated prices, not market data' }, 'SYNTHETIC') : null);

function fillSymbols() {
  const sel = $('#f-symbol');
  sel.replaceChildren(...state.datasets.map((d) => h('option', { value: d.symbol }, d.synthetic ? `${d.symbol} — SYNTHETIC data` : d.symbol)));
  onSymbolChange();
}

function onSymbolChange() {
  const d = state.datasets.find((x) => x.symbol === $('#f-symbol').value);
  $('#synthetic-note').hidden = !d?.synthetic;
  const tfs = d && d.timeframes.size ? TIMEFRAMES.filter((t) => d.timeframes.has(t)) : TIMEFRAMES;
  const keep = $('#f-timeframe').value;
  $('#f-timeframe').replaceChildren(...tfs.map((t) => h('option', { value: t, selected: t === (tfs.includes(keep) ? keep : tfs.includes('H1') ? 'H1' : tfs[0]) }, t)));
}

function fillStrategies() {
  const opts = () => state.strategies.map((s) => h('option', { value: s.name }, s.name));
  $('#f-strategy').replaceChildren(...opts());
  $('#b-strategy').replaceChildren(...opts());
  renderParams();
}

function renderParams() {
  const s = state.strategies.find((x) => x.name === $('#f-strategy').value);
  $('#strategy-doc').textContent = s?.doc?.split('\n')[0] ?? '';
  const fields = (s?.params ?? []).map((p) => {
    let input;
    if (p.choices) {
      input = h('select', { 'data-param': p.name, 'data-type': p.type }, ...p.choices.map((c) => h('option', { value: c, selected: c === p.default }, String(c))));
    } else if (p.type === 'bool') {
      input = h('input', { type: 'checkbox', 'data-param': p.name, 'data-type': 'bool', checked: !!p.default });
    } else {
      const numeric = p.type === 'int' || p.type === 'float';
      input = h('input', {
        type: numeric ? 'number' : 'text', 'data-param': p.name, 'data-type': p.type,
        value: p.default ?? '', min: p.min, max: p.max, step: p.type === 'int' ? 1 : 'any', placeholder: p.optional ? 'none' : undefined,
      });
    }
    return h('label', { title: p.doc ?? '' }, `${p.name} `, input);
  });
  $('#f-params').replaceChildren(h('legend', {}, 'Parameters'), ...(fields.length ? fields : [h('p', { class: 'doc' }, 'No parameters.')]));
}

function readParams() {
  const params = {};
  for (const input of document.querySelectorAll('#f-params [data-param]')) {
    const { param, type } = input.dataset;
    if (type === 'bool') params[param] = input.checked;
    else if (input.value === '') continue; // keep the strategy's default
    else if (type === 'int') params[param] = parseInt(input.value, 10);
    else if (type === 'float') params[param] = parseFloat(input.value);
    else params[param] = input.value;
  }
  return params;
}

async function submitBacktest(event) {
  event.preventDefault();
  const f = event.target.elements;
  const body = {
    symbol: f.symbol.value, timeframe: f.timeframe.value, variant: f.variant.value,
    strategy: $('#f-strategy').value, params: readParams(),
    initial_balance: parseFloat(f.initial_balance.value), size: parseFloat(f.size.value),
  };
  if (f.start_date.value) body.start_date = f.start_date.value;
  if (f.end_date.value) body.end_date = f.end_date.value;
  $('#bt-error').textContent = '';
  $('#bt-submit').disabled = true;
  try {
    const { backtest_id: id, status } = await api('/api/backtests', { method: 'POST', body });
    upsertRun(id, { symbol: body.symbol, timeframe: body.timeframe, variant: body.variant, status, progress: 0 });
    select(id);
  } catch (err) {
    $('#bt-error').textContent = err.message;
  } finally {
    $('#bt-submit').disabled = false;
  }
}

// ---------------------------------------------------------------- runs

function upsertRun(id, patch) {
  const run = state.runs.get(id) ?? { id, status: 'queued', progress: 0, trades: 0, pnl: 0 };
  Object.assign(run, patch);
  state.runs.set(id, run);
  renderRun(run);
  if (state.selected === id) renderDetailHeader(run);
  return run;
}

function renderRun(run) {
  const tbody = $('#runs-table tbody');
  let tr = tbody.querySelector(`tr[data-id="${CSS.escape(run.id)}"]`);
  const pct = Math.max(0, Math.min(100, Number(run.progress) || 0));
  const cells = [
    h('td', { class: 'mono' }, run.id.slice(0, 8)),
    h('td', { class: 't' }, `${run.symbol ?? '?'} ${run.timeframe ?? ''}`, synthTag(run.symbol)),
    h('td', { class: 't' }, run.variant ?? ''),
    h('td', { class: `status s-${run.status}` }, run.status),
    h('td', { class: 'prog' }, h('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': pct.toFixed(1) },
      h('div', { class: 'fill', style: `width:${pct}%` })), h('span', { class: 'pct' }, `${pct.toFixed(1)}%`)),
    h('td', {}, fmt(run.trades)),
    h('td', {}, signed(run.pnl)),
    h('td', {}, run.status === 'queued' || run.status === 'running'
      ? h('button', { type: 'button', class: 'small cancel', title: 'cancel this run', onclick: (e) => { e.stopPropagation(); cancelRun(run.id); } }, 'Cancel')
      : ''),
  ];
  if (!tr) {
    tr = h('tr', { 'data-id': run.id, onclick: () => select(run.id) });
    tbody.prepend(tr);
  }
  tr.classList.toggle('selected', state.selected === run.id);
  tr.replaceChildren(...cells);
}

function onBacktestEvent(msg) {
  const d = msg.data ?? {};
  const id = d.backtest_id;
  if (!id) return;
  switch (msg.type) {
    case 'backtest_start':
      upsertRun(id, { symbol: d.symbol, timeframe: d.timeframe, variant: d.variant, status: 'running' });
      break;
    case 'backtest_progress':
      upsertRun(id, { status: 'running', progress: d.progress, trades: d.trades_count, pnl: d.current_pnl });
      break;
    case 'backtest_complete':
      upsertRun(id, { status: 'completed', progress: 100, trades: d.total_trades, pnl: pnlOf(d.final_balance, d.return_pct) });
      if (state.selected === id) loadDetail(id);
      break;
    case 'backtest_error':
      upsertRun(id, { status: 'failed', error: d.error });
      // The stored status says whether it failed, was cancelled or interrupted.
      api(`/api/backtests/${encodeURIComponent(id)}`).then((r) => upsertRun(id, { status: r.status })).catch(() => {});
      if (state.selected === id) loadDetail(id);
      break;
    default:
  }
}

async function cancelRun(id) {
  try {
    await api(`/api/backtests/${encodeURIComponent(id)}`, { method: 'DELETE' });
    upsertRun(id, { status: 'cancelling' });
  } catch (err) {
    $('#bt-error').textContent = err.message;
  }
}

/** Net PnL from the final balance and the return in percent (the start is final / (1 + r)). */
function pnlOf(finalBalance, returnPct) {
  if (typeof finalBalance !== 'number' || typeof returnPct !== 'number') return 0;
  return finalBalance - finalBalance / (1 + returnPct / 100);
}

async function loadRuns() {
  const json = await api('/api/backtests');
  const list = Array.isArray(json) ? json : json?.backtests ?? [];
  for (const r of list.slice().reverse()) {
    const c = r.config ?? {};
    const m = r.metrics ?? {};
    upsertRun(r.backtest_id, {
      symbol: c.symbol, timeframe: c.timeframe, variant: c.variant, status: r.status,
      progress: r.status === 'completed' ? 100 : r.progress ?? 0,
      trades: m.total_trades ?? 0, pnl: pnlOf(m.final_balance, m.return_pct),
      error: r.error,
    });
  }
}

// ---------------------------------------------------------------- run detail

function select(id) {
  if (state.selected !== id) { // never show another run's results under this run's title
    $('#detail-banner').replaceChildren();
    $('#detail-body').replaceChildren(h('p', { class: 'doc' }, 'Loading…'));
  }
  state.selected = id;
  for (const tr of document.querySelectorAll('#runs-table tbody tr')) tr.classList.toggle('selected', tr.dataset.id === id);
  $('#detail').hidden = false;
  loadDetail(id);
}

function renderDetailHeader(run) {
  $('#detail-title').textContent = `Run ${run.id.slice(0, 8)} · ${run.symbol ?? ''} ${run.timeframe ?? ''} · ${run.variant ?? ''} · ${run.status}`;
}

const FINISHED = new Set(['completed', 'failed', 'cancelled', 'interrupted']);
let detailLoads = 0; // only the newest load of the detail may render (answers can cross)

async function loadDetail(id, attempt = 0) {
  const token = ++detailLoads;
  const run = state.runs.get(id);
  if (run) renderDetailHeader(run);
  const body = $('#detail-body');
  let full;
  try {
    full = await api(`/api/backtests/${encodeURIComponent(id)}`);
  } catch (err) {
    if (token === detailLoads) body.replaceChildren(h('p', { class: 'error' }, err.message));
    return;
  }
  if (state.selected !== id || token !== detailLoads) return;
  const known = state.runs.get(id)?.status;
  if (!FINISHED.has(full.status) && (known === 'completed' || known === 'failed') && attempt < 40) {
    // The stream announced the end a moment before the run store recorded it: ask again shortly.
    setTimeout(() => { if (state.selected === id && token === detailLoads) loadDetail(id, attempt + 1); }, 250);
  }
  const results = full.results ?? {};
  const synthetic = results.data?.synthetic || isSynthetic(full.config?.symbol);
  $('#detail-banner').replaceChildren(...(synthetic ? [h('div', { class: 'synthetic' }, 'SYNTHETIC DATA — generated prices, not market data.')] : []));
  if (full.status === 'failed' || full.status === 'cancelled' || full.status === 'interrupted') {
    body.replaceChildren(h('p', { class: 'error' }, `${full.status}: ${full.error ?? ''}`), h('pre', { class: 'details' }, full.error_details ?? ''));
    return;
  }
  if (full.status !== 'completed') {
    body.replaceChildren(h('p', { class: 'doc' }, `Results appear here when the run completes (${full.status}).`));
    return;
  }
  body.replaceChildren(...renderResults(full, results));
}
// ---------------------------------------------------------------- logs

function onLog(msg) {
  const d = msg.data ?? {};
  const pane = $('#log');
  const line = h('div', { class: `log-line l-${String(d.level).toLowerCase()}` },
    h('span', { class: 'ts' }, String(d.timestamp ?? '').slice(11, 19)), ' ',
    h('span', { class: 'lvl' }, d.level ?? ''), ' ',
    h('span', { class: 'src' }, d.backtest_id ? d.backtest_id.slice(0, 8) : (d.logger_name ?? '')), ' ',
    d.message ?? '');
  pane.append(line);
  while (pane.childElementCount > MAX_LOG_LINES) pane.firstElementChild.remove();
  if ($('#log-follow').checked) pane.scrollTop = pane.scrollHeight;
}

// ---------------------------------------------------------------- bots

function upsertBot(d) {
  const bot = { ...(state.bots.get(d.bot_id) ?? {}), ...d };
  state.bots.set(d.bot_id, bot);
  const tbody = $('#bots-table tbody');
  let tr = tbody.querySelector(`tr[data-bot="${CSS.escape(d.bot_id)}"]`);
  if (!tr) { tr = h('tr', { 'data-bot': d.bot_id }); tbody.append(tr); }
  const live = !['stopped', 'error', 'killed'].includes(bot.status);
  tr.replaceChildren(
    h('td', { class: 'mono', title: bot.bot_id }, bot.name || bot.bot_id.slice(0, 10),
      bot.symbol ? h('span', { class: 'doc' }, h('span', { class: 'market' }, `${bot.symbol} ${bot.timeframe ?? ''}`), ' ', synthTag(bot.symbol)) : null),
    h('td', { class: `status b-${bot.status}` }, bot.status ?? '?', bot.reason ? h('span', { class: 'doc' }, ` (${bot.reason})`) : null),
    h('td', {}, signed(bot.pnl)),
    h('td', {}, fmt(bot.trades)),
    h('td', {}, live ? h('button', { type: 'button', class: 'small', onclick: () => stopBot(bot.bot_id) }, 'Stop') : ''),
  );
}

async function loadBots() {
  try {
    const json = await api('/api/bots');
    const list = Array.isArray(json) ? json : json?.bots ?? [];
    for (const b of list) upsertBot({ ...b, ...(b.state ?? {}) });
    if (json && typeof json.halted === 'boolean') showTradingState(json.halted);
  } catch (err) {
    $('#bot-error').textContent = `bots unavailable: ${err.message}`;
  }
}

async function startBot(event) {
  event.preventDefault();
  const feed = $('#b-feed').value;
  const secs = parseFloat($('#b-interval').value);
  const body = {
    name: $('#b-name').value, symbol: feed === 'synthetic' ? 'SYNTH' : $('#f-symbol').value,
    timeframe: $('#f-timeframe').value, strategy: $('#b-strategy').value,
    feed: feed === 'synthetic' ? { type: 'synthetic', bar_interval: secs } : { type: 'replay', seconds_per_bar: secs },
  };
  $('#bot-error').textContent = '';
  try {
    const reply = await api('/api/bots', { method: 'POST', body });
    if (reply?.bot_id) upsertBot({ bot_id: reply.bot_id, name: body.name, symbol: body.symbol, timeframe: body.timeframe, status: reply.status ?? 'starting', pnl: 0, trades: 0 });
  } catch (err) {
    $('#bot-error').textContent = err.message;
  }
}

async function stopBot(id) {
  try { await api(`/api/bots/${encodeURIComponent(id)}`, { method: 'DELETE' }); } catch (err) { $('#bot-error').textContent = err.message; }
}

async function killSwitch() {
  if (!window.confirm('Kill switch: stop every bot and flatten all positions now?')) return;
  try {
    await api('/api/trading/kill', { method: 'POST', body: {} });
    showTradingState(true);
  } catch (err) { $('#bot-error').textContent = err.message; }
}

async function resumeTrading() {
  try {
    await api('/api/trading/resume', { method: 'POST', body: {} });
    showTradingState(false);
  } catch (err) { $('#bot-error').textContent = err.message; }
}

function showTradingState(killed) {
  $('#trading-state').textContent = killed ? 'Trading is KILLED: new bots are refused until you resume.' : 'Trading is enabled.';
  $('#trading-state').classList.toggle('error', killed);
}

// ---------------------------------------------------------------- wiring

function setConn(text, ok) {
  const c = $('#conn');
  c.textContent = text;
  c.className = `conn ${ok ? 'up' : 'down'}`;
}

async function connectStream() {
  const client = new WebSocketClient(location.origin, { maxReconnectAttempts: 1000, maxDelayMs: 10000 });
  for (const t of ['backtest_start', 'backtest_progress', 'backtest_complete', 'backtest_error']) client.on(t, onBacktestEvent);
  client.on('log_entry', onLog);
  client.on('trading_update', (m) => upsertBot(m.data ?? {}));
  client.on('open', () => setConn('live', true));
  client.on('close', () => setConn('disconnected', false));
  client.on('reconnecting', (e) => setConn(`reconnecting (attempt ${e.attempt})…`, false));
  client.on('gap', () => { loadRuns().catch(() => {}); loadBots(); }); // missed events are gone: reload
  await client.connect();
  await Promise.all(['backtest', 'trading', 'logs'].map((t) => client.subscribe(t)));
  window.qmxClient = client; // handy from the browser console
}

async function main() {
  $('#bt-form').addEventListener('submit', submitBacktest);
  $('#bot-form').addEventListener('submit', startBot);
  $('#f-symbol').addEventListener('change', onSymbolChange);
  $('#f-strategy').addEventListener('change', renderParams);
  $('#kill-switch').addEventListener('click', killSwitch);
  $('#resume').addEventListener('click', resumeTrading);
  const [strategies, data] = await Promise.allSettled([api('/api/strategies'), api('/api/data')]);
  state.strategies = strategies.status === 'fulfilled' ? (strategies.value?.strategies ?? strategies.value ?? []) : [];
  state.datasets = normalizeData(data.status === 'fulfilled' ? data.value : []);
  if (strategies.status === 'rejected') $('#bt-error').textContent = `strategies unavailable: ${strategies.reason.message}`;
  fillSymbols();
  fillStrategies();
  await connectStream().catch((err) => setConn(`offline: ${err.message}`, false));
  await Promise.allSettled([loadRuns(), loadBots()]);
  document.body.dataset.ready = 'true';
}

main();
