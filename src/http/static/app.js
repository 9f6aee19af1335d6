// SPDX-License-Identifier: MIT
// smpgw dashboard: one page, four views chosen by the URL's hash:
//   #/                 the fleet: summary and version chart, device table,
//                      images, uploads and updates, recent events
//   #/device/ID        one watch: state, slots, jobs, counters, events, echo
//   #/rollouts         rollouts and the form that creates one
//   #/rollout/ID       one rollout: waves, devices, pause/resume/cancel, report
// Live from /api/v1/events (after /api/v1/events/recent for the history).
// Plain JS, no dependencies, no external resources.
'use strict';

const API = '/api/v1';
const $ = (sel) => document.querySelector(sel);
const state = {
  devices: new Map(), images: [], jobs: new Map(), jobCount: 0,
  view: 'fleet', param: null, device: null, rollout: null, lastEventId: 0,
};
const natural = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' }).compare;
const FINISHED = ['done', 'failed', 'rolled_back', 'lost', 'canceled'];

function token() { return localStorage.getItem('smpgw-token') || ''; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h.Authorization = 'Bearer ' + token();
  return h;
}

async function api(method, path, body, asText) {
  const opts = { method, headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}) };
  if (body !== undefined) opts.body = JSON.stringify(body);
  const rsp = await fetch(API + path, opts);
  const text = await rsp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = asText ? text : { detail: text }; }
  if (!rsp.ok) {
    const err = new Error((data && (data.detail || data.title)) || rsp.statusText);
    err.status = rsp.status;
    throw err;
  }
  return asText ? text : data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function fill(sel, rows) {
  const t = $(sel);
  t.textContent = '';
  for (const r of rows) t.append(r);
}

function kvRows(obj) {
  return Object.entries(obj).map(([k, v]) => el('tr', {}, el('th', { text: k }),
    el('td', {}, v instanceof Node ? v : String(v == null ? '—' : v))));
}

// ---- the device model (docs/rest-api.md, Devices) ----

// The advertising record, decoded by the gateway (null: none heard).
function advertised(d) { return d.advertised || null; }

// What the watch runs and where the gateway learned it ("connection" or
// "advertising"), with its age.
function firmware(d) { return d.firmware && d.firmware.version ? d.firmware : null; }

function battery(d) { return d.battery == null ? null : d.battery; }

// The watch's update state from whichever is fresher: the advertised
// record, or the slots read over a connection (a connected watch does not
// advertise, so its last record can be older than a confirm).
function updateState(d) {
  const a = advertised(d);
  const slots = Array.isArray(d.slots) ? d.slots : [];
  if (slots.length && d.slots_age_s != null && !(a && a.age_s != null && a.age_s < d.slots_age_s)) {
    const act = slots.find((x) => x.active);
    if (slots.some((x) => x.pending)) return 'pending';
    return act && !act.confirmed ? 'unconfirmed' : 'idle';
  }
  return a ? a.update_state : null;
}

function linkOf(d) { return d.link_state || d.state || 'down'; }

function inRange(d) {
  if (d.present != null) return !!d.present;
  return linkOf(d) === 'up' || (d.last_seen && Date.now() - d.last_seen < 60000);
}

function ago(ms) {
  if (!ms) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : new Date(ms).toLocaleString();
}

function age(s) {
  if (s == null) return '';
  return s < 60 ? Math.round(s) + ' s' : s < 3600 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h';
}

function devLabel(id) {
  const d = state.devices.get(id);
  return d && d.name ? d.name : id;
}

function devLink(id) {
  return el('a', { href: '#/device/' + encodeURIComponent(id), class: 'dev-link', text: devLabel(id) });
}

function batteryCell(d) {
  const b = battery(d);
  const a = advertised(d);
  if (b == null) return el('td', { class: 'battery', text: '—' });
  const cls = b < 20 ? 'bat low' : b < 50 ? 'bat mid' : 'bat';
  const gauge = el('span', { class: cls });
  gauge.style.setProperty('--pct', b + '%'); // CSSOM: the page's CSP forbids style attributes
  return el('td', { class: 'battery' }, gauge, ' ' + b + ' %' + (a && a.charging ? ' ⚡' : ''));
}

