// SPDX-License-Identifier: MIT
// smpgw dashboard: device table, images, uploads and updates, live from
// /api/v1/events. Plain JS, no dependencies, no external resources.
'use strict';

const API = '/api/v1';
const $ = (sel) => document.querySelector(sel);
const state = { devices: new Map(), images: [], jobs: new Map() };

function token() { return localStorage.getItem('smpgw-token') || ''; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h.Authorization = 'Bearer ' + token();
  return h;
}

async function api(method, path, body) {
  const opts = { method, headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}) };
  if (body !== undefined) opts.body = JSON.stringify(body);
  const rsp = await fetch(API + path, opts);
  const text = await rsp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  if (!rsp.ok) {
    const err = new Error((data && (data.detail || data.title)) || rsp.statusText);
    err.status = rsp.status;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function activeSlot(d) {
  const slots = Array.isArray(d.slots) ? d.slots : [];
  return slots.find((s) => s.active) || slots[0] || null;
}

function ago(ms) {
  if (!ms) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : new Date(ms).toLocaleString();
}

function renderDevices() {
  const tbody = $('#devices tbody');
  const selected = new Set([...tbody.querySelectorAll('input.sel:checked')].map((c) => c.value));
  tbody.textContent = '';
  const devs = [...state.devices.values()].sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  for (const d of devs) {
    const slot = activeSlot(d);
    const job = state.jobs.get(d.id);
    const link = d.link_state || d.state || 'down';
    const upd = job ? el('span', { class: 'job' },
      el('progress', { max: '100', value: String(job.percent || 0), class: 'job-progress' }),
      ' ', el('span', { class: 'badge ' + (job.state || ''), text: job.phase || job.state || '' })) : '';
    const cb = el('input', { type: 'checkbox', class: 'sel', value: d.id });
    cb.checked = selected.has(d.id);
    tbody.append(el('tr', { 'data-id': d.id },
      el('td', {}, cb),
      el('td', {}, el('code', { text: d.id })),
      el('td', { text: d.name || '' }),
      el('td', { text: d.transport || '' }),
      el('td', {}, el('span', { class: 'badge link ' + link, text: link })),
      el('td', { class: 'rssi', text: d.rssi == null ? '—' : d.rssi + ' dBm' }),
      el('td', { class: 'fw', text: slot ? slot.version : '—' }),
      el('td', { text: d.udp_port ? String(d.udp_port) : '—' }),
      el('td', { text: ago(d.last_seen) }),
      el('td', { class: 'update' }, upd)));
  }
  $('#device-count').textContent = '(' + devs.length + ')';
  $('#no-devices').hidden = devs.length > 0;
}

function renderImages() {
  const tbody = $('#images tbody');
  const sel = $('#update-image');
  const keep = sel.value;
  tbody.textContent = '';
  sel.textContent = '';
  for (const im of state.images) {
    const del = el('button', { type: 'button', text: 'Delete' });
    del.onclick = () => api('DELETE', '/images/' + im.id).then(loadImages, showError('#upload-status'));
    const sig = im.signature && im.signature.type ? im.signature.type + (im.signature.verified ? ' ✓' : '') : 'unsigned';
    tbody.append(el('tr', { 'data-id': im.id },
      el('td', { text: im.version }), el('td', {}, el('code', { text: im.id.slice(0, 12) })),
      el('td', { text: String(im.size) }), el('td', { text: sig }), el('td', {}, del)));
    sel.append(el('option', { value: im.id, text: im.version + ' (' + im.id.slice(0, 8) + ')' }));
  }
  if (keep) sel.value = keep;
}

function showError(where) {
  return (e) => { const p = $(where); p.textContent = e.message; p.className = 'status error'; };
}

async function loadDevices() {
  const data = await api('GET', '/devices');
  state.devices = new Map(data.devices.map((d) => [d.id, d]));
  renderDevices();
}

async function loadImages() {
  const data = await api('GET', '/images');
  state.images = data.images;
  renderImages();
}

// The newest job of each device, so progress survives a page reload.
async function loadJobs() {
  let data;
  try { data = await api('GET', '/jobs'); } catch (e) { return; } // no engine yet
  const newest = new Map();
  for (const j of data.jobs || []) {
    const cur = newest.get(j.device);
    if (!cur || j.id > cur.id) newest.set(j.device, j);
  }
  for (const [dev, j] of newest) {
    const finished = !['queued', 'running'].includes(j.state);
    state.jobs.set(dev, {
      id: j.id, state: j.state, phase: finished ? j.state : j.phase,
      percent: j.state === 'done' ? 100 : ((j.progress && j.progress.percent) || 0),
    });
  }
  renderDevices();
}

let reloadTimer = null;
function reloadSoon() {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => { reloadTimer = null; loadDevices().catch(() => {}); }, 200);
}

