// railyard's operator dashboard: reads the staff API with the key typed in (kept in this
// tab's sessionStorage only), follows GET /v1/events (server-sent events, read with fetch so
// the key goes in the Authorization header, never in a URL), and performs operator and
// treasury actions with the reason typed in. No framework, nothing loaded from elsewhere.
'use strict';

const COLORS = ['#0969da', '#1a7f37', '#bf8700', '#8250df', '#cf222e', '#1b7c83'];
const $ = (selector) => document.querySelector(selector);
let key = sessionStorage.getItem('railyard-key') || '';
let updates = 0;
let settledSeries = [];
let lastHeld = null;
let lastSettled = null;
let slowLoadedAt = 0;
let streamAbort = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    else if (name === 'style') node.style.cssText = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function showError(message) {
  const box = $('#error');
  box.textContent = message;
  box.hidden = !message;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: 'Bearer ' + key } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new Error((data && (data.detail || data.title)) || response.status + ' ' + response.statusText);
  }
  return data;
}

function reason() {
  const text = $('#reason').value.trim();
  if (!text) throw new Error('type a reason first: every action is journaled with who and why');
  return text;
}

async function act(work) {
  try {
    showError('');
    await work();
    await refresh();
  } catch (error) {
    showError(error.message);
  }
}

// ---- rendering -------------------------------------------------------------------------

function renderRails(rails) {
  const body = $('#rails tbody');
  body.replaceChildren();
  for (const rail of rails) {
    const health = rail.paused ? 'paused' : rail.breaker === 'closed' ? 'up' : rail.breaker === 'half_open' ? 'probing' : 'down';
    const healthClass = rail.paused ? 'health-paused' : rail.breaker === 'closed' ? 'health-up' : 'health-down';
    const actions = el('td', {},
      rail.paused
        ? el('button', { class: 'resume', onclick: () => act(() => api('POST', `/v1/rails/${rail.rail}/resume`, { reason: reason() })) }, 'Resume')
        : el('button', { class: 'pause', onclick: () => act(() => api('POST', `/v1/rails/${rail.rail}/pause`, { reason: reason() })) }, 'Pause'),
      el('button', { class: 'drain-dry', onclick: () => act(() => drain(rail.rail, true)) }, 'Drain (dry run)'),
      el('button', { class: 'drain', onclick: () => act(() => drain(rail.rail, false)) }, 'Drain'));
    body.append(el('tr', { 'data-rail': rail.rail },
      el('td', {}, rail.rail), el('td', {}, rail.network),
      el('td', { class: 'health ' + healthClass }, health), el('td', { class: 'breaker' }, rail.breaker),
      el('td', { class: 'num' }, rail.success_permille), el('td', { class: 'num backlog' }, rail.queued), actions));
  }
}

async function drain(rail, dryRun) {
  const body = dryRun ? { dry_run: true } : { dry_run: false, reason: reason() };
  if (!dryRun && !confirm(`Move every payment queued on ${rail} to other rails?`)) return;
  const report = await api('POST', `/v1/rails/${rail}/drain`, body);
  const out = $('#drain-result');
  const lines = [`${dryRun ? 'Dry run: would move' : 'Moved'} ${report.moves.length} payment(s) off ${rail}` +
    (report.unmovable.length ? `; ${report.unmovable.length} stay (no other rail takes them)` : '')];
  for (const move of report.moves.slice(0, 50)) lines.push(`  ${move.payment}: ${move.from} → ${move.to}`);
  if (report.moves.length > 50) lines.push(`  … and ${report.moves.length - 50} more`);
  out.textContent = lines.join('\n');
  out.dataset.dryRun = String(dryRun);
  out.dataset.rail = rail;
  out.hidden = false;
}

function renderCounts(counts) {
  const box = $('#counts');
  box.replaceChildren(...Object.entries(counts).map(([state, n]) =>
    el('span', { class: 'chip', 'data-state': state }, `${state} ${n}`)));
  if (Object.keys(counts).length === 0) box.append(el('span', { class: 'empty' }, 'no payments yet'));
}

function renderClasses(classes) {
  const box = $('#classes');
  const entries = Object.entries(classes);
  const most = Math.max(1, ...entries.map(([, d]) => d.queued));
  box.replaceChildren(...entries.map(([name, d]) => el('div', { class: 'bar', 'data-class': name },
    el('span', {}, name), el('div', { class: 'fill', style: `width:${(100 * d.queued) / most}%` }), el('span', { class: 'num' }, d.queued))));
  if (entries.length === 0) box.append(el('span', { class: 'empty' }, 'queues are empty'));
}

function units(text) {
  return Number(text);
}

