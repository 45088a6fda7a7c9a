// The hotel dashboard: renders the sampler's `tick` events (server-sent, once a second)
// and sends the buttons' commands to the control API that the CLI uses. Everything is
// written with textContent, so nothing from the cluster is ever parsed as markup.
'use strict';

const HISTORY_MS = 300000;
const COLORS = { customer: '#4263eb', room: '#f08c00', booking: '#2f9e44' };
const LIVE = ['starting', 'running', 'paused', 'stopping'];
const history = []; // points, oldest first
let lastSeq = 0;
let lastPointAt = 0;
let jaeger = null;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function fmt(v, digits, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '-';
  return v.toFixed(digits) + (unit || '');
}

function pct(v) {
  return v === null || v === undefined ? '-' : (v * 100).toFixed(1) + ' %';
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

// ---- control calls ------------------------------------------------------------------

function toast(text, kind) {
  const t = $('#toast');
  t.textContent = text;
  t.className = kind;
}

async function control(method, path, body, what) {
  toast(what + '…', '');
  const headers = { 'x-hotel-dashboard': '1' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  try {
    const res = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) {
      let detail = text;
      try { detail = JSON.parse(text).detail || text; } catch (_) { /* not JSON */ }
      toast(what + ': ' + detail, 'error');
      return;
    }
    toast(what + ': done', 'ok');
  } catch (e) {
    toast(what + ': ' + e, 'error');
  }
}

function instanceAction(name, action) {
  const enc = encodeURIComponent(name);
  if (action === 'clear') {
    control('DELETE', `/v1/instances/${enc}/fault`, undefined, `clear fault of ${name}`);
  } else {
    control('POST', `/v1/instances/${enc}/${action}`, undefined, `${action} ${name}`);
  }
}

function faultSpec(form) {
  const f = new FormData(form);
  const spec = {};
  const num = (k) => { const v = String(f.get(k) || '').trim(); return v === '' ? null : Number(v); };
  const text = (k) => String(f.get(k) || '').trim();
  if (num('error_rate')) spec.error_rate = num('error_rate');
  if (num('status') !== null) spec.status = num('status');
  if (text('latency')) spec.latency = text('latency');
  if (text('jitter')) spec.jitter = text('jitter');
  if (num('abort_rate')) spec.abort_rate = num('abort_rate');
  if (text('for')) spec.for = text('for');
  return spec;
}

function wireControls() {
  $('#instances tbody').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (b && !b.disabled) instanceAction(b.dataset.name, b.dataset.action);
  });
  const service = () => $('#service-form select[name=service]').value;
  $('#start').addEventListener('click', () =>
    control('POST', `/v1/services/${service()}/start`, undefined, `start ${service()}`));
  $('#scale').addEventListener('click', () => {
    const n = Number($('#service-form input[name=replicas]').value);
    // As `hotel scale SERVICE=0` needs --force: stopping every instance is asked first.
    const force = n === 0 && window.confirm(`Stop every ${service()} instance?`);
    if (n === 0 && !force) return;
    control('POST', `/v1/services/${service()}/scale`, { replicas: n, force },
      `scale ${service()} to ${n}`);
  });
  $('#service-form').addEventListener('submit', (e) => e.preventDefault());
  $('#fault-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('#fault-form select[name=instance]').value;
    control('PUT', `/v1/instances/${encodeURIComponent(name)}/fault`, faultSpec(e.target),
      `fault ${name}`);
  });
  $('#clear-fault').addEventListener('click', () =>
    instanceAction($('#fault-form select[name=instance]').value, 'clear'));
}

// ---- instances ----------------------------------------------------------------------

const ACTIONS = ['pause', 'resume', 'stop', 'kill', 'clear'];

function row(name) {
  let tr = document.querySelector(`#instances tr[data-instance="${CSS.escape(name)}"]`);
  if (tr) return tr;
  tr = el('tr', { 'data-instance': name });
  for (const c of ['name', 'pid num', 'state', 'breaker', 'inflight num', 'ewma num',
    'rps num', 'errors num', 'fault', 'actions']) {
    tr.append(el('td', { class: c }));
  }
  const actions = tr.querySelector('td.actions');
  for (const a of ACTIONS) {
    actions.append(el('button', { type: 'button', 'data-action': a, 'data-name': name }, a));
  }
  $('#instances tbody').append(tr);
  return tr;
}