// ---- jobs: progress with rate and ETA ----

function rateText(r) {
  if (!r) return '';
  return r >= 1024 * 1024 ? (r / 1048576).toFixed(1) + ' MB/s' : (r / 1024).toFixed(1) + ' kB/s';
}

function etaText(s) {
  if (s == null || s < 0) return '';
  s = Math.round(s);
  return 'ETA ' + Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
}

function jobView(job) {
  const running = !FINISHED.includes(job.state);
  const meta = running ? [job.percent != null ? job.percent + ' %' : '', rateText(job.rate), etaText(job.eta_s)]
    .filter(Boolean).join(' · ') : '';
  return el('span', { class: 'job' },
    el('progress', { max: '100', value: String(job.percent || 0), class: 'job-progress' }),
    ' ', el('span', { class: 'badge ' + (job.state || ''), text: (running ? job.phase : job.state) || job.state || '' }),
    meta ? el('small', { class: 'job-meta', text: ' ' + meta }) : null);
}

function jobFromRest(j) {
  const p = j.progress || {};
  return {
    id: j.id, device: j.device, state: j.state, phase: j.phase, image: j.image, mode: j.mode,
    percent: j.state === 'done' ? 100 : (p.percent || 0), rate: p.rate, eta_s: null, started: j.started,
  };
}

// ---- fleet view ----

function renderSummary(devs) {
  const up = devs.filter((d) => linkOf(d) === 'up').length;
  $('#sum-total').textContent = devs.length;
  $('#sum-up').textContent = up;
  $('#sum-down').textContent = devs.length - up;
  $('#sum-range').textContent = devs.filter(inRange).length;
  $('#sum-jobs').textContent = [...state.jobs.values()].filter((j) => !FINISHED.includes(j.state)).length;
  $('#sum-lowbat').textContent = devs.filter((d) => battery(d) != null && battery(d) < 20).length;
  const counts = new Map();
  for (const d of devs) {
    const fw = firmware(d);
    const v = fw ? fw.version : 'unknown';
    counts.set(v, (counts.get(v) || 0) + 1);
  }
  drawVersionChart([...counts.entries()].sort((a, b) => natural(b[0], a[0])));
}

// Horizontal bars, one per version, drawn as inline SVG.
function drawVersionChart(rows) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = $('#version-chart');
  const bar = 22, gap = 6, left = 110, width = 460;
  const max = Math.max(1, ...rows.map((r) => r[1]));
  const colors = ['#3b6fd8', '#1f8a4c', '#b7791f', '#8a3bd8', '#c53030', '#2b8a9a'];
  svg.textContent = '';
  svg.setAttribute('viewBox', `0 0 ${left + width + 50} ${Math.max(1, rows.length) * (bar + gap)}`);
  svg.setAttribute('height', String(Math.max(1, rows.length) * (bar + gap)));
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e);
    return e;
  };
  rows.forEach(([version, n], i) => {
    const y = i * (bar + gap);
    const w = Math.max(2, Math.round(width * n / max));
    const g = mk('rect', { x: left, y, width: w, height: bar, rx: 3, fill: version === 'unknown' ? '#9aa1b1' : colors[i % colors.length], class: 'bar', 'data-version': version, 'data-count': n });
    g.append(document.createElementNS(NS, 'title'));
    g.firstChild.textContent = `${version}: ${n}`;
    mk('text', { x: left - 8, y: y + bar / 2 + 5, 'text-anchor': 'end', class: 'label' }, version);
    mk('text', { x: left + w + 6, y: y + bar / 2 + 5, class: 'count' }, String(n));
  });
}