function logEvent(type, data) {
  const li = el('li', { text: new Date().toLocaleTimeString() + ' ' + type + ' ' + JSON.stringify(data.data || {}) });
  const ol = $('#events');
  ol.prepend(li);
  while (ol.children.length > 50) ol.lastChild.remove();
}

function onJobEvent(ev) {
  const d = ev.data || {};
  const dev = d.device || d.device_id;
  if (!dev) return;
  const job = state.jobs.get(dev) || {};
  if (d.bytes != null && d.total) job.percent = Math.floor(100 * d.bytes / d.total);
  else if (d.percent != null) job.percent = d.percent;
  else if (d.progress != null) job.percent = d.progress <= 1 ? Math.round(d.progress * 100) : d.progress;
  if (d.phase) job.phase = d.phase;
  if (d.state) job.state = d.state;
  if (ev.type === 'job.result') {
    job.percent = (d.state === 'done') ? 100 : job.percent;
    job.phase = d.state;
    // Read the slots again so the firmware column shows what now runs.
    api('GET', '/devices/' + encodeURIComponent(dev) + '/image-state')
      .catch(() => {}).then(reloadSoon);
  }
  state.jobs.set(dev, job);
  renderDevices();
}

let source = null;
function connectEvents() {
  if (source) source.close();
  const q = token() ? '?access_token=' + encodeURIComponent(token()) : '';
  source = new EventSource(API + '/events' + q);
  const badge = $('#stream');
  source.onopen = () => { badge.textContent = 'live'; badge.className = 'badge up'; loadDevices().catch(() => {}); };
  source.onerror = () => { badge.textContent = 'reconnecting'; badge.className = 'badge connecting'; };
  const handle = (e) => {
    let data = {};
    try { data = JSON.parse(e.data); } catch (err) { return; }
    const type = data.type || e.type;
    logEvent(type, data);
    if (type.startsWith('job.')) onJobEvent(data);
    else if (type.startsWith('image.')) loadImages().catch(() => {});
    else reloadSoon();
  };
  source.onmessage = handle;
  for (const t of ['device.added', 'device.removed', 'device.seen', 'device.lost', 'device.connected',
    'device.disconnected', 'device.updated', 'device.slots', 'job.queued', 'job.state', 'job.progress',
    'job.result', 'image.added', 'image.deleted', 'rollout.progress', 'rollout.state', 'stream.reset']) {
    source.addEventListener(t, handle);
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

function init() {
  $('#token').value = token();
  $('#token-form').onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem('smpgw-token', $('#token').value.trim());
    connectEvents();
    Promise.all([loadDevices(), loadImages()]).catch(() => {});
  };
  $('#select-all').onchange = (e) => {
    for (const c of document.querySelectorAll('#devices input.sel')) c.checked = e.target.checked;
  };
  $('#upload-form').onsubmit = async (e) => {
    e.preventDefault();
    const f = $('#upload-file').files[0];
    const st = $('#upload-status');
    if (!f) { st.textContent = 'Choose an image file first.'; st.className = 'status error'; return; }
    st.textContent = 'Uploading ' + f.name + '…'; st.className = 'status';
    try {
      const im = await upload(f);
      st.textContent = (im.created === false ? 'Already stored: ' : 'Stored: ') + im.version + ' ' + im.id.slice(0, 12);
      await loadImages();
      $('#update-image').value = im.id;
    } catch (err) { showError('#upload-status')(err); }
  };
  $('#update-form').onsubmit = async (e) => {
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
        state.jobs.set(id, { percent: 0, state: 'queued', phase: 'queued', id: job && job.id });
        st.textContent += 'Job ' + (job && job.id) + ' for ' + id + '. ';
      } catch (err) { st.textContent += id + ': ' + err.message + ' '; st.className = 'status error'; }
    }
    renderDevices();
  };
  connectEvents();
  Promise.all([loadDevices(), loadImages()]).then(loadJobs).catch((err) => {
    if (err.status === 401) { $('#stream').textContent = 'token needed'; }
  });
  setInterval(() => loadDevices().catch(() => {}), 15000);
}

init();