function renderInstances(instances) {
  const seen = new Set();
  for (const i of instances) {
    seen.add(i.name);
    const tr = row(i.name);
    const g = i.gateway || {};
    const live = LIVE.includes(i.state);
    const cell = (c, text, cls) => {
      const td = tr.querySelector('td.' + c);
      td.textContent = text;
      if (cls !== undefined) td.className = c + ' ' + cls;
    };
    cell('name', i.name);
    cell('pid', i.pid);
    cell('state', i.state, 'state s-' + i.state);
    cell('breaker', g.breaker || '-', 'breaker b-' + (g.breaker || 'none'));
    cell('inflight', g.in_flight ?? '-');
    cell('ewma', g.ewma_ms ? fmt(g.ewma_ms, 1, ' ms') : '-');
    cell('rps', fmt(i.rps, 1));
    cell('errors', pct(i.error_rate));
    cell('fault', i.fault ? i.fault.summary : '');
    tr.classList.toggle('dead', !live);
    const canFault = live && i.service !== 'gateway';
    for (const b of tr.querySelectorAll('button[data-action]')) {
      const a = b.dataset.action;
      b.disabled = !live
        || (a === 'pause' && i.state !== 'running')
        || (a === 'resume' && i.state !== 'paused')
        || (a === 'clear' && !(canFault && i.fault));
    }
  }
  for (const tr of document.querySelectorAll('#instances tr[data-instance]')) {
    if (!seen.has(tr.dataset.instance)) tr.remove();
  }
  // The fault form lists the instances that take faults, keeping the choice.
  const select = $('#fault-form select[name=instance]');
  const names = instances.filter((i) => LIVE.includes(i.state) && i.service !== 'gateway')
    .map((i) => i.name);
  if (names.join() !== Array.from(select.options, (o) => o.value).join()) {
    const keep = select.value;
    select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    if (names.includes(keep)) select.value = keep;
  }
}

// ---- booking's view of room and customer --------------------------------------------

function renderBookingView(views, instances) {
  const state = new Map(instances.map((i) => [i.name, i.state]));
  const rows = [];
  for (const v of views || []) {
    if (!v.reachable || v.upstreams.length === 0) {
      const s = state.get(v.instance);
      const why = v.reachable ? 'no calls to room or customer yet'
        : s === 'running' ? '/metrics not answering' : `not asked (${s})`;
      const tr = el('tr', { 'data-from': v.instance });
      tr.append(el('td', {}, v.instance), el('td', { class: 'empty', colspan: '6' }, why));
      rows.push(tr);
      continue;
    }
    for (const u of v.upstreams) {
      const tr = el('tr', { 'data-from': v.instance, 'data-upstream': u.instance });
      const breaker = u.breaker || '-';
      tr.append(
        el('td', { class: 'from' }, v.instance),
        el('td', { class: 'upstream' }, u.instance),
        el('td', { class: 'service' }, u.service),
        el('td', { class: 'breaker b-' + (u.breaker || 'none') }, breaker),
        el('td', { class: 'rps num' }, fmt(u.rps, 1)),
        el('td', { class: 'errors num' }, pct(u.error_rate)),
        el('td', { class: 'ejections num' }, u.ejections),
      );
      rows.push(tr);
    }
  }
  if (rows.length === 0) {
    const tr = el('tr');
    tr.append(el('td', { class: 'empty', colspan: '7' }, 'no booking instance'));
    rows.push(tr);
  }
  $('#booking-view tbody').replaceChildren(...rows);
}

// ---- feed and recent requests -------------------------------------------------------

function renderFeed(entries) {
  const list = $('#feed');
  for (const f of entries) {
    if (f.seq <= lastSeq) continue;
    lastSeq = f.seq;
    const li = el('li', { class: f.level, 'data-kind': f.kind });
    li.append(el('time', {}, clock(f.at_unix_ms)));
    // Breaker and ejection entries a booking instance saw are marked as its view.
    if (f.view) {
      li.dataset.view = f.view;
      li.append(el('span', { class: 'view' }, "booking's view"));
    }
    li.append(document.createTextNode(f.text));
    list.prepend(li);
  }
  while (list.children.length > 200) list.lastChild.remove();
}

function traceCell(r) {
  const td = el('td');
  if (jaeger && /^[0-9a-f]{32}$/.test(r.trace_id)) {
    td.append(el('a', {
      href: `${jaeger}/trace/${r.trace_id}`, target: '_blank', rel: 'noopener noreferrer',
    }, 'trace'));
  }
  return td;
}