function renderDevices() {
  const tbody = $('#devices tbody');
  const selected = new Set([...tbody.querySelectorAll('input.sel:checked')].map((c) => c.value));
  const devs = [...state.devices.values()].sort((a, b) => natural(a.name || a.id, b.name || b.id) || natural(a.id, b.id));
  const cluster = devs.some((d) => 'held_by' in d);
  $('#th-held-by').hidden = !cluster;
  const rows = devs.map((d) => {
    const fw = firmware(d);
    const job = state.jobs.get(d.id);
    const link = linkOf(d);
    const cb = el('input', { type: 'checkbox', class: 'sel', value: d.id });
    cb.checked = selected.has(d.id);
    return el('tr', { 'data-id': d.id, class: inRange(d) ? '' : 'away' },
      el('td', {}, cb),
      el('td', {}, el('a', { href: '#/device/' + encodeURIComponent(d.id), class: 'dev-link' }, el('code', { text: d.id }))),
      el('td', { class: 'name', text: d.name || '' }),
      el('td', { text: d.transport || '' }),
      // Several gateways: the one holding the watch (docs/multi-gateway.md).
      el('td', { class: 'held-by', ...(cluster ? {} : { hidden: '' }), text: d.held_by || '—',
        title: d.view ? 'as ' + d.view.gateway + ' saw it ' + age(d.view.age_ms / 1000) + ' ago' : '' }),
      el('td', {}, el('span', { class: 'badge link ' + link, text: link })),
      el('td', { class: 'rssi', text: d.rssi == null ? '—' : d.rssi + ' dBm' }),
      batteryCell(d),
      el('td', { class: 'fw', title: fw ? 'from ' + fw.source + (fw.age_s != null ? ', ' + age(fw.age_s) + ' old' : '') : '' },
        fw ? fw.version : '—', fw ? el('small', { class: 'src ' + fw.source, text: fw.source === 'advertising' ? ' adv' : ' conn' }) : null),
      el('td', { class: 'adv-state', text: updateState(d) || '—' }),
      el('td', { class: 'seen', text: ago(d.last_seen) }),
      el('td', { class: 'update' }, job ? jobView(job) : ''));
  });
  fill('#devices tbody', rows);
  $('#device-count').textContent = '(' + devs.length + ')';
  $('#no-devices').hidden = devs.length > 0;
  renderSummary(devs);
}

function renderImages() {
  const rows = state.images.map((im) => {
    const del = el('button', { type: 'button', text: 'Delete' });
    del.onclick = () => api('DELETE', '/images/' + im.id).then(loadImages, showError('#upload-status'));
    const sig = im.signature && im.signature.type ? im.signature.type + (im.signature.verified ? ' ✓' : '') : 'unsigned';
    return el('tr', { 'data-id': im.id },
      el('td', { text: im.version }), el('td', {}, el('code', { text: im.id.slice(0, 12) })),
      el('td', { text: String(im.size) }), el('td', { text: sig }), el('td', {}, del));
  });
  fill('#images tbody', rows);
  for (const sel of document.querySelectorAll('select.image-select')) {
    const keep = sel.value;
    sel.textContent = '';
    for (const im of state.images) sel.append(el('option', { value: im.id, text: im.version + ' (' + im.id.slice(0, 8) + ')' }));
    if (keep) sel.value = keep;
  }
}

function showError(where) {
  return (e) => { const p = $(where); p.textContent = e.message; p.className = 'status error'; };
}

async function loadDevices() {
  const data = await api('GET', '/devices');
  state.devices = new Map(data.devices.map((d) => [d.id, d]));
  if (state.view === 'fleet') renderDevices();
}

async function loadImages() {
  const data = await api('GET', '/images');
  state.images = data.images;
  renderImages();
}

// The newest job of each device, so progress survives a page reload.
async function loadJobs() {
  let data;
  try { data = await api('GET', '/jobs'); } catch (e) { return; } // no engine
  const newest = new Map();
  for (const j of data.jobs || []) {
    const cur = newest.get(j.device);
    if (!cur || j.id > cur.id) newest.set(j.device, j);
  }
  for (const [dev, j] of newest) state.jobs.set(dev, jobFromRest(j));
  if (state.view === 'fleet') renderDevices();
}

// ---- events ----

const QUIET = new Set(['device.seen']); // every advertisement: not for the log

function fmtValue(v) {
  if (typeof v === 'string') return /^[0-9a-f]{16,}$/.test(v) ? v.slice(0, 8) + '…' : v;
  if (typeof v === 'number') return String(Number.isInteger(v) ? v : Math.round(v * 100) / 100);
  return JSON.stringify(v);
}

