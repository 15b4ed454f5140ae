// Result rendering for the dashboard: DOM helpers, metrics/analytics tables, charts placement.
import { equityChart, monteCarloChart } from './charts.js';

const MAX_TRADE_ROWS = 500;
const MAX_SECTION_ROWS = 200;

/** Build a DOM element: h('td', {class: 'x'}, 'text', child, ...). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  node.append(...children.filter((c) => c !== undefined && c !== null));
  return node;
}

const ISO_TIME = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?Z?$/;

export function fmt(v, digits = 2) {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'string') {
    const m = ISO_TIME.exec(v); // 2022-01-04T01:00:00.000Z reads as 2022-01-04 01:00 (UTC)
    return m ? `${m[1]} ${m[2]}` : v;
  }
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return '–';
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return v.toLocaleString('en-US', { maximumFractionDigits: Math.abs(v) < 1 ? 4 : digits, minimumFractionDigits: Math.abs(v) < 1 ? 0 : digits });
  }
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export const signed = (v) => h('span', { class: v > 0 ? 'pos' : v < 0 ? 'neg' : '' }, (v > 0 ? '+' : '') + fmt(v));

export function renderResults(full, results) {
  const head = { ...(full.metrics ?? {}) };
  const out = [
    h('p', {}, h('a', { href: `/api/backtests/${encodeURIComponent(full.backtest_id)}/report`, target: '_blank' }, 'Open the HTML report')),
    h('h3', {}, 'Metrics'),
    kvColumns({ ...head, ...scalarsOf(results.metrics ?? {}) }, 3),
  ];
  if (results.equity?.equity?.length) out.push(h('h3', {}, 'Equity and drawdown'), equityChart(results.equity));
  if (results.regime_analytics) out.push(h('h3', {}, 'Regime analytics'), folded(results.regime_analytics, true));
  if (results.verdict) out.push(h('h3', {}, 'Verdict'), renderVerdict(results.verdict));
  if (results.walk_forward) {
    const { windows, ...rest } = results.walk_forward;
    out.push(h('h3', {}, 'Walk-forward windows'), renderValue(windows ?? []), folded(rest, false));
  }
  if (results.monte_carlo) out.push(h('h3', {}, 'Monte Carlo distribution'), monteCarloChart(results.monte_carlo), folded(results.monte_carlo, false));
  if (results.pbo !== undefined && results.pbo !== null) {
    const pbo = typeof results.pbo === 'object' ? results.pbo.pbo : results.pbo;
    out.push(h('h3', {}, 'Probability of backtest overfitting'), h('p', {}, h('strong', {}, `PBO ${fmt(pbo)}`)), folded(results.pbo, false));
  }
  const trades = results.trades ?? [];
  out.push(h('h3', {}, `Trades (${trades.length})`));
  if (trades.length) {
    const cols = ['entry_time', 'exit_time', 'side', 'size', 'entry_price', 'exit_price', 'pnl', 'return_pct', 'exit_reason'];
    out.push(h('div', { class: 'scroll' }, table(trades.slice(0, MAX_TRADE_ROWS), cols)));
    if (trades.length > MAX_TRADE_ROWS) out.push(h('p', { class: 'doc' }, `First ${MAX_TRADE_ROWS} of ${trades.length}; the HTML report has all.`));
  }
  return out;
}

/** A result section behind a disclosure triangle (open or closed). */
function folded(value, open) {
  return h('details', { open }, h('summary', {}, open ? 'Details' : 'All figures'), renderValue(value));
}

function renderVerdict(v) {
  if (typeof v === 'string') return h('div', { class: 'verdict' }, v);
  return h('div', { class: 'verdict' }, h('strong', {}, String(v.verdict ?? '')),
    h('ul', {}, ...(v.reasons ?? []).map((r) => h('li', {}, String(r)))));
}

const scalarsOf = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v === null || typeof v !== 'object'));
const PREFERRED = ['return_pct', 'sharpe_ratio', 'total_trades', 'win_rate', 'drawdown'];

/** Flatten one level of nesting for table rows; big nested dicts keep only the key metrics. */
function flatRow(row) {
  const out = {};
  for (const [k, v] of Object.entries(row)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const keys = Object.keys(v).length > 6 ? PREFERRED.filter((p) => p in v) : Object.keys(v);
      for (const sub of keys) out[`${k}.${sub}`] = v[sub];
    } else out[k] = v;
  }
  return out;
}

function table(rows, columns) {
  const flat = rows.map(flatRow);
  const cols = columns ?? [...new Set(flat.flatMap((r) => Object.keys(r)))];
  return h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ...cols.map((c) => h('th', {}, c)))),
    h('tbody', {}, ...flat.map((r) => h('tr', {}, ...cols.map((c) => h('td', { class: typeof r[c] === 'string' ? 't' : undefined },
      cellValue(c, r[c])))))));
}

/** Prices keep their pips (1.08777, not 1.09); PnL and returns are signed and coloured. */
function cellValue(col, v) {
  if (typeof v !== 'number') return fmt(v);
  if (/price/.test(col)) return v.toLocaleString('en-US', { maximumSignificantDigits: 6 });
  return /pnl|return/.test(col) ? signed(v) : fmt(v);
}

function kvTable(obj) {
  return h('table', { class: 'grid kv' }, h('tbody', {}, ...Object.entries(obj).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, fmt(v))))));
}

/** A long name/value list as `n` side-by-side tables. */
function kvColumns(obj, n) {
  const entries = Object.entries(obj);
  const per = Math.ceil(entries.length / n) || 1;
  const parts = [];
  for (let i = 0; i < entries.length; i += per) parts.push(kvTable(Object.fromEntries(entries.slice(i, i + per))));
  return h('div', { class: 'kv-cols' }, ...parts);
}

/** Any JSON result section: scalars as a name/value table, records as tables, nesting as headings. */
export function renderValue(value) {
  if (Array.isArray(value)) {
    if (value.length && value.every((v) => v && typeof v === 'object')) {
      const note = value.length > MAX_SECTION_ROWS ? h('p', { class: 'doc' }, `First ${MAX_SECTION_ROWS} of ${value.length} rows.`) : null;
      return h('div', {}, h('div', { class: 'scroll' }, table(value.slice(0, MAX_SECTION_ROWS))), note);
    }
    return h('p', {}, value.map((v) => fmt(v)).join(', '));
  }
  if (!value || typeof value !== 'object') return h('p', {}, fmt(value));
  const box = h('div', { class: 'section' });
  const scalars = scalarsOf(value);
  if (Object.keys(scalars).length) box.append(kvTable(scalars));
  const nested = Object.entries(value).filter(([, v]) => v && typeof v === 'object');
  // Sibling records with the same fields read best as one table (e.g. percentiles per measure).
  const flatRecs = nested.filter(([, v]) => !Array.isArray(v) && Object.values(v).every((x) => x === null || typeof x !== 'object'));
  const sameKeys = (a, b) => Object.keys(a).join() === Object.keys(b).join();
  const grid = flatRecs.filter(([, v]) => flatRecs.filter(([, w]) => sameKeys(v, w)).length >= 2);
  if (grid.length >= 2) box.append(table(grid.map(([k, v]) => ({ '': k, ...v }))));
  for (const [k, v] of nested) {
    if (grid.length >= 2 && grid.some(([g]) => g === k)) continue;
    box.append(h('h4', {}, k.replaceAll('_', ' ')), renderValue(v));
  }
  return box;
}
