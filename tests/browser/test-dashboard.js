// SPDX-License-Identifier: MIT
// The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) against a running smpgwd with a simulated BLE fleet.
// Started by test-browser.py, which passes SMPGW (base URL), TOKEN, DEVICES
// (comma-separated name=id), AWAY (a watch out of range), IMAGE (an MCUboot
// file), SIM and SIM_CTL (smpgw-sim and its control socket, for faults),
// PROFILE (a temp directory) and optionally SCREENSHOTS (a directory
// that receives dashboard-<view>.png). Every view is used with real clicks;
// every wait is bounded. Prints TAP and a closing "N passed, N failed".
'use strict';

const path = require('path');
const { execFileSync } = require('child_process');
const { chromium } = require('playwright-core');

const BASE = process.env.SMPGW;
const TOKEN = process.env.TOKEN;
const DEVICES = new Map((process.env.DEVICES || '').split(',').filter(Boolean).map((x) => x.split('=')));
const AWAY = process.env.AWAY;
const IMAGE = process.env.IMAGE;
const SHOTS = process.env.SCREENSHOTS;
const SIM = process.env.SIM;
const SIM_CTL = process.env.SIM_CTL;
const id = (name) => DEVICES.get(name);
const natural = new Intl.Collator(undefined, { numeric: true }).compare;