function eventText(ev) {
  const d = ev.data || {};
  const who = d.name || (d.device ? devLabel(d.device) : typeof d.id === 'string' ? fmtValue(devLabel(d.id)) : '');
  const rest = Object.entries(d).filter(([k, v]) => v != null && !['id', 'device', 'name'].includes(k))
    .map(([k, v]) => k + '=' + fmtValue(v)).join(' ');
  const num = typeof d.id === 'number' ? ' #' + d.id : ''; // a job's id
  return `${new Date(ev.time_ms || Date.now()).toLocaleTimeString()} ${ev.type}${num} ${who} ${rest}`.slice(0, 200);
}

// One line per event; a job's progress updates its own line instead of
// pushing everything else out.
function logTo(sel, ev, limit) {
  const ol = $(sel);
  const key = ev.type === 'job.progress' ? 'progress-' + (ev.data && ev.data.id) : '';
  if (key) for (const old of ol.querySelectorAll(`li[data-key="${key}"]`)) old.remove();
  ol.prepend(el('li', { class: ev.type.replace(/\./g, '-'), 'data-type': ev.type, 'data-key': key,
    text: (ev.gateway ? '[' + ev.gateway + '] ' : '') + eventText(ev) })); // several gateways: where
  while (ol.children.length > limit) ol.lastChild.remove();
}

function aboutDevice(ev, id) {
  const d = ev.data || {};
  return d.device === id || d.id === id;
}

async function loadRecentEvents() {
  const data = await api('GET', '/events/recent?limit=200');
  $('#events').textContent = '';
  const shown = data.events.filter((e) => !QUIET.has(e.type)).slice(-50);
  for (const ev of shown) logTo('#events', ev, 50);
  state.lastEventId = data.last_id;
}

let reloadTimer = null;
function reloadSoon() {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    loadDevices().catch(() => {});
    if (state.view === 'device') loadDevice(false).catch(() => {});
  }, 400);
}

let rolloutTimer = null;
function rolloutSoon() {
  if (rolloutTimer) return;
  rolloutTimer = setTimeout(() => {
    rolloutTimer = null;
    if (state.view === 'rollout') loadRollout().catch(() => {});
    if (state.view === 'rollouts') loadRollouts().catch(() => {});
  }, 300);
}

function onJobEvent(ev) {
  const d = ev.data || {};
  const dev = d.device || d.device_id;
  if (!dev) return;
  const job = state.jobs.get(dev) && state.jobs.get(dev).id === d.id ? state.jobs.get(dev) : { id: d.id, device: dev };
  if (d.percent != null) job.percent = d.percent;
  else if (d.bytes != null && d.total) job.percent = Math.floor(100 * d.bytes / d.total);
  if (d.rate != null) job.rate = d.rate;
  if (d.eta_s !== undefined) job.eta_s = d.eta_s;
  if (d.phase) job.phase = d.phase;
  if (d.state) job.state = d.state;
  if (!job.state) job.state = 'running';
  if (ev.type === 'job.result') {
    if (d.state === 'done') job.percent = 100;
    // Read the slots again so the firmware column shows what now runs.
    api('GET', '/devices/' + encodeURIComponent(dev) + '/image-state').catch(() => {}).then(reloadSoon);
  }
  state.jobs.set(dev, job);
  if (state.view === 'fleet') renderDevices();
  if (state.view === 'device' && state.param === dev) renderDeviceJobs();
  if (state.view === 'rollout') renderRolloutDevices();
}

function onEvent(ev) {
  if (ev.id) state.lastEventId = ev.id;
  if (!QUIET.has(ev.type)) logTo('#events', ev, 50);
  if (state.view === 'device' && aboutDevice(ev, state.param) && !QUIET.has(ev.type)) logTo('#dev-events', ev, 30);
  if (ev.type.startsWith('job.')) onJobEvent(ev);
  else if (ev.type.startsWith('image.')) loadImages().catch(() => {});
  else if (ev.type.startsWith('rollout.')) rolloutSoon();
  else reloadSoon();
}