function renderPools(pools) {
  const body = $('#pools tbody');
  body.replaceChildren();
  for (const pool of pools) {
    const [available, reserved, min, target, max] = [pool.available, pool.reserved, pool.min, pool.target, pool.max].map(units);
    // The scale ends a quarter past the largest of the balance and the target (a pool's max is
    // often far above both); max is in the tooltip.
    const scale = 1.25 * Math.max(available + reserved, target, min, Number.MIN_VALUE);
    const pct = (x) => `${Math.min(100, (100 * x) / scale)}%`;
    const gauge = el('div', { class: 'gauge', title: `min ${pool.min} · target ${pool.target} · max ${pool.max}` },
      el('div', { class: 'avail', style: `width:${pct(available)}` }),
      el('div', { class: 'resv', style: `left:${pct(available)};width:${pct(reserved)}` }),
      el('div', { class: 'tick', style: `left:${pct(min)}` }), el('div', { class: 'tick', style: `left:${pct(target)}` }));
    body.append(el('tr', { 'data-pool': `${pool.rail}/${pool.asset}` },
      el('td', {}, `${pool.rail} ${pool.asset}`), el('td', { class: 'num' }, pool.available),
      el('td', { class: 'num' }, pool.reserved), el('td', {}, gauge), el('td', {}, pool.status)));
  }
}

function renderHeld(payments) {
  const body = $('#held tbody');
  body.replaceChildren();
  for (const p of payments) {
    const post = (action, payload) => () => act(() => api('POST', `/v1/payments/${p.id}/${action}`, payload()));
    const actions = el('td', {});
    if (p.guard) {
      if (p.guard.approvals_needed > p.guard.approvals.length) actions.append(el('button', { class: 'approve', onclick: post('approve', () => ({ reason: reason() })) }, 'Approve'));
      if (p.guard.reasons.some((r) => r.code !== 'large_payout' && r.code !== 'awaiting_test_payout')) actions.append(el('button', { class: 'release', onclick: post('release', () => ({ reason: reason() })) }, 'Release'));
      actions.append(el('button', { class: 'reject', onclick: post('reject', () => ({ reason: reason() })) }, 'Reject'));
    } else if (p.settlement && p.settlement.state !== 'released') {
      actions.append(el('button', { class: 'resolve-resume', onclick: post('resolve', () => ({ resolution: 'resume', reason: reason() })) }, 'Resume watching'));
    } else {
      actions.append(el('button', { class: 'resolve-retry', onclick: post('resolve', () => ({ resolution: 'retry', reason: reason() })) }, 'Retry'),
        el('button', { class: 'resolve-fail', onclick: post('resolve', () => ({ resolution: 'fail', reason: reason() })) }, 'Fail'));
    }
    const who = p.guard ? p.guard.release_by : 'an operator resolves it (retry, fail, or resume if in flight)';
    body.append(el('tr', { 'data-payment': p.id }, el('td', {}, p.id), el('td', {}, p.merchant),
      el('td', { class: 'num' }, `${p.amount} ${p.asset}`), el('td', {}, p.reason || ''), el('td', {}, who), actions));
  }
  if (payments.length === 0) body.append(el('tr', {}, el('td', { colspan: 6, class: 'empty' }, 'nothing is held')));
}

function renderAnomalies(anomalies) {
  const body = $('#anomalies tbody');
  body.replaceChildren(...anomalies.map((a) => el('tr', {}, el('td', {}, a.settlement), el('td', {}, a.difference))));
  if (anomalies.length === 0) body.append(el('tr', {}, el('td', { colspan: 2, class: 'empty' }, 'none open')));
}

