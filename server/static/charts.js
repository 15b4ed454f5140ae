// Hand-written SVG charts for the dashboard: no library, nothing fetched from the network.

const NS = 'http://www.w3.org/2000/svg'; // an XML namespace name, not a URL that is ever fetched

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (v, d = 2) => (typeof v === 'number' && Number.isFinite(v)
  ? v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '–');

/** Equity curve on top, drawdown (percent, downwards) beneath; `equity` = {time, equity, drawdown_pct}. */
export function equityChart(equity, { width = 900, height = 380 } = {}) {
  const eq = (equity?.equity ?? []).map(Number);
  const dd = (equity?.drawdown_pct ?? []).map((v) => Math.abs(Number(v) || 0)).slice(0, eq.length);
  const times = equity?.time ?? [];
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart equity-chart', role: 'img', 'aria-label': 'equity and drawdown' });
  if (eq.length < 2) {
    svg.append(el('text', { x: 20, y: 30 }, 'Not enough equity points to draw.'));
    return svg;
  }
  const left = 70, right = width - 10, eqTop = 10, eqBot = Math.round(height * 0.68);
  const ddTop = eqBot + 24, ddBot = height - 22;
  const x = (i) => left + (i * (right - left)) / (eq.length - 1);
  const lo = Math.min(...eq), hi = Math.max(...eq), span = hi - lo || 1;
  const y = (v) => eqBot - ((v - lo) / span) * (eqBot - eqTop);
  const ddMax = Math.max(...dd, 0) || 1;
  const yd = (v) => ddTop + (v / ddMax) * (ddBot - ddTop);
  svg.append(el('line', { x1: left, y1: eqBot, x2: right, y2: eqBot, stroke: '#ccd' }));
  svg.append(el('polyline', {
    class: 'equity', fill: 'none', stroke: '#2b6cb0', 'stroke-width': 1.5,
    points: eq.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
  }));
  const area = [`${left},${ddTop}`, ...dd.map((v, i) => `${x(i).toFixed(1)},${yd(v).toFixed(1)}`), `${x(dd.length - 1).toFixed(1)},${ddTop}`];
  svg.append(el('polygon', { class: 'drawdown', fill: '#e5a4a0', stroke: '#b3261e', 'stroke-width': 0.8, points: area.join(' ') }));
  const label = (tx, ty, s, anchor = 'start') => svg.append(el('text', { x: tx, y: ty, 'font-size': 11, 'text-anchor': anchor }, s));
  label(4, eqTop + 10, fmt(hi));
  label(4, eqBot, fmt(lo));
  label(4, ddTop + 10, '0%');
  label(4, ddBot, `-${fmt(Math.max(...dd, 0))}%`);
  label(left, height - 6, String(times[0] ?? '').slice(0, 10));
  label(right, height - 6, String(times.at(-1) ?? '').slice(0, 10), 'end');
  label(right, eqTop + 10, 'equity', 'end');
  label(right, ddTop + 10, 'drawdown', 'end');
  return svg;
}

/**
 * Monte Carlo distribution as box plots: one row per (method, measure), whiskers p5..p95,
 * box p25..p75, a tick at the median; `mc` as engine/montecarlo.py returns it.
 */
export function monteCarloChart(mc, { width = 900 } = {}) {
  const rows = [];
  for (const method of ['bootstrap', 'shuffle']) {
    for (const [key, name] of [['final_return_pct', 'final return %'], ['max_drawdown_pct', 'max drawdown %']]) {
      const p = mc?.[method]?.[key];
      if (p && typeof p.p50 === 'number') rows.push({ label: `${method} · ${name}`, p });
    }
  }
  const rowH = 34, top = 10, height = top + rows.length * rowH + 24;
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart mc-chart', role: 'img', 'aria-label': 'Monte Carlo distribution' });
  if (!rows.length) {
    svg.append(el('text', { x: 20, y: 24 }, 'No Monte Carlo distribution (no trades).'));
    return svg;
  }
  const vals = rows.flatMap((r) => [r.p.p5, r.p.p95, 0]);
  const lo = Math.min(...vals), hi = Math.max(...vals), span = hi - lo || 1;
  const left = 200, right = width - 20;
  const x = (v) => left + ((v - lo) / span) * (right - left);
  svg.append(el('line', { x1: x(0), y1: top, x2: x(0), y2: height - 20, stroke: '#999', 'stroke-dasharray': '3 3' }));
  rows.forEach((r, i) => {
    const cy = top + i * rowH + rowH / 2;
    svg.append(el('text', { x: 4, y: cy + 4, 'font-size': 12 }, r.label));
    svg.append(el('line', { x1: x(r.p.p5), y1: cy, x2: x(r.p.p95), y2: cy, stroke: '#555' }));
    svg.append(el('rect', { x: x(r.p.p25), y: cy - 9, width: Math.max(1, x(r.p.p75) - x(r.p.p25)), height: 18, fill: '#bcd3ee', stroke: '#2b6cb0' }));
    svg.append(el('line', { x1: x(r.p.p50), y1: cy - 9, x2: x(r.p.p50), y2: cy + 9, stroke: '#1d232b', 'stroke-width': 2 }));
  });
  svg.append(el('text', { x: left, y: height - 6, 'font-size': 11 }, `${fmt(lo)}%`));
  svg.append(el('text', { x: right, y: height - 6, 'font-size': 11, 'text-anchor': 'end' }, `${fmt(hi)}%`));
  svg.append(el('text', { x: (left + right) / 2, y: height - 6, 'font-size': 11, 'text-anchor': 'middle' }, 'whiskers p5–p95, box p25–p75, bar median'));
  return svg;
}