let source = null;
function connectEvents() {
  if (source) source.close();
  const q = new URLSearchParams();
  if (token()) q.set('access_token', token());
  if (state.lastEventId) q.set('last_event_id', String(state.lastEventId));
  source = new EventSource(API + '/events' + (q.toString() ? '?' + q : ''));
  const badge = $('#stream');
  source.onopen = () => { badge.textContent = 'live'; badge.className = 'badge up'; loadDevices().catch(() => {}); };
  source.onerror = () => { badge.textContent = 'reconnecting'; badge.className = 'badge connecting'; };
  const handle = (e) => {
    let data;
    try { data = JSON.parse(e.data); } catch (err) { return; }
    data.type = data.type || e.type;
    onEvent(data);
  };
  source.onmessage = handle;
  for (const t of ['device.added', 'device.removed', 'device.seen', 'device.lost', 'device.connected',
    'device.disconnected', 'device.updated', 'device.slots', 'device.advertised', 'job.queued', 'job.state',
    'job.progress', 'job.result', 'image.added', 'image.deleted', 'rollout.state', 'rollout.device',
    'rollout.progress', 'stream.reset']) {
    source.addEventListener(t, handle);
  }
}

// ---- device view ----

async function loadDevice(withEvents) {
  const id = state.param;
  const path = '/devices/' + encodeURIComponent(id);
  const [d, jobs] = await Promise.all([api('GET', path), api('GET', '/jobs?device=' + encodeURIComponent(id)).catch(() => ({ jobs: [] }))]);
  if (state.param !== id) return;
  state.device = d;
  state.devJobs = (jobs.jobs || []).map(jobFromRest);
  const live = state.jobs.get(id);
  if (live && state.devJobs.length && state.devJobs[0].id === live.id) state.devJobs[0] = Object.assign(state.devJobs[0], live);
  renderDevice();
  if (withEvents) {
    const ev = await api('GET', '/events/recent?limit=30&device=' + encodeURIComponent(id));
    $('#dev-events').textContent = '';
    for (const e of ev.events.filter((x) => !QUIET.has(x.type))) logTo('#dev-events', e, 30);
  }
}

function renderDevice() {
  const d = state.device;
  const fw = firmware(d);
  const a = advertised(d);
  $('#dev-title').textContent = (d.name || d.id) + (d.name ? ' (' + d.id + ')' : '');
  const link = linkOf(d);
  $('#dev-link').textContent = link;
  $('#dev-link').className = 'badge link ' + link;
  fill('#dev-info tbody', kvRows({
    transport: d.transport, address: d.address, 'in range': inRange(d) ? 'yes' : 'no',
    RSSI: d.rssi == null ? null : d.rssi + ' dBm', battery: battery(d) == null ? null : battery(d) + ' %' + (a && a.charging ? ' (charging)' : ''),
    firmware: fw ? `${fw.version} (from ${fw.source}${fw.age_s != null ? ', ' + age(fw.age_s) + ' old' : ''})` : null,
    advertised: a ? `${a.version || '?'}, hash ${a.hash_prefix || '?'}…, ${a.update_state}` +
      `${a.self_check_ok ? ', self-check ok' : ''}${a.age_s != null ? ', heard ' + age(a.age_s) + ' ago' : ''}` : null,
    pairing: d.pairing, 'last seen': ago(d.last_seen), 'UDP port': d.udp_port, MTU: d.mtu,
    'held by': d.held_by === undefined ? null : (d.held_by || 'nobody') + (d.view ? ` (as ${d.view.gateway} saw it ${age(d.view.age_ms / 1000)} ago)` : ''),
    'queue': `${d.queued || 0} queued, ${d.in_flight || 0} in flight`,
  }));
  fill('#dev-counters tbody', kvRows(d.counters || {}));
  const slots = Array.isArray(d.slots) ? d.slots : [];
  fill('#dev-slots tbody', slots.map((s) => {
    const flags = ['active', 'confirmed', 'pending', 'permanent', 'bootable'].filter((f) => s[f]);
    const h = s.hash || '';
    return el('tr', {}, el('td', { text: String(s.image == null ? 0 : s.image) }), el('td', { text: String(s.slot) }),
      el('td', { text: s.version + (s.version_text && s.version_text !== s.version ? ' (' + s.version_text + ')' : '') }),
      el('td', {}, el('code', { title: h, text: h.slice(0, 16) + (h.length > 16 ? '…' : '') })),
      el('td', {}, ...flags.map((f) => el('span', { class: 'flag ' + f, text: f }))));
  }));
  $('#dev-no-slots').hidden = slots.length > 0;
  $('#dev-slots-age').textContent = d.slots_age_s != null ? 'read ' + age(d.slots_age_s) + ' ago' : '';
  renderDeviceJobs();
}