function renderRequests(id, list) {
  const body = $(`#${id} tbody`);
  if (!list || list.length === 0) {
    body.replaceChildren(el('tr', {}, null));
    body.firstChild.append(el('td', { class: 'empty' }, 'none'));
    return;
  }
  body.replaceChildren(...list.map((r) => {
    const tr = el('tr');
    tr.append(
      el('td', {}, clock(r.at_unix_ms)),
      el('td', {}, r.method),
      el('td', { class: 'path', title: r.path }, r.path),
      el('td', { class: 'num' }, r.status),
      el('td', { class: 'num' }, fmt(r.duration_ms, 1, ' ms')),
      traceCell(r),
    );
    return tr;
  }));
}

// ---- charts -------------------------------------------------------------------------

function chart(canvas, series, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = Date.now();
  const span = chartSpan();
  const left = 44;
  const bottom = h - 16;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) if (v !== null) max = Math.max(max, v);
  max = max > 0 ? max * 1.15 : 1;
  ctx.strokeStyle = '#e3e6eb';
  ctx.fillStyle = '#6b7280';
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = bottom - (bottom - 6) * i / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
    const v = max * i / 4;
    ctx.fillText(unit === '%' ? (v * 100).toFixed(0) + '%' : v.toFixed(v < 10 ? 1 : 0), 2, y + 4);
  }
  ctx.fillText(span >= 120000 ? `-${Math.round(span / 60000)} min` : `-${Math.round(span / 1000)} s`,
    left, h - 2);
  ctx.fillText('now', w - 22, h - 2);
  const x = (t) => left + (w - left) * (1 - (now - t) / span);
  const y = (v) => bottom - (bottom - 6) * v / max;
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.6;
    ctx.setLineDash(s.dashed ? [4, 3] : []);
    ctx.beginPath();
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null) { pen = false; continue; }
      if (pen) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v));
      pen = true;
    }
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

// The time the charts span: the history there is, at least a minute, at most five.
function chartSpan() {
  const oldest = history.length ? history[0].at_unix_ms : Date.now();
  return Math.min(HISTORY_MS, Math.max(60000, Date.now() - oldest));
}

function renderCharts() {
  const services = [...new Set(history.map((p) => p.service))].sort();
  const series = (key, dashed) => services.map((s) => ({
    color: COLORS[s] || '#555',
    dashed,
    points: history.filter((p) => p.service === s).map((p) => [p.at_unix_ms, p[key]]),
  }));
  chart($('#chart-rps'), series('rps'), '');
  chart($('#chart-errors'), series('error_rate'), '%');
  chart($('#chart-latency'), [...series('p99_ms', false), ...series('p50_ms', true)], 'ms');
  const legend = $('#legend');
  if (legend.childElementCount !== services.length) {
    legend.replaceChildren(...services.map((s) => el('span', { class: s }, '\u25A0 ' + s)));
  }
}

// ---- the event stream ---------------------------------------------------------------

function apply(msg) {
  const snap = msg.snapshot;
  jaeger = snap.jaeger_url;
  for (const p of msg.points) {
    if (p.at_unix_ms > lastPointAt) history.push(p);
  }
  if (msg.points.length) lastPointAt = Math.max(lastPointAt, ...msg.points.map((p) => p.at_unix_ms));
  const oldest = Date.now() - HISTORY_MS;
  while (history.length && history[0].at_unix_ms < oldest) history.shift();
  renderInstances(snap.instances);
  renderBookingView(snap.booking, snap.instances);
  renderFeed(msg.feed);
  renderRequests('slowest', snap.recent && snap.recent.slowest);
  renderRequests('failed', snap.recent && snap.recent.failed);
  renderCharts();
  $('#updated').textContent = snap.at_unix_ms ? 'updated ' + clock(snap.at_unix_ms) : '';
  $('#gateway-state').textContent = snap.gateway_reachable ? '' : 'gateway admin API not answering';
  document.body.dataset.updated = String(snap.at_unix_ms);
}

function connect() {
  const conn = $('#conn');
  const events = new EventSource('/dashboard/events');
  events.addEventListener('tick', (e) => apply(JSON.parse(e.data)));
  events.addEventListener('open', () => { conn.textContent = 'live'; conn.className = 'conn on'; });
  events.addEventListener('error', () => { conn.textContent = 'reconnecting'; conn.className = 'conn off'; });
}

wireControls();
connect();