let n = 0;
let failed = 0;
function check(cond, name) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? '' : 'not '}ok ${n} - ${name}`);
}

async function api(method, p, body) {
  const rsp = await fetch(BASE + '/api/v1' + p, {
    method,
    headers: { Authorization: 'Bearer ' + TOKEN, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await rsp.json(); } catch (e) { /* empty */ }
  return { status: rsp.status, data };
}

// A request to the simulator's control socket (docs/simulator.md).
function sim(req) {
  const ans = JSON.parse(execFileSync(SIM, ['ctl', SIM_CTL, JSON.stringify(req)], { timeout: 15000 }));
  if (!ans.ok) throw new Error('sim ctl ' + JSON.stringify(req) + ': ' + JSON.stringify(ans));
  return ans;
}

// Polls the daemon (node side) until fn(answer of GET p) is true; false after timeout ms.
async function untilApi(p, fn, timeout) {
  const end = Date.now() + timeout;
  for (;;) {
    const r = await api('GET', p);
    if (r.status === 200 && fn(r.data)) return true;
    if (Date.now() > end) return false;
    await new Promise((res) => setTimeout(res, 200));
  }
}

// Waits for fn (run in the page) to be true; false after the timeout.
function until(page, fn, arg, timeout) {
  return page.waitForFunction(fn, arg, { timeout: timeout || 15000, polling: 100 }).then(() => true, () => false);
}

async function shot(page, name) {
  if (!SHOTS) return;
  await page.waitForTimeout(300); // let the last render land
  await page.screenshot({ path: path.join(SHOTS, `dashboard-${name}.png`), fullPage: true });
}

const cells = (page, sel) => page.$$eval(sel, (t) => t.map((x) => x.textContent.trim()));

async function testFleet(page) {
  await page.goto(BASE + '/', { timeout: 15000 });
  check((await page.title()) === 'smpgw', 'dashboard loads');
  // The Events panel shows the history before anything new happens.
  const history = await until(page, () => document.querySelectorAll('#events li').length > 0);
  const logged = (await cells(page, '#events li')).join('\n');
  check(history && /device\.added/.test(logged), 'events panel shows the recent history on load');
  await page.waitForSelector('#devices tbody tr', { timeout: 15000 });
  await until(page, (k) => document.querySelectorAll('#devices tbody tr').length === k, DEVICES.size);
  const names = await cells(page, '#devices tbody td.name');
  const want = [...DEVICES.keys()].sort(natural);
  check(JSON.stringify(names) === JSON.stringify(want), 'natural order: ' + names.join(', '));
  const i2 = names.indexOf('PineTime-2');
  const i10 = names.indexOf('PineTime-10');
  check(i2 >= 0 && i10 > i2, 'PineTime-2 before PineTime-10');
  check(!(await page.isVisible('#th-held-by')) && !(await page.isVisible('#devices tbody td.held-by')),
    'one gateway: no Gateway column');
  const links = await cells(page, '#devices tbody .badge.link');
  check(links.every((l) => ['down', 'connecting', 'up'].includes(l)), 'link state shown: ' + links.join(', '));
  // Battery and firmware for every watch, none connected: from advertising.
  const ok = await until(page, () => [...document.querySelectorAll('#devices tbody tr')].every((r) =>
    /\d+ %/.test(r.querySelector('td.battery').textContent) && /^\d+\.\d+\.\d+/.test(r.querySelector('td.fw').textContent)));
  const bats = await cells(page, '#devices tbody td.battery');
  const fws = await cells(page, '#devices tbody td.fw');
  check(ok, 'battery for every watch: ' + bats.join(', '));
  check(ok, 'firmware for every watch: ' + fws.join(', '));
  const rest = (await api('GET', '/devices')).data.devices;
  check(rest.every((d) => d.link_state !== 'up'), 'none of them connected');
  check(rest.every((d) => d.battery != null && d.firmware && d.firmware.source === 'advertising'),
    'the daemon has battery and firmware of every watch from advertising');
  const byName = new Map(rest.map((d) => [d.name, d]));
  const rows = await page.$$eval('#devices tbody tr', (r) => r.map((x) => [x.querySelector('td.name').textContent,
    x.querySelector('td.battery').textContent.trim(), x.querySelector('td.fw').textContent.trim()]));
  check(rows.every(([nm, bat, fw]) => byName.get(nm) && bat === byName.get(nm).battery + ' %' &&
    fw === byName.get(nm).firmware.version + ' adv'), 'table shows what the daemon says, marked as advertised');
  // The summary: counts and the version chart agree with the table.
  const total = await page.textContent('#sum-total');
  check(+total === DEVICES.size, 'summary: ' + total + ' watches');
  const up = +(await page.textContent('#sum-up'));
  const down = +(await page.textContent('#sum-down'));
  check(up + down === DEVICES.size, `summary: ${up} connected, ${down} not`);
  // every watch but AWAY, which stopped advertising ([ble] presence_timeout ago)
  const inRange = await until(page, (k) => +document.querySelector('#sum-range').textContent === k, DEVICES.size - 1);
  const range = +(await page.textContent('#sum-range'));
  check(inRange && range === DEVICES.size - 1, `summary: ${range} in range (all but ${AWAY})`);
  const bars = await page.$$eval('#version-chart rect.bar', (r) => r.map((x) => [x.getAttribute('data-version'), +x.getAttribute('data-count')]));
  const perVersion = {};
  for (const f of fws) { const v = f.replace(/\s*(adv|conn)$/, ''); perVersion[v] = (perVersion[v] || 0) + 1; }
  check(bars.length >= 2 && bars.every(([v, c]) => perVersion[v] === c),
    'version chart: ' + bars.map(([v, c]) => `${v}×${c}`).join(', '));
  check(await page.$eval('#sum-jobs', (e) => e.textContent) === '0', 'summary: no jobs running yet');
  await shot(page, 'fleet');
}

async function testLiveUpdate(page) {
  check(await until(page, () => document.querySelector('#stream').textContent === 'live'), 'event stream connected');
  const dev = id('PineTime-1');
  const rsp = await api('POST', `/devices/${encodeURIComponent(dev)}/image-state/confirm`, {});
  check(rsp.status === 200 || rsp.status === 422, `request to PineTime-1 answered (${rsp.status})`);
  const up = await until(page, (d) => {
    const b = document.querySelector(`#devices tr[data-id="${d}"] .badge.link`);
    return b && b.textContent === 'up';
  }, dev);
  check(up, 'PineTime-1 shows link up from the live event stream');
  const logged = (await cells(page, '#events li')).join('\n');
  check(/device\.connected/.test(logged), 'new events appear in the event log');
}

async function testUpload(page) {
  await page.fill('#token', TOKEN);
  await page.click('#token-form button');
  await page.setInputFiles('#upload-file', IMAGE);
  await page.click('#upload-form button');
  const ok = await until(page, () => /^(Stored|Already stored)/.test(document.querySelector('#upload-status').textContent), null, 20000);
  check(ok, 'image upload from the page: ' + await page.textContent('#upload-status'));
  check(await page.$eval('#upload-progress', (p) => p.value) === 100, 'upload progress bar reaches 100');
  await until(page, () => document.querySelectorAll('#images tbody tr').length > 0);
  const versions = await cells(page, '#images tbody tr td:first-child');
  check(versions.includes('1.2.3+4'), 'image listed: ' + versions.join(', '));
  check(await page.$$eval('#update-image option', (o) => o.length) >= 1, 'image offered for update');
}