function renderDeviceJobs() {
  const live = state.jobs.get(state.param);
  const jobs = (state.devJobs || []).map((j) => (live && live.id === j.id ? Object.assign({}, j, live) : j));
  if (live && !jobs.some((j) => j.id === live.id)) jobs.unshift(live);
  fill('#dev-jobs tbody', jobs.map((j) => el('tr', { 'data-job': String(j.id) },
    el('td', { text: String(j.id) }), el('td', {}, el('code', { text: (j.image || '').slice(0, 8) })),
    el('td', { text: j.mode || '' }), el('td', {}, el('span', { class: 'badge ' + j.state, text: j.state || '' })),
    el('td', {}, jobView(j)), el('td', { text: j.started ? ago(j.started) : '—' }))));
}

async function echo(e) {
  e.preventDefault();
  const out = $('#echo-result');
  const text = $('#echo-text').value;
  out.textContent = 'sending…';
  out.className = 'status';
  const t0 = performance.now();
  try {
    const r = await api('POST', '/devices/' + encodeURIComponent(state.param) + '/echo', { d: text });
    const ms = Math.round(performance.now() - t0);
    out.textContent = `"${r && r.r}" came back in ${ms} ms`;
    out.className = 'status ok';
  } catch (err) { showError('#echo-result')(err); }
}

// ---- rollouts ----

function finishedCount(t) {
  return (t.total || 0) - (t.pending || 0) - (t.submitting || 0) - (t.running || 0);
}

async function loadRollouts() {
  const data = await api('GET', '/rollouts');
  const list = (data.rollouts || []).sort((a, b) => natural(b.id, a.id));
  fill('#rollouts tbody', list.map((r) => el('tr', { 'data-id': r.id },
    el('td', {}, el('a', { href: '#/rollout/' + encodeURIComponent(r.id), text: r.id })),
    el('td', { text: r.name || '' }), el('td', { text: r.image_version || r.image.slice(0, 8) }),
    el('td', {}, el('span', { class: 'badge ' + r.state, text: r.state })),
    el('td', {}, el('progress', { max: String(r.devices || 1), value: String(finishedCount(r.totals || {})) }),
      ` ${finishedCount(r.totals || {})}/${r.devices}`),
    el('td', { text: ago(r.created_ms) }))));
  $('#no-rollouts').hidden = list.length > 0;
}

function rolloutSpec() {
  const spec = {
    image: $('#ro-image').value, mode: $('#ro-mode').value,
    waves: { canary: +$('#ro-canary').value || 0, size: +$('#ro-wave').value || 0, success_percent: +$('#ro-success').value || 0 },
    max_concurrent: Math.max(1, +$('#ro-concurrent').value || 1),
  };
  if ($('#ro-name').value.trim()) spec.name = $('#ro-name').value.trim();
  const kind = $('#ro-target').value;
  const pattern = $('#ro-pattern').value.trim();
  if (kind === 'all' || kind === 'outdated') spec.target = kind;
  else if (kind === 'selected') spec.target = { devices: [...document.querySelectorAll('#devices input.sel:checked')].map((c) => c.value) };
  else spec.target = { [kind]: pattern || '*' };
  return spec;
}

async function createRollout(e) {
  e.preventDefault();
  const st = $('#ro-status');
  const spec = rolloutSpec();
  if (!spec.image) { st.textContent = 'Upload an image first.'; st.className = 'status error'; return; }
  if (spec.target.devices && !spec.target.devices.length) {
    st.textContent = 'Select devices in the fleet table first.'; st.className = 'status error'; return;
  }
  try {
    const r = await api('POST', '/rollouts', spec);
    st.textContent = 'Created ' + r.id + ' for ' + r.devices + ' devices.';
    st.className = 'status ok';
    location.hash = '#/rollout/' + encodeURIComponent(r.id);
  } catch (err) { showError('#ro-status')(err); }
}

