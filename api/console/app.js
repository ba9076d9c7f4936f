// wharf console: a client of wharf's JSON API under /v1, nothing more. Every change is made
// through the API with the operator's key, which authorises, tenant-scopes and audits it.
// API data only ever becomes text nodes, element properties or attribute values (the page's
// Trusted Types policy makes markup sinks throw anyway). The key lives in sessionStorage
// only: it leaves with the tab, and never reaches a URL or a cookie.
'use strict';

(() => {
  const KEY_STORAGE = 'wharf.console.apiKey';
  const REFRESH_MS = 5000;
  const PAGE_SIZE = 50;
  const WAITING = new Set(['scheduled', 'queued', 'retrying']);
  const QUEUE_COLUMNS = ['queued', 'scheduled', 'running', 'retrying', 'dead', 'done_last_minute'];
  const VIEWS = ['queues', 'dead-letters', 'jobs'];

  const $ = (id) => document.getElementById(id);

  // ---- DOM, from text only ----

  /** Builds an element; strings among `children` become text nodes. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** `2026-11-25T10:00:00.123456Z` → `2026-11-25 10:00:00Z` (UTC, as the API and CLI show it). */
  function fmtTime(iso) {
    if (!iso) return '—';
    return String(iso).replace('T', ' ').replace(/\.\d+/, '').replace(/\+00:00$/, 'Z');
  }

  function localTime(iso) {
    const d = iso ? new Date(iso) : null;
    return d && !Number.isNaN(d.getTime()) ? `${d.toLocaleString()} (your time)` : '';
  }

  /** UUIDv7s share their leading (time) digits, so the tail tells rows apart. */
  function shortId(id) {
    return `…${String(id).slice(-8)}`;
  }

  function stateBadge(state) {
    return el('span', { class: `state state-${state}` }, state);
  }

  function emptyRow(columns, text) {
    return el('tr', {}, el('td', { class: 'empty', colspan: columns }, text));
  }

  function fieldList(target, pairs) {
    target.replaceChildren(
      ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]),
    );
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, v);
    }
    const s = q.toString();
    return s ? `?${s}` : '';
  }

  // ---- the key ----

  function readKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || '';
    } catch {
      return '';
    }
  }

  function forgetStoredKey() {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // Storage disabled: nothing was kept.
    }
  }

  // ---- the API ----

  /** A failed API call, from its RFC 9457 problem. */
  class ApiError extends Error {
    constructor(action, status, problem, scope) {
      super(`${action} failed: ${status}`);
      this.action = action;
      this.status = status;
      this.title = (problem && problem.title) || '';
      this.detail = (problem && problem.detail) || '';
      this.fieldErrors = (problem && Array.isArray(problem.errors) ? problem.errors : []).map((e) => ({
        field: String(e.field ?? ''),
        message: String(e.message ?? ''),
      }));
      this.scope = scope;
    }
  }

  /**
   * Calls the API with the key. `scope` is the scope the endpoint needs (named when the key is
   * refused); `action` says what the operator was doing.
   */
  async function api(method, path, { body, scope, action }) {
    const key = readKey();
    if (!key) throw new Error(`${action}: enter an API key first.`);
    const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json, application/problem+json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new Error(`${action} failed: the API did not answer (${e.message}).`);
    }
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!resp.ok) {
      // The server names the scope it wanted in its challenge; trust it over our own note.
      const challenge = resp.headers.get('WWW-Authenticate') || '';
      const named = /scope="([^"]+)"/.exec(challenge);
      const problem = json && typeof json === 'object' ? json : { title: resp.statusText, detail: text.slice(0, 500) };
      throw new ApiError(action, resp.status, problem, named ? named[1] : scope);
    }
    return json;
  }

  // ---- messages ----

  let errorSource = null;

  function showError(err, source) {
    const box = $('error');
    errorSource = source || null;
    const parts = [];
    if (err instanceof ApiError) {
      parts.push(el('p', {}, el('strong', {}, `${err.action} failed: ${err.status} ${err.title}`.trim())));
      if (err.detail) parts.push(el('p', { class: 'problem-detail' }, err.detail));
      if (err.status === 401) {
        parts.push(el('p', {}, `The API key was not accepted (unknown or revoked): forget it and enter a key with the scope ${err.scope}.`));
      } else if (err.status === 403) {
        parts.push(el('p', {}, `Needs the scope ${err.scope}: use a key that has it.`));
      }
      if (err.fieldErrors.length) {
        parts.push(el('ul', { class: 'field-errors' }, err.fieldErrors.map((e) => el('li', {}, el('code', {}, e.field), `: ${e.message}`))));
      }
    } else {
      parts.push(el('p', {}, String((err && err.message) || err)));
    }
    box.replaceChildren(...parts);
    box.hidden = false;
  }

  function hideError() {
    $('error').hidden = true;
    $('error').replaceChildren();
    errorSource = null;
  }

  function showNotice(text) {
    $('notice').textContent = text;
    $('notice').hidden = false;
  }

  function hideNotice() {
    $('notice').hidden = true;
    $('notice').textContent = '';
  }

  /** Runs an operator action: clears old messages, disables `button` meanwhile, shows failures. */
  async function act(button, fn) {
    hideError();
    hideNotice();
    if (button) button.disabled = true;
    try {
      await fn();
    } catch (e) {
      showError(e);
    } finally {
      if (button) button.disabled = false;
      syncActions();
    }
  }

  /** Actions follow the shown record's state (a replayed dead letter cannot be replayed again). */
  function syncActions() {
    const dead = Boolean(dl.detail) && dl.detail.state === 'dead';
    $('dl-payload').readOnly = !dead;
    for (const id of ['dl-replay', 'dl-replay-edited', 'dl-discard']) $(id).disabled = !dead;
    $('job-cancel').hidden = !(jobs.detail && WAITING.has(jobs.detail.state));
  }

  // ---- views ----

  let current = 'queues';
  const loaded = new Set();

  function show(view) {
    current = view;
    for (const b of $('tabs').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.view === view));
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
    if (view === 'queues') refreshQueues();
    else if (view === 'dead-letters') act(null, () => loadDeadLetters(false, !loaded.has(view)));
    else if (view === 'jobs') act(null, () => loadJobs(false, !loaded.has(view)));
    loaded.add(view);
  }

  // ---- queues ----

  let queuesInFlight = false;

  async function refreshQueues() {
    if (queuesInFlight) return;
    queuesInFlight = true;
    try {
      const data = await api('GET', '/v1/queues', { scope: 'jobs:read', action: 'Loading queues' });
      const rows = (data.items || []).map((q) =>
        el(
          'tr',
          { dataset: { queue: q.name } },
          el('td', {}, el('button', { type: 'button', class: 'link', title: `Jobs on ${q.name}`, onclick: () => jobsOnQueue(q.name) }, q.name)),
          QUEUE_COLUMNS.map((c) => el('td', { class: `num ${c}${q[c] ? ' nonzero' : ''}`, dataset: { col: c } }, String(q[c] ?? 0))),
        ),
      );
      $('queues-table').tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(7, 'No queues.')]));
      $('queues-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (errorSource === 'queues') hideError();
    } catch (e) {
      if (readKey() && current === 'queues') showError(e, 'queues');
    } finally {
      queuesInFlight = false;
    }
  }

  function tick() {
    if (readKey() && current === 'queues' && !document.hidden) refreshQueues();
  }

  // ---- dead letters ----

  const dl = { filter: {}, cursor: null, count: 0, seq: 0, selected: null, detail: null };

  function deadLetterFilterFromForm() {
    const f = {};
    const kind = $('dl-kind').value.trim();
    const error = $('dl-error').value.trim();
    if (kind) f.kind = kind;
    if (error) f.error = error;
    for (const name of ['since', 'until']) {
      const value = $(`dl-${name}`).value;
      if (!value) continue;
      const t = new Date(value); // a datetime-local value is the browser's local time
      if (Number.isNaN(t.getTime())) throw new Error(`"${name}" is not a valid time.`);
      f[name] = t.toISOString();
    }
    return f;
  }

  function describeFilter(f) {
    const parts = [];
    if (f.kind) parts.push(`kind = "${f.kind}"`);
    if (f.error) parts.push(`error contains "${f.error}"`);
    if (f.since) parts.push(`died since ${fmtTime(f.since)}`);
    if (f.until) parts.push(`died before ${fmtTime(f.until)}`);
    return parts.length ? parts.join(', ') : 'none (every dead letter of this tenant)';
  }

  function deadLetterRow(j) {
    return el(
      'tr',
      { class: `clickable${j.id === dl.selected ? ' selected' : ''}`, dataset: { id: j.id }, onclick: () => act(null, () => openDeadLetter(j.id)) },
      el('td', { class: 'id' }, el('button', { type: 'button', class: 'link', title: j.id }, shortId(j.id))),
      el('td', {}, j.kind),
      el('td', {}, stateBadge(j.state)),
      el('td', { class: 'num' }, String(j.attempts)),
      el('td', { class: 'time', title: localTime(j.finished_at) }, fmtTime(j.finished_at)),
      el('td', { class: 'error-text', title: j.last_error || '' }, j.last_error || ''),
    );
  }

  /** Loads the first page (or the next one with `more`); `fromForm` applies the form's filter. */
  async function loadDeadLetters(more, fromForm) {
    if (fromForm) dl.filter = deadLetterFilterFromForm();
    const seq = more ? dl.seq : ++dl.seq;
    const page = await api('GET', `/v1/dead-letters${query({ ...dl.filter, limit: PAGE_SIZE, cursor: more ? dl.cursor : '' })}`, {
      scope: 'dlq:read',
      action: 'Listing dead letters',
    });
    if (seq !== dl.seq) return; // a newer listing replaced this one
    const tbody = $('dl-table').tBodies[0];
    if (!more) {
      tbody.replaceChildren();
      dl.count = 0;
    }
    for (const j of page.items || []) tbody.append(deadLetterRow(j));
    dl.count += (page.items || []).length;
    if (dl.count === 0) tbody.replaceChildren(emptyRow(6, 'No dead letters match this filter.'));
    dl.cursor = page.next_cursor || null;
    $('dl-more').hidden = !dl.cursor;
    $('dl-summary').textContent = `${dl.count} shown${dl.cursor ? ', more to load' : ''} · filter: ${describeFilter(dl.filter)}`;
  }

  function markSelected(tableId, id) {
    for (const tr of $(tableId).tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.id === id);
  }

  async function openDeadLetter(id) {
    dl.selected = id;
    markSelected('dl-table', id);
    const d = await api('GET', `/v1/dead-letters/${encodeURIComponent(id)}`, { scope: 'dlq:read', action: 'Loading the dead letter' });
    dl.detail = d;
    renderDeadLetter(d);
  }

  function jobLink(id) {
    return id ? el('button', { type: 'button', class: 'link', onclick: () => openJobFromElsewhere(id) }, id) : null;
  }

  function attemptItems(errors, lastError) {
    if (errors && errors.length) {
      return errors.map((a) =>
        el(
          'li',
          { dataset: { attempt: a.attempt } },
          el('div', { class: 'meta' }, `attempt ${a.attempt} · ${fmtTime(a.finished_at)}${a.worker ? ` · ${a.worker}` : ''}`),
          el('pre', { class: 'attempt-error' }, a.error),
        ),
      );
    }
    return [el('li', { class: 'muted' }, lastError ? el('pre', { class: 'attempt-error' }, lastError) : 'No failed attempt recorded.')];
  }

  function renderDeadLetter(d) {
    $('dl-detail').hidden = false;
    $('dl-detail-id').textContent = d.id;
    fieldList($('dl-detail-fields'), [
      ['state', stateBadge(d.state)],
      ['kind', d.kind],
      ['queue', d.queue],
      ['attempts', `${d.attempts}${d.max_attempts ? ` of ${d.max_attempts}` : ''}`],
      ['created', fmtTime(d.created_at)],
      ['died', fmtTime(d.finished_at)],
      ['replayed by', jobLink(d.replayed_by)],
      ['replay of', jobLink(d.replay_of)],
    ]);
    $('dl-attempts').replaceChildren(...attemptItems(d.errors, d.last_error));
    $('dl-payload').value = JSON.stringify(d.payload, null, 2);
    syncActions();
  }

  async function replayDeadLetter(edited) {
    const d = dl.detail;
    if (!d) return;
    let body = {};
    if (edited) {
      try {
        body = { payload: JSON.parse($('dl-payload').value) };
      } catch (e) {
        throw new Error(`The edited payload is not valid JSON: ${e.message}`);
      }
    }
    const r = await api('POST', `/v1/dead-letters/${encodeURIComponent(d.id)}/replay`, {
      body,
      scope: 'dlq:write',
      action: 'Replaying the dead letter',
    });
    await Promise.all([openDeadLetter(d.id), loadDeadLetters(false)]);
    showNotice(`Replayed dead letter ${d.id}${edited ? ' with the edited payload' : ''} as job ${r.id}.`);
  }

  async function discardDeadLetter() {
    const d = dl.detail;
    if (!d) return;
    if (!window.confirm(`Discard dead letter ${d.id} (${d.kind})?\n\nIt will never be replayed. The discard is audited.`)) return;
    await api('DELETE', `/v1/dead-letters/${encodeURIComponent(d.id)}`, { scope: 'dlq:write', action: 'Discarding the dead letter' });
    await Promise.all([openDeadLetter(d.id), loadDeadLetters(false)]);
    showNotice(`Discarded dead letter ${d.id}.`);
  }

  async function replayAllMatching() {
    // What the form shows is what gets replayed: apply it first, so the list and the
    // confirmation agree with it.
    await loadDeadLetters(false, true);
    const f = dl.filter;
    const shown = `${dl.count}${dl.cursor ? ' or more' : ''}`;
    if (!window.confirm(`Replay every dead letter matching this filter?\n\nFilter: ${describeFilter(f)}\n(${shown} listed now.) The replay is audited.`)) return;
    const r = await api('POST', '/v1/dead-letters/replay', { body: f, scope: 'dlq:write', action: 'Replaying all matching dead letters' });
    await loadDeadLetters(false);
    if (dl.detail) await openDeadLetter(dl.detail.id);
    showNotice(`Replayed ${r.replayed} dead letter${r.replayed === 1 ? '' : 's'} matching: ${describeFilter(f)}.`);
  }

  // ---- jobs ----

  const jobs = { filter: {}, cursor: null, count: 0, seq: 0, selected: null, detail: null };

  function jobFilterFromForm() {
    const f = {};
    for (const name of ['kind', 'queue', 'state']) {
      const v = $(`jobs-${name}`).value.trim();
      if (v) f[name] = v;
    }
    return f;
  }

  function jobRow(j) {
    return el(
      'tr',
      { class: `clickable${j.id === jobs.selected ? ' selected' : ''}`, dataset: { id: j.id }, onclick: () => act(null, () => openJob(j.id)) },
      el('td', { class: 'id' }, el('button', { type: 'button', class: 'link', title: j.id }, shortId(j.id))),
      el('td', {}, j.kind),
      el('td', {}, j.queue),
      el('td', {}, stateBadge(j.state)),
      el('td', { class: 'num' }, String(j.attempts)),
      el('td', { class: 'time', title: localTime(j.created_at) }, fmtTime(j.created_at)),
      el('td', { class: 'error-text', title: j.last_error || '' }, j.last_error || ''),
    );
  }

  async function loadJobs(more, fromForm) {
    if (fromForm) jobs.filter = jobFilterFromForm();
    const seq = more ? jobs.seq : ++jobs.seq;
    const page = await api('GET', `/v1/jobs${query({ ...jobs.filter, limit: PAGE_SIZE, cursor: more ? jobs.cursor : '' })}`, {
      scope: 'jobs:read',
      action: 'Listing jobs',
    });
    if (seq !== jobs.seq) return;
    const tbody = $('jobs-table').tBodies[0];
    if (!more) {
      tbody.replaceChildren();
      jobs.count = 0;
    }
    for (const j of page.items || []) tbody.append(jobRow(j));
    jobs.count += (page.items || []).length;
    if (jobs.count === 0) tbody.replaceChildren(emptyRow(7, 'No jobs match this filter.'));
    jobs.cursor = page.next_cursor || null;
    $('jobs-more').hidden = !jobs.cursor;
    const f = Object.entries(jobs.filter).map(([k, v]) => `${k} = "${v}"`);
    $('jobs-summary').textContent = `${jobs.count} shown${jobs.cursor ? ', more to load' : ''} · filter: ${f.length ? f.join(', ') : 'none'}`;
  }

  async function openJob(id) {
    jobs.selected = id;
    markSelected('jobs-table', id);
    const j = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`, { scope: 'jobs:read', action: 'Loading the job' });
    renderJob(j);
  }

  function renderJob(j) {
    jobs.detail = j;
    $('job-detail').hidden = false;
    $('job-detail-id').textContent = j.id;
    fieldList($('job-detail-fields'), [
      ['state', stateBadge(j.state)],
      ['kind', j.kind],
      ['queue', j.queue],
      ['attempts', `${j.attempts}${j.max_attempts ? ` of ${j.max_attempts}` : ''}`],
      ['created', fmtTime(j.created_at)],
      ['due', fmtTime(j.run_at)],
      ['started', j.started_at ? fmtTime(j.started_at) : null],
      ['finished', j.finished_at ? fmtTime(j.finished_at) : null],
      ['replayed by', jobLink(j.replayed_by)],
      ['replay of', jobLink(j.replay_of)],
    ]);
    $('job-attempts').replaceChildren(...attemptItems(j.errors, j.last_error));
    $('job-result').textContent = j.result === null || j.result === undefined ? '—' : JSON.stringify(j.result, null, 2);
    syncActions();
  }

  async function cancelJob() {
    const j = jobs.detail;
    if (!j) return;
    if (!window.confirm(`Cancel job ${j.id} (${j.kind}, ${j.state})?\n\nIt will not run. The cancellation is audited.`)) return;
    const after = await api('POST', `/v1/jobs/${encodeURIComponent(j.id)}/cancel`, { scope: 'jobs:write', action: 'Cancelling the job' });
    renderJob(after);
    await loadJobs(false);
    showNotice(`Cancelled job ${j.id}.`);
  }

  function jobsOnQueue(name) {
    $('jobs-kind').value = '';
    $('jobs-state').value = '';
    $('jobs-queue').value = name;
    loaded.delete('jobs'); // the view applies the form when it opens
    show('jobs');
  }

  function openJobFromElsewhere(id) {
    show('jobs');
    act(null, () => openJob(id));
  }

  // ---- entering and forgetting the key ----

  function enter() {
    $('key-form').hidden = true;
    $('key-state').hidden = false;
    $('tabs').hidden = false;
    $('intro').hidden = true;
    show(current);
  }

  function forget() {
    forgetStoredKey();
    hideError();
    hideNotice();
    for (const id of ['queues-table', 'dl-table', 'jobs-table']) $(id).tBodies[0].replaceChildren();
    for (const id of ['dl-detail', 'job-detail', 'dl-more', 'jobs-more', 'tabs', 'key-state']) $(id).hidden = true;
    for (const name of VIEWS) $(`view-${name}`).hidden = true;
    $('dl-payload').value = '';
    $('dl-summary').textContent = '';
    $('jobs-summary').textContent = '';
    $('queues-updated').textContent = 'not loaded yet';
    Object.assign(dl, { cursor: null, count: 0, selected: null, detail: null });
    Object.assign(jobs, { cursor: null, count: 0, selected: null, detail: null });
    dl.seq += 1;
    jobs.seq += 1;
    loaded.clear();
    // The next key starts afresh: on the queues, with empty filters.
    current = 'queues';
    $('dl-filter').reset();
    $('jobs-filter').reset();
    $('intro').hidden = false;
    $('key-form').hidden = false;
    $('key-input').value = '';
    $('key-input').focus();
  }

  function init() {
    $('key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const key = $('key-input').value.trim();
      if (!key) return;
      try {
        sessionStorage.setItem(KEY_STORAGE, key);
      } catch {
        showError(new Error('This browser does not allow session storage for this page; the console needs it to hold the key.'));
        return;
      }
      $('key-input').value = '';
      enter();
    });
    $('forget-key').addEventListener('click', forget);
    for (const b of $('tabs').querySelectorAll('button')) b.addEventListener('click', () => show(b.dataset.view));

    $('dl-filter').addEventListener('submit', (e) => {
      e.preventDefault();
      act(e.submitter, () => loadDeadLetters(false, true));
    });
    $('dl-more').addEventListener('click', (e) => act(e.currentTarget, () => loadDeadLetters(true)));
    $('dl-replay').addEventListener('click', (e) => act(e.currentTarget, () => replayDeadLetter(false)));
    $('dl-replay-edited').addEventListener('click', (e) => act(e.currentTarget, () => replayDeadLetter(true)));
    $('dl-discard').addEventListener('click', (e) => act(e.currentTarget, discardDeadLetter));
    $('dl-replay-all').addEventListener('click', (e) => act(e.currentTarget, replayAllMatching));

    $('jobs-filter').addEventListener('submit', (e) => {
      e.preventDefault();
      act(e.submitter, () => loadJobs(false, true));
    });
    $('jobs-more').addEventListener('click', (e) => act(e.currentTarget, () => loadJobs(true)));
    $('job-cancel').addEventListener('click', (e) => act(e.currentTarget, cancelJob));

    window.setInterval(tick, REFRESH_MS);
    document.addEventListener('visibilitychange', tick);
    if (readKey()) enter();
    else $('key-input').focus();
  }

  init();
})();