async function testUpdate(page) {
  const dev = id('PineTime-2');
  // Every progress text the row shows, however briefly (a fast upload
  // may be over between two polls).
  await page.evaluate((d) => {
    window.seenMeta = [];
    window.seenJobs = new Set();
    new MutationObserver(() => {
      const m = document.querySelector(`#devices tr[data-id="${d}"] .job-meta`);
      if (m) window.seenMeta.push(m.textContent);
      window.seenJobs.add(document.querySelector('#sum-jobs').textContent);
    }).observe(document.querySelector('#devices tbody'), { childList: true, subtree: true });
  }, dev);
  await page.check(`#devices tr[data-id="${dev}"] input.sel`);
  await page.selectOption('#update-mode', 'test-confirm');
  await page.click('#update-form button');
  const started = await page.waitForSelector(`#devices tr[data-id="${dev}"] progress.job-progress`,
    { timeout: 15000 }).then(() => true, () => false);
  check(started, 'update started from the page shows a progress bar');
  // Rate and ETA while it uploads.
  const meta = await until(page, () => window.seenMeta.some((t) => /B\/s/.test(t) && /ETA \d+:\d\d/.test(t)), null, 60000);
  const metaText = await page.evaluate(() => window.seenMeta.find((t) => /ETA/.test(t)) || window.seenMeta.join(' | '));
  check(meta, 'job progress with rate and ETA: ' + metaText);
  check(await page.evaluate(() => window.seenJobs.has('1')), 'the summary counts the running job');
  await shot(page, 'job');
  const done = await until(page, (d) => {
    const b = document.querySelector(`#devices tr[data-id="${d}"] .job .badge`);
    return b && /done|failed|rolled_back|lost|canceled/.test(b.textContent);
  }, dev, 120000);
  const result = await page.textContent(`#devices tr[data-id="${dev}"] .job .badge`).catch(() => '');
  check(done && /done/.test(result), 'update ends: ' + result);
  check(await until(page, () => document.querySelector('#sum-jobs').textContent === '0'), 'and no job runs any more');
  await until(page, (d) => {
    const td = document.querySelector(`#devices tr[data-id="${d}"] td.fw`);
    return td && td.textContent.startsWith('1.2.3+4');
  }, dev, 15000);
  const fw = await page.textContent(`#devices tr[data-id="${dev}"] td.fw`);
  check(fw && fw.startsWith('1.2.3+4'), 'firmware column shows the new version: ' + fw);
  await until(page, (d) => document.querySelector(`#devices tr[data-id="${d}"] td.adv-state`).textContent === 'idle', dev);
  const st = await page.textContent(`#devices tr[data-id="${dev}"] td.adv-state`);
  const fw2 = await page.textContent(`#devices tr[data-id="${dev}"] td.fw`);
  check(st === 'idle', `state column: confirmed, idle (${st}; firmware ${fw2})`);
  await page.reload({ timeout: 15000 });
  const kept = await until(page, (d) => {
    const b = document.querySelector(`#devices tr[data-id="${d}"] .job .badge`);
    return b && b.textContent === 'done';
  }, dev);
  check(kept, 'the finished job is shown again after a reload');
}