function svgLine(svg, series, height) {
  const ns = 'http://www.w3.org/2000/svg';
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return;
  const [t0, t1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  const top = Math.max(1, ...all.map((p) => p[1]));
  series.forEach((s, i) => {
    const points = s.points.map(([t, v]) => `${t1 === t0 ? 400 : (400 * (t - t0)) / (t1 - t0)},${height - 4 - ((height - 8) * v) / top}`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', points.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', COLORS[i % COLORS.length]);
    line.setAttribute('stroke-width', '2');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
    if (points.length === 1) {
      const [x, y] = points[0].split(',');
      const dot = document.createElementNS(ns, 'circle');
      dot.setAttribute('cx', x);
      dot.setAttribute('cy', y);
      dot.setAttribute('r', '3');
      dot.setAttribute('fill', COLORS[i % COLORS.length]);
      svg.append(dot);
    }
  });
}

function legend(box, names) {
  box.replaceChildren(...names.map((name, i) => el('span', {}, el('i', { style: `background:${COLORS[i % COLORS.length]}` }), name)));
}

function renderSettledChart(stats) {
  const ns = 'http://www.w3.org/2000/svg';
  const perRail = {};
  for (const s of stats.settled) perRail[s.rail] = (perRail[s.rail] || 0) + s.count;
  const entries = Object.entries(perRail);
  const svg = $('#chart-settled');
  svg.replaceChildren();
  const most = Math.max(1, ...entries.map(([, n]) => n));
  const width = 400 / Math.max(1, entries.length);
  entries.forEach(([rail, n], i) => {
    const bar = document.createElementNS(ns, 'rect');
    const h = (112 * n) / most;
    bar.setAttribute('x', String(i * width + 6));
    bar.setAttribute('y', String(116 - h));
    bar.setAttribute('width', String(width - 12));
    bar.setAttribute('height', String(h));
    bar.setAttribute('fill', COLORS[i % COLORS.length]);
    bar.setAttribute('data-rail', rail);
    bar.setAttribute('data-count', String(n));
    svg.append(bar);
  });
  legend($('#chart-settled-legend'), entries.map(([rail, n]) => `${rail}: ${n}`));
  const p = stats.time_to_final;
  $('#stats').replaceChildren(
    el('span', { class: 'chip' }, `accepted ${stats.accepted}`),
    el('span', { class: 'chip' }, `time to final p50 ${p.p50_ms ?? '–'} ms, p99 ${p.p99_ms ?? '–'} ms`),
    el('span', { class: 'chip' }, `rollbacks ${stats.rollback_permille}‰`),
    el('span', { class: 'chip' }, `reissues ${stats.reissue_permille}‰`),
    el('span', { class: 'chip' }, `holds ${stats.hold_permille}‰`),
    ...stats.fees.map((f) => el('span', { class: 'chip' }, `fee/payout ${f.rail}: ${f.per_payout} ${f.fee_asset}`)));
}

// What each part was last drawn from: a part is redrawn only when its data changed, so a
// button is not replaced under the pointer twice a second.
const drawn = {};
function draw(part, data, render) {
  const text = JSON.stringify(data);
  if (drawn[part] === text) return;
  drawn[part] = text;
  render(data);
}

function renderOverview(o) {
  draw('rails', o.rails, renderRails);
  draw('counts', o.counts, renderCounts);
  draw('classes', o.queues.classes, renderClasses);
  draw('pools', o.pools, renderPools);
  $('#as-of').textContent = 'as of ' + new Date(o.as_of).toLocaleTimeString() + ` · journal ${o.tip}`;
  settledSeries.push([o.as_of, o.counts.settled || 0]);
  if (settledSeries.length > 600) settledSeries.shift();
  svgLine($('#chart-throughput'), [{ points: settledSeries }], 80);
  const settled = o.counts.settled || 0;
  if (settled !== lastSettled && Date.now() - slowLoadedAt > 2000) {
    lastSettled = settled;
    loadSlow().catch((error) => showError(error.message));
  }
  if (o.held !== lastHeld) {
    lastHeld = o.held;
    loadHeld();
  }
}

// ---- loading ---------------------------------------------------------------------------

async function loadHeld() {
  try {
    renderHeld((await api('GET', '/v1/held?limit=200')).payments);
  } catch (error) {
    showError(error.message);
  }
}

async function loadSlow() {
  slowLoadedAt = Date.now();
  const [stats, anomalies, history] = await Promise.all([
    api('GET', `/v1/stats?since=${Date.now() - 3600_000}`),
    api('GET', '/v1/anomalies'),
    api('GET', '/v1/pools/history'),
  ]);
  renderSettledChart(stats);
  renderAnomalies(anomalies);
  const series = history.map((s) => ({ name: `${s.rail} ${s.asset}`, points: s.samples.map((x) => [x.at, units(x.available)]) }));
  svgLine($('#chart-pools'), series, 120);
  legend($('#chart-pools-legend'), series.map((s) => s.name));
}

async function refresh() {
  renderOverview(await api('GET', '/v1/overview'));
  await loadHeld();
}

async function follow() {
  const status = $('#status');
  while (key) {
    streamAbort = new AbortController();
    try {
      const response = await fetch('/v1/events', { headers: { Authorization: 'Bearer ' + key }, signal: streamAbort.signal });
      if (!response.ok) throw new Error('the event stream answered ' + response.status);
      status.textContent = 'live';
      status.className = 'status live';
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (block.includes('event: overview') && data) {
            renderOverview(JSON.parse(data));
            updates += 1;
            const counter = $('#updates');
            counter.dataset.count = String(updates);
            counter.textContent = `${updates} updates`;
          }
        }
      }
    } catch (error) {
      if (error.name === 'AbortError') return;
      showError(error.message);
    }
    status.textContent = 'reconnecting';
    status.className = 'status off';
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function connect() {
  if (streamAbort) streamAbort.abort();
  try {
    await refresh();
    await loadSlow();
    showError('');
  } catch (error) {
    showError(error.message);
    return;
  }
  follow();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#key').value = key;
  $('#key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    key = $('#key').value.trim();
    sessionStorage.setItem('railyard-key', key);
    connect();
  });
  setInterval(() => { if (key) loadSlow().catch((error) => showError(error.message)); }, 10_000);
  if (key) connect();
});