async function loadRollout() {
  const id = state.param;
  const [r, report] = await Promise.all([api('GET', '/rollouts/' + encodeURIComponent(id)),
    api('GET', '/rollouts/' + encodeURIComponent(id) + '/report.txt', undefined, true).catch((e) => e.message)]);
  if (state.param !== id) return;
  state.rollout = r;
  $('#ro-report').textContent = report;
  renderRollout();
}

function renderRollout() {
  const r = state.rollout;
  $('#ro-title').textContent = r.id + (r.name ? ' “' + r.name + '”' : '');
  $('#ro-state').textContent = r.state;
  $('#ro-state').className = 'badge ' + r.state;
  $('#ro-reason').textContent = r.reason || '';
  const t = r.totals || {};
  const over = ['completed', 'canceled'].includes(r.state);
  $('#ro-pause').disabled = !['running', 'waiting'].includes(r.state);
  $('#ro-resume').disabled = r.state !== 'paused';
  $('#ro-cancel').disabled = over;
  $('#ro-retry').disabled = !((t.failed || 0) + (t.rolled_back || 0) + (t.lost || 0));
  const shown = Object.fromEntries(Object.entries(t).filter(([k, v]) => v || k === 'total'));
  fill('#ro-totals tbody', kvRows(Object.assign({ image: (r.image_version || '') + ' ' + r.image.slice(0, 12), mode: r.spec && r.spec.mode }, shown)));
  fill('#ro-waves tbody', (r.waves || []).map((w) => el('tr', { 'data-wave': String(w.wave) },
    el('td', { text: w.wave === 0 && r.spec && r.spec.waves && r.spec.waves.canary ? '0 (canary)' : String(w.wave) }),
    el('td', { text: w.open ? 'open' : '—' }), el('td', { text: String(w.size) }),
    el('td', {}, el('progress', { class: 'wave-progress', max: String(w.size || 1), value: String(w.final) }), ` ${w.final}/${w.size}`),
    el('td', { text: String(w.succeeded) }), el('td', { class: w.failed ? 'bad' : '', text: String(w.failed) }),
    el('td', { text: String(w.in_progress) }))));
  renderRolloutDevices();
}

function renderRolloutDevices() {
  const r = state.rollout;
  if (!r) return;
  fill('#ro-devices tbody', (r.device_list || []).map((d) => {
    const job = state.jobs.get(d.device);
    const live = job && job.id === d.job_id && !FINISHED.includes(job.state) ? jobView(job) : d.job_id ? String(d.job_id) : '—';
    return el('tr', { 'data-device': d.device },
      el('td', {}, devLink(d.device)), el('td', { text: String(d.wave) }),
      el('td', {}, el('span', { class: 'badge ' + d.state, text: d.state })),
      el('td', { text: d.from_version || '—' }), el('td', {}, live),
      el('td', { text: String(d.attempts) }), el('td', { class: 'error', text: d.error || '' }));
  }));
}

async function rolloutAction(what) {
  const st = $('#ro-action-status');
  try {
    const r = await api('POST', '/rollouts/' + encodeURIComponent(state.param) + '/' + what, {});
    st.textContent = what + ': ' + r.state;
    st.className = 'status ok';
    await loadRollout();
  } catch (err) { showError('#ro-action-status')(err); }
}

// ---- routing ----

function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const [view, ...rest] = h.split('/');
  const param = rest.length ? decodeURIComponent(rest.join('/')) : null;
  state.view = { device: 'device', rollouts: 'rollouts', rollout: 'rollout' }[view] || 'fleet';
  state.param = param;
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + state.view;
  $('#nav-fleet').className = state.view === 'fleet' || state.view === 'device' ? 'current' : '';
  $('#nav-rollouts').className = state.view.startsWith('rollout') ? 'current' : '';
  const fail = (sel) => (err) => { const p = $(sel); if (p) { p.textContent = err.message; p.className = 'status error'; } };
  if (state.view === 'fleet') renderDevices();
  else if (state.view === 'device') {
    $('#echo-result').textContent = '';
    loadDevice(true).catch(fail('#echo-result'));
  } else if (state.view === 'rollouts') loadRollouts().catch(fail('#ro-status'));
  else if (state.view === 'rollout') {
    $('#ro-action-status').textContent = '';
    loadRollout().catch(fail('#ro-action-status'));
  }
}