async function testDevicePage(page) {
  const dev = id('PineTime-2');
  await page.click(`#devices tr[data-id="${dev}"] a.dev-link`);
  const shown = await until(page, () => !document.querySelector('#view-device').hidden &&
    /PineTime-2/.test(document.querySelector('#dev-title').textContent));
  check(shown && page.url().endsWith('#/device/' + encodeURIComponent(dev)), 'device page opens: ' + page.url());
  const slots = await until(page, () => [...document.querySelectorAll('#dev-slots tbody tr')].some((r) => /1\.2\.3/.test(r.textContent) && /active/.test(r.textContent)));
  check(slots, 'slots: 1.2.3 active: ' + (await cells(page, '#dev-slots tbody tr')).join(' | '));
  const jobs = await until(page, () => [...document.querySelectorAll('#dev-jobs tbody tr')].some((r) => /done/.test(r.textContent)));
  check(jobs, 'job history shows the done job');
  const counters = await cells(page, '#dev-counters tbody th');
  check(counters.includes('requests') && counters.includes('responses'), 'counters: ' + counters.join(', '));
  const info = (await cells(page, '#dev-info tbody tr')).join(' | ');
  check(/battery\d+ %/.test(info) && /firmware1\.2\.3\+4 \(from connection/.test(info) &&
    /advertised\d+\.\d+\.\d+\+\d+, hash [0-9a-f]{8}/.test(info), 'state: ' + info);
  const evs = await until(page, () => document.querySelectorAll('#dev-events li').length > 0);
  const evText = (await cells(page, '#dev-events li')).join('\n');
  check(evs && /job\.|device\./.test(evText), 'recent events of the device');
  await page.fill('#echo-text', 'ping from the dashboard');
  await page.click('#echo-button');
  const echoed = await until(page, () => /came back in \d+ ms/.test(document.querySelector('#echo-result').textContent), null, 20000);
  check(echoed && /ping from the dashboard/.test(await page.textContent('#echo-result')),
    'SMP echo: ' + await page.textContent('#echo-result'));
  await shot(page, 'device');
  await page.click('a[href="#/"]');
  check(await until(page, () => !document.querySelector('#view-fleet').hidden), 'back to the fleet');
}

async function rolloutState(page, re, timeout) {
  return until(page, (s) => new RegExp(s).test(document.querySelector('#ro-state').textContent), re, timeout);
}

async function testRollout(page) {
  await page.click('#nav-rollouts');
  check(await until(page, () => !document.querySelector('#view-rollouts').hidden), 'rollouts page opens');
  await page.fill('#ro-name', 'dashboard test');
  await page.selectOption('#ro-target', 'name');
  await page.fill('#ro-pattern', 'PineTime-1*');
  await page.fill('#ro-canary', '1');
  await page.fill('#ro-wave', '2');
  await page.fill('#ro-success', '50');
  await page.click('#rollout-form button[type=submit]');
  const opened = await until(page, () => !document.querySelector('#view-rollout').hidden &&
    document.querySelectorAll('#ro-devices tbody tr').length > 0);
  check(opened && /#\/rollout\//.test(page.url()), 'rollout created from the page: ' + page.url());
  const rid = decodeURIComponent(page.url().split('#/rollout/')[1]);
  const devs = await page.$$eval('#ro-devices tbody tr', (r) => r.map((x) => x.getAttribute('data-device')));
  const want = ['PineTime-1', 'PineTime-10', 'PineTime-11', 'PineTime-12'].map(id);
  check(JSON.stringify(devs) === JSON.stringify(want), 'targets PineTime-1* in natural order');
  const waves = await page.$$eval('#ro-waves tbody tr', (r) => r.length);
  check(waves === 3, 'waves: canary 1, then 2 and 1 (' + waves + ' rows)');
  check(await rolloutState(page, '^(running|waiting)$'), 'rollout runs: ' + await page.textContent('#ro-state'));

  await page.click('#ro-pause');
  check(await rolloutState(page, '^paused$'), 'paused from the page');
  check((await api('GET', '/rollouts/' + rid)).data.state === 'paused', 'the daemon agrees: paused');
  check(await page.$eval('#ro-resume', (b) => !b.disabled), 'resume offered while paused');
  await page.click('#ro-resume');
  check(await rolloutState(page, '^(running|waiting)$'), 'resumed from the page: ' + await page.textContent('#ro-state'));

  // Three watches updated, the one out of range still pending.
  const progressed = await until(page, (ids) => ids.every((d) => {
    const b = document.querySelector(`#ro-devices tr[data-device="${d}"] .badge`);
    return b && /^(updated|up_to_date)$/.test(b.textContent);
  }), [want[0], want[1], want[3]], 150000);
  const states = await cells(page, '#ro-devices tbody .badge');
  check(progressed, 'waves progress: ' + states.join(', '));
  const waveProg = await page.$$eval('#ro-waves progress.wave-progress', (p) => p.map((x) => `${x.value}/${x.max}`));
  check(waveProg[0] === '1/1', 'wave progress bars: ' + waveProg.join(', '));
  const away = await page.textContent(`#ro-devices tr[data-device="${id(AWAY)}"] .badge`);
  check(/pending|running|submitting/.test(away), AWAY + ' (out of range) waits: ' + away);
  const report = await page.textContent('#ro-report');
  check(/dashboard test/.test(report) && /updated/.test(report), 'the report is shown');
  await shot(page, 'rollout');

  await page.click('#ro-cancel');
  check(await rolloutState(page, '^canceled$'), 'canceled from the page');
  const r = (await api('GET', '/rollouts/' + rid)).data;
  check(r.state === 'canceled', 'the daemon agrees: canceled');
  const canceledDev = await until(page, (d) => {
    const b = document.querySelector(`#ro-devices tr[data-device="${d}"] .badge`);
    return b && b.textContent === 'canceled';
  }, id(AWAY));
  check(canceledDev, AWAY + ' canceled');
  check(await until(page, () => /canceled/.test(document.querySelector('#ro-report').textContent)), 'report says canceled');
  check(await page.$eval('#ro-pause', (b) => b.disabled) && await page.$eval('#ro-cancel', (b) => b.disabled),
    'no pause or cancel on a canceled rollout');

  await page.click('a[href="#/rollouts"]');
  const listed = await until(page, (x) => {
    const row = document.querySelector(`#rollouts tr[data-id="${x}"]`);
    return row && /canceled/.test(row.textContent);
  }, rid);
  check(listed, 'rollout listed as canceled');
  await shot(page, 'rollouts');
}

const roDev = (r, d) => (r.device_list || []).find((x) => x.device === d) || {};
const badge = (page, d) => page.textContent(`#ro-devices tr[data-device="${d}"] .badge`).catch(() => '');

// A rollout with a failed watch, repaired with the "Retry failed" button:
// PineTime-5 writes flash slowly (so its upload lasts) and walks out of
// range in the middle of it; its job fails ("device unreachable", after
// [update] retry_timeout) while PineTime-4 is updated. Back in range and
// repaired, one click puts it back to pending, and the page follows it to
// updated.
async function testRetryFailed(page) {
  const good = id('PineTime-4');
  const bad = id('PineTime-5');
  sim({ cmd: 'fault', device: 'PineTime-5', fault: 'slow_flash', factor: 1000 });
  const image = (await api('GET', '/images')).data.images.find((im) => im.version === '1.2.3+4');
  const created = await api('POST', '/rollouts', {
    name: 'retry test', image: image.id, target: { devices: [good, bad] },
    waves: { size: 2, success_percent: 0 },
  });
  check(created.status === 201, 'rollout of PineTime-4 and PineTime-5 created: ' + created.status);
  const rid = created.data.id;
  const p = '/rollouts/' + encodeURIComponent(rid);
  await page.goto(BASE + '/#/rollout/' + encodeURIComponent(rid), { timeout: 15000 });
  check(await until(page, () => document.querySelectorAll('#ro-devices tbody tr').length === 2), 'its page opens');
  const running = await untilApi(p, (r) => roDev(r, bad).state === 'running', 60000);
  check(running, 'PineTime-5 uploading');
  sim({ cmd: 'range', device: 'PineTime-5', in_range: false });
  const failedShown = await until(page, (d) => {
    const b = document.querySelector(`#ro-devices tr[data-device="${d}"] .badge`);
    return b && b.textContent === 'failed';
  }, bad, 150000);
  check(failedShown, 'PineTime-5 out of range mid-upload: failed on the page (' + await badge(page, bad) + ')');
  check(await rolloutState(page, '^completed$', 60000), 'the rollout completes: ' + await page.textContent('#ro-state'));
  let r = (await api('GET', p)).data;
  check(r.totals.failed === 1 && r.totals.updated === 1 && roDev(r, good).state === 'updated',
    'the daemon agrees: PineTime-4 updated, PineTime-5 failed (' + roDev(r, bad).error + ')');
  check(await until(page, () => !document.querySelector('#ro-retry').disabled), '"Retry failed" offered');

  sim({ cmd: 'fault', device: 'PineTime-5', fault: 'clear' });
  sim({ cmd: 'range', device: 'PineTime-5', in_range: true });
  await page.click('#ro-retry');
  const acted = await until(page, () => /^retry-failed: running$/.test(document.querySelector('#ro-action-status').textContent));
  check(acted, '"Retry failed" clicked: ' + await page.textContent('#ro-action-status'));
  r = (await api('GET', p)).data;
  check((r.state !== 'completed' || roDev(r, bad).attempts === 2) && ['pending', 'submitting', 'running', 'updated'].includes(roDev(r, bad).state) &&
    roDev(r, good).state === 'updated', 'the daemon retries PineTime-5 only: ' + r.state + ', ' + roDev(r, bad).state);
  const updated = await until(page, (d) => {
    const b = document.querySelector(`#ro-devices tr[data-device="${d}"] .badge`);
    return b && b.textContent === 'updated';
  }, bad, 150000);
  check(updated, 'the page follows PineTime-5 to updated (' + await badge(page, bad) + ')');
  check(await rolloutState(page, '^completed$', 60000), 'and the rollout to completed');
  check(await until(page, () => document.querySelector('#ro-retry').disabled), 'nothing left to retry');
  r = (await api('GET', p)).data;
  check(r.state === 'completed' && r.totals.updated === 2 && !r.totals.failed && roDev(r, bad).attempts === 2,
    `the daemon agrees: both updated, PineTime-5 on its 2nd attempt (${roDev(r, bad).attempts})`);
}

// Several gateways (docs/multi-gateway.md; CLUSTER=1, test-browser.py --cluster):
// the dashboard of one gateway (SMPGW) shows the whole fleet with the
// gateway holding each watch; HOLDERS: name=gateway.
async function testCluster(page) {
  const holders = new Map(process.env.HOLDERS.split(',').map((x) => x.split('=')));
  await page.goto(BASE + '/', { timeout: 15000 });
  await page.waitForSelector('#devices tbody tr', { timeout: 15000 });
  const shown = await until(page, (k) => document.querySelectorAll('#devices tbody tr').length === k, holders.size);
  check(shown, 'every watch of the store listed: ' + (await cells(page, '#devices tbody td.name')).join(', '));
  check(await page.isVisible('#th-held-by'), 'the Gateway column is shown');
  const rows = await page.$$eval('#devices tbody tr', (r) => r.map((x) => [x.querySelector('td.name').textContent,
    x.querySelector('td.held-by').textContent, x.querySelector('td.held-by').title]));
  check(rows.every(([nm, gw]) => holders.get(nm) === gw), 'each row names its holder: ' + rows.map((r) => r.join(' ')).join('; '));
  const remote = rows.filter(([, , title]) => /^as g\d saw it/.test(title));
  check(remote.length > 0, 'a watch held elsewhere says whose view it shows: ' + remote.map((r) => r[2]).join('; '));
  const [name] = rows[0];
  await page.click(`#devices tr[data-id="${id(name)}"] a.dev-link`);
  await page.waitForSelector('#dev-info tbody tr', { timeout: 15000 });
  const ok = await until(page, (g) => [...document.querySelectorAll('#dev-info tbody tr')].some((r) =>
    r.querySelector('th').textContent === 'held by' && r.querySelector('td').textContent.startsWith(g)), holders.get(name));
  check(ok, `the device page of ${name} says it is held by ${holders.get(name)}`);
  await shot(page, 'cluster');
}

async function main() {
  const ctx = await chromium.launchPersistentContext(process.env.PROFILE, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (/Content Security Policy/.test(m.text())) errors.push(m.text().slice(0, 120)); });
  page.on('request', (r) => { if (!r.url().startsWith(BASE)) errors.push('external request: ' + r.url()); });
  try {
    if (process.env.CLUSTER) {
      await testCluster(page);
    } else {
      await testFleet(page);
      await testLiveUpdate(page);
      await testUpload(page);
      await testUpdate(page);
      await testDevicePage(page);
      await testRollout(page);
      await testRetryFailed(page);
    }
  } catch (e) {
    check(false, 'unexpected: ' + e.message);
  } finally {
    check(errors.length === 0, 'no page errors, no CSP violations, no requests outside the daemon ' + errors.join('; '));
    await ctx.close();
  }
  console.log(`1..${n}`);
  console.log(`${n - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

const guard = setTimeout(() => { console.log('not ok - timed out'); process.exit(1); }, 440000);
guard.unref();
main();