function upload(file) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const bar = $('#upload-progress');
    xhr.open('POST', API + '/images?filename=' + encodeURIComponent(file.name));
    if (token()) xhr.setRequestHeader('Authorization', 'Bearer ' + token());
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    bar.hidden = false; bar.value = 0;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText); } catch (e) { /* keep {} */ }
      if (xhr.status >= 200 && xhr.status < 300) { bar.value = 100; resolve(data); }
      else reject(new Error(data.detail || xhr.statusText || 'upload failed'));
    };
    xhr.onerror = () => reject(new Error('network error'));
    xhr.send(file);
  });
}

async function startUpdates(e) {
  e.preventDefault();
  const st = $('#update-status');
  const image = $('#update-image').value;
  const mode = $('#update-mode').value;
  const ids = [...document.querySelectorAll('#devices input.sel:checked')].map((c) => c.value);
  if (!image || !ids.length) { st.textContent = 'Pick an image and at least one device.'; st.className = 'status error'; return; }
  st.textContent = ''; st.className = 'status';
  for (const id of ids) {
    try {
      const job = await api('POST', '/devices/' + encodeURIComponent(id) + '/update', { image, mode });
      state.jobs.set(id, { percent: 0, state: 'queued', phase: 'queued', id: job && job.id, device: id });
      st.textContent += 'Job ' + (job && job.id) + ' for ' + devLabel(id) + '. ';
    } catch (err) { st.textContent += devLabel(id) + ': ' + err.message + ' '; st.className = 'status error'; }
  }
  renderDevices();
}

async function uploadImage(e) {
  e.preventDefault();
  const f = $('#upload-file').files[0];
  const st = $('#upload-status');
  if (!f) { st.textContent = 'Choose an image file first.'; st.className = 'status error'; return; }
  st.textContent = 'Uploading ' + f.name + '…'; st.className = 'status';
  try {
    const im = await upload(f);
    await loadImages();
    st.textContent = (im.created === false ? 'Already stored: ' : 'Stored: ') + im.version + ' ' + im.id.slice(0, 12);
    for (const sel of document.querySelectorAll('select.image-select')) sel.value = im.id;
  } catch (err) { showError('#upload-status')(err); }
}

async function start() {
  try {
    await loadRecentEvents();
  } catch (err) {
    if (err.status === 401) $('#stream').textContent = 'token needed';
  }
  connectEvents();
  await Promise.all([loadDevices(), loadImages()]).then(loadJobs).catch((err) => {
    if (err.status === 401) $('#stream').textContent = 'token needed';
  });
  route();
}

const MODES = [['test-confirm', 'test, then confirm'], ['test', 'test only'], ['upload', 'upload only']];

function init() {
  $('#token').value = token();
  for (const sel of document.querySelectorAll('select.mode-select')) {
    for (const [v, text] of MODES) sel.append(el('option', { value: v, text }));
  }
  $('#token-form').onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem('smpgw-token', $('#token').value.trim());
    start();
  };
  $('#select-all').onchange = (e) => {
    for (const c of document.querySelectorAll('#devices input.sel')) c.checked = e.target.checked;
  };
  $('#upload-form').onsubmit = uploadImage;
  $('#update-form').onsubmit = startUpdates;
  $('#echo-form').onsubmit = echo;
  $('#rollout-form').onsubmit = createRollout;
  $('#ro-target').onchange = () => { $('#ro-pattern').disabled = !['name', 'version'].includes($('#ro-target').value); };
  $('#ro-target').onchange();
  for (const a of ['pause', 'resume', 'cancel']) $('#ro-' + a).onclick = () => rolloutAction(a);
  $('#ro-retry').onclick = () => rolloutAction('retry-failed');
  window.addEventListener('hashchange', route);
  route();
  start();
  setInterval(() => loadDevices().catch(() => {}), 15000);
  // "Last seen" and ages move even when nothing else happens.
  setInterval(() => { if (state.view === 'fleet') renderDevices(); }, 5000);
}

init();
