// Preference labelling front end. Vanilla JS, no build step; served under `default-src 'self'`.
// All user and model text goes through textContent. The bearer token lives in sessionStorage.
'use strict';

(() => {
  const TOKEN_KEY = 'rlhf-label-token';
  const $ = (sel) => document.querySelector(sel);

  const state = {
    token: null,
    user: null,
    task: null, // the current GET /api/task answer (not done)
    order: [], // response ids, top = best
    ties: [], // ties[i]: the response at position i is tied with the one at i + 1
    cards: new Map(), // response id -> <li>
    letters: new Map(), // response id -> stable letter for this item (A, B, …)
    busy: false,
    guidelinesDirty: false,
  };

  // ---- helpers ---------------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    e.append(...children); // strings become text nodes, never HTML
    return e;
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (state.token && path !== '/api/login') headers.Authorization = `Bearer ${state.token}`;
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new Error('Cannot reach the server. Check your connection and try again.');
    }
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) {
      const err = new Error((data && data.error) || `Request failed: ${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function showError(message) {
    Object.assign($('#error'), { textContent: message, hidden: false });
  }
  function clearError() {
    Object.assign($('#error'), { textContent: '', hidden: true });
  }
  function announce(message) { $('#status').textContent = message; }

  // Runs an async action, reporting failures; an expired session goes back to sign-in.
  async function guarded(fn) {
    try {
      await fn();
    } catch (err) {
      if (err.status === 401 && state.token) {
        signOut();
        showError(`${err.message} — please sign in again.`);
      } else {
        showError(err.message);
      }
    }
  }

  function show(view) {
    for (const id of ['login', 'task', 'all-done', 'admin']) $(`#${id}`).hidden = id !== view;
    const admin = state.user && state.user.role === 'admin';
    $('#nav').hidden = !admin;
    $('#user').hidden = !state.user;
    $('#nav-label').setAttribute('aria-current', String(view === 'task' || view === 'all-done'));
    $('#nav-admin').setAttribute('aria-current', String(view === 'admin'));
  }

  // ---- sign-in ---------------------------------------------------------------------------------

  async function signIn(token) {
    const user = await api('POST', '/api/login', { token });
    state.token = token;
    state.user = user;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#whoami').textContent = `${user.name} · ${user.role}`;
    $('#token').value = '';
    clearError();
    if (user.role === 'admin') await loadAdmin();
    else await loadTask();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(state, { token: null, user: null, task: null });
    show('login');
    $('#token').focus();
  }

  // ---- the task --------------------------------------------------------------------------------

  function setProgress(p) {
    const text = p ? `${p.done} / ${p.total} done` : '';
    $('#progress').textContent = text;
    $('#done-progress').textContent = text;
    $('#progress-bar').style.width = p && p.total ? `${Math.min(100, (100 * p.done) / p.total)}%` : '0';
  }

  async function loadTask() {
    const t = await api('GET', '/api/task');
    setProgress(t.progress);
    if (t.done) {
      state.task = null;
      show('all-done');
      return;
    }
    state.task = t;
    state.order = t.responses.map((r) => r.id);
    state.ties = state.order.slice(1).map(() => false);
    $('#task').dataset.assignment = t.assignment;
    $('#task').dataset.item = t.item;
    $('#prompt').textContent = t.prompt;
    $('#guidelines-text').textContent = t.guidelines || 'No guidelines have been written yet.';
    $('#comment').value = '';
    buildCards(t.responses);
    show('task');
    window.scrollTo(0, 0);
    if (state.order.length) state.cards.get(state.order[0]).focus({ preventScroll: true });
  }

  function buildCards(responses) {
    state.cards.clear();
    state.letters.clear();
    const items = responses.map((r, i) => {
      const letter = i < 26 ? String.fromCharCode(65 + i) : String(i + 1);
      state.letters.set(r.id, letter);
      const grip = el('div', { class: 'grip', title: 'Drag to reorder' },
        el('span', { class: 'rank' }, el('span', { class: 'visually-hidden', text: 'Rank ' }), el('span', { class: 'rank-num' })),
        el('span', { class: 'dots', 'aria-hidden': 'true', text: '⠿' }));
      const body = el('div', { class: 'body' },
        el('div', { class: 'label', text: `Response ${letter}` }),
        el('div', { class: 'text pre', text: r.text }));
      const tie = el('button', { type: 'button', class: 'tie-toggle', 'aria-pressed': 'false' });
      const li = el('li', { class: 'response', 'data-id': String(r.id), tabindex: '0', 'aria-describedby': 'card-help' },
        grip, body, tie);
      state.cards.set(r.id, li);
      return li;
    });
    $('#responses').replaceChildren(...items);
    render();
  }

  // Puts the cards in state order and refreshes rank numbers, tie toggles and brackets.
  function render() {
    const list = $('#responses');
    const focused = document.activeElement;
    const n = state.order.length;
    let rank = 0;
    state.order.forEach((id, i) => {
      const li = state.cards.get(id);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
      const up = i > 0 && state.ties[i - 1];
      const down = i < n - 1 && state.ties[i];
      if (!up) rank += 1;
      li.querySelector('.rank-num').textContent = String(rank);
      li.classList.toggle('tied-up', up);
      li.classList.toggle('tied-down', down);
      const tie = li.querySelector('.tie-toggle');
      tie.hidden = i === n - 1;
      tie.setAttribute('aria-pressed', String(down));
      tie.textContent = down ? '= tied' : 'tie';
      if (i < n - 1) {
        const next = state.letters.get(state.order[i + 1]);
        tie.setAttribute('aria-label', `Tie response ${state.letters.get(id)} with response ${next}`);
        tie.title = down ? 'Tied: click to rank separately (t)' : 'Click to rank these two equally (t)';
      }
    });
    if (focused && focused !== document.activeElement && list.contains(focused)) focused.focus({ preventScroll: true });
  }

  const tierEnd = (p) => { while (p < state.ties.length && state.ties[p]) p += 1; return p; };
  const tierStart = (p) => { while (p > 0 && state.ties[p - 1]) p -= 1; return p; };

  // Moves the response at position `from` to position `to`. Inside its own tier it just reorders.
  // Otherwise it leaves its tier and lands at `to`: inside another tier it joins it, else it is
  // ranked on its own.
  function moveTo(from, to) {
    const { order, ties } = state;
    const n = order.length;
    to = Math.max(0, Math.min(n - 1, to));
    if (from === to) return false;
    const [id] = order.splice(from, 1);
    if (tierStart(Math.min(from, to)) === tierStart(Math.max(from, to))) {
      order.splice(to, 0, id);
      return true;
    }
    if (from === 0) ties.splice(0, 1);
    else if (from === n - 1) ties.splice(n - 2, 1);
    else ties.splice(from - 1, 2, ties[from - 1] && ties[from]);
    order.splice(to, 0, id);
    if (to === 0) ties.unshift(false);
    else if (to === n - 1) ties.push(false);
    else ties.splice(to - 1, 1, ties[to - 1], ties[to - 1]);
    return true;
  }

  // One step up or down: within a tier swap with the neighbour, else step over the whole next tier.
  function step(pos, dir) {
    if (dir > 0) {
      if (pos >= state.order.length - 1) return pos;
      return state.ties[pos] ? pos + 1 : tierEnd(pos + 1);
    }
    if (pos <= 0) return pos;
    return state.ties[pos - 1] ? pos - 1 : tierStart(pos - 1);
  }

  function describe(id) {
    const pos = state.order.indexOf(id);
    const tied = (pos > 0 && state.ties[pos - 1]) || state.ties[pos];
    const rank = state.cards.get(id).querySelector('.rank-num').textContent;
    return `Response ${state.letters.get(id)} is at position ${pos + 1} of ${state.order.length}, rank ${rank}${tied ? ' (tied)' : ''}.`;
  }

  function moveCard(id, to) {
    if (moveTo(state.order.indexOf(id), to)) {
      render();
      announce(describe(id));
    }
    state.cards.get(id).focus();
  }

  function toggleTie(pos) {
    if (pos < 0 || pos >= state.ties.length) {
      announce('There is no response below to tie with.');
      return;
    }
    state.ties[pos] = !state.ties[pos];
    render();
    const [a, b] = [state.order[pos], state.order[pos + 1]].map((id) => state.letters.get(id));
    announce(state.ties[pos] ? `Responses ${a} and ${b} are tied.` : `Responses ${a} and ${b} are ranked separately.`);
  }

  function rankingTiers() {
    const tiers = [];
    state.order.forEach((id, i) => {
      if (i > 0 && state.ties[i - 1]) tiers[tiers.length - 1].push(id);
      else tiers.push([id]);
    });
    return tiers;
  }

  function onCardKey(e) {
    const li = e.target;
    if (!li.classList || !li.classList.contains('response') || e.ctrlKey || e.metaKey) return;
    const id = Number(li.dataset.id);
    const pos = state.order.indexOf(id);
    const key = e.key;
    const up = key === 'ArrowUp' || key === 'k' || key === 'K';
    const down = key === 'ArrowDown' || key === 'j' || key === 'J';
    if ((up || down) && (e.altKey || (e.shiftKey && key.startsWith('Arrow')))) {
      moveCard(id, step(pos, down ? 1 : -1));
    } else if ((up || down) && !e.altKey && !e.shiftKey) {
      const next = state.order[pos + (down ? 1 : -1)];
      if (next !== undefined) state.cards.get(next).focus();
    } else if (key === 'Home' || key === 'End') {
      state.cards.get(state.order[key === 'Home' ? 0 : state.order.length - 1]).focus();
    } else if ((key === 't' || key === 'T') && !e.altKey) {
      toggleTie(pos);
    } else if (/^[1-9]$/.test(key) && !e.altKey) {
      const to = Number(key) - 1;
      if (to >= state.order.length) announce(`There are only ${state.order.length} responses.`);
      else moveCard(id, to);
    } else {
      return;
    }
    e.preventDefault();
  }

  // ---- dragging with pointer events (mouse, pen, touch) ----------------------------------------

  let drag = null;

  function onPointerDown(e) {
    const grip = e.target.closest('.grip');
    if (!grip || (e.pointerType === 'mouse' && e.button !== 0) || state.busy) return;
    const li = grip.closest('.response');
    e.preventDefault();
    li.focus({ preventScroll: true });
    grip.setPointerCapture(e.pointerId);
    const rect = li.getBoundingClientRect();
    drag = { li, grip, pointerId: e.pointerId, startY: e.clientY, offsetY: e.clientY - rect.top, started: false, placeholder: null };
  }

  function startDrag() {
    const { li } = drag;
    const rect = li.getBoundingClientRect();
    drag.placeholder = el('li', { class: 'placeholder', 'aria-hidden': 'true' });
    drag.placeholder.style.height = `${rect.height}px`;
    li.after(drag.placeholder);
    li.classList.add('dragging');
    Object.assign(li.style, { left: `${rect.left}px`, width: `${rect.width}px`, top: `${rect.top}px` });
    document.body.classList.add('is-dragging');
    drag.started = true;
  }

  function onPointerMove(e) {
    if (!drag || e.pointerId !== drag.pointerId) return;
    if (!drag.started) {
      if (Math.abs(e.clientY - drag.startY) < 4) return;
      startDrag();
    }
    drag.li.style.top = `${e.clientY - drag.offsetY}px`;
    if (e.clientY < 48) window.scrollBy(0, -16);
    else if (e.clientY > window.innerHeight - 48) window.scrollBy(0, 16);
    const others = [...$('#responses').children].filter((c) => c.classList.contains('response') && c !== drag.li);
    const before = others.find((c) => {
      const r = c.getBoundingClientRect();
      return e.clientY < r.top + r.height / 2;
    });
    if (before) {
      if (drag.placeholder.nextElementSibling !== before) before.before(drag.placeholder);
    } else if ($('#responses').lastElementChild !== drag.placeholder) {
      $('#responses').append(drag.placeholder);
    }
  }

  function endDrag(e, commit) {
    if (!drag || e.pointerId !== drag.pointerId) return;
    const { li, placeholder, started } = drag;
    drag = null;
    if (!started) return;
    const to = [...$('#responses').children].filter((c) => c.classList.contains('response') && c !== li)
      .indexOf(placeholder.nextElementSibling);
    placeholder.remove();
    li.classList.remove('dragging');
    li.style.left = li.style.width = li.style.top = '';
    document.body.classList.remove('is-dragging');
    const id = Number(li.dataset.id);
    if (commit) moveCard(id, to < 0 ? state.order.length - 1 : to);
    else render();
  }

  // ---- actions ---------------------------------------------------------------------------------

  function setBusy(busy) {
    state.busy = busy;
    $('#task').setAttribute('aria-busy', String(busy));
    for (const id of ['submit', 'skip', 'flag-unsafe', 'flag-broken']) $(`#${id}`).disabled = busy;
  }

  async function act(body, done) {
    if (state.busy || !state.task) return;
    const comment = $('#comment').value.trim();
    if (comment) body.comment = comment;
    setBusy(true);
    await guarded(async () => {
      try {
        const r = await api('POST', `/api/assignments/${state.task.assignment}`, body);
        clearError();
        announce(`${done}${r && r.duplicate ? ' (it was already stored)' : ''}. Loading the next item…`);
      } catch (err) {
        if (err.status !== 404 && err.status !== 409) throw err;
        showError(`${err.message} — loading your current item.`); // stale page: another tab answered
      }
      await loadTask();
      if ($('#error').hidden) announce(state.task ? `${done}. Next item loaded.` : `${done}. Your queue is empty.`);
    });
    setBusy(false);
  }

  const submit = () => act({ action: 'submit', ranking: rankingTiers() }, 'Ranking saved');
  const skip = () => act({ action: 'skip' }, 'Item skipped');
  const flag = (kind) => act({ action: 'flag', flag: kind }, `Item flagged as ${kind}`);

  // ---- admin -----------------------------------------------------------------------------------

  const fmt = (x, digits = 3) => (x === null || x === undefined ? 'n/a' : Number(x).toFixed(digits));
  const pct = (x) => (x === null || x === undefined ? 'n/a' : `${(100 * x).toFixed(1)}%`);

  function fillTable(selector, rows, columns, empty) {
    const body = $(`${selector} tbody`);
    if (!rows.length) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: String(columns.length), class: 'empty', text: empty })));
      return;
    }
    body.replaceChildren(...rows.map((row) => el('tr', {}, ...columns.map(([get, cls]) => {
      const v = get(row);
      return el('td', { class: `${cls || ''}${v === 'n/a' ? ' na' : ''}`, text: String(v) });
    }))));
  }

  async function loadAdmin() {
    const [s, g] = await Promise.all([api('GET', '/api/admin/summary'), api('GET', '/api/guidelines')]);
    const it = s.items;
    $('#stat-total').textContent = it.total;
    $('#stat-complete').textContent = it.complete;
    $('#stat-progress').textContent = it.in_progress;
    $('#stat-flagged').textContent = it.flagged;
    $('#items-bar').style.width = it.total ? `${(100 * it.complete) / it.total}%` : '0';
    $('#items-bar-open').style.width = it.total ? `${(100 * it.in_progress) / it.total}%` : '0';
    fillTable('#annotators', s.annotators, [
      [(a) => a.name], [(a) => a.role], [(a) => a.done, 'n'], [(a) => a.skipped, 'n'], [(a) => a.flagged, 'n'], [(a) => a.open, 'n'],
    ], 'No annotators yet.');
    const ag = s.agreement;
    $('#alpha').textContent = fmt(ag.alpha_ordinal);
    $('#overlap').textContent = ag.items_with_overlap;
    fillTable('#pairs', ag.pairs, [
      [(p) => p.a], [(p) => p.b], [(p) => p.shared_items, 'n'], [(p) => p.comparisons, 'n'], [(p) => fmt(p.kappa), 'n'],
      [(p) => pct(p.raw_agreement), 'n'],
    ], 'No two annotators have ranked the same item yet.');
    fillTable('#majority', ag.per_annotator, [
      [(p) => p.annotator], [(p) => p.compared, 'n'], [(p) => pct(p.agreement_with_majority), 'n'],
    ], 'Needs items ranked by three or more annotators.');
    if (!state.guidelinesDirty) $('#guidelines-editor').value = g.text;
    show('admin');
  }

  async function saveGuidelines() {
    const button = $('#save-guidelines');
    button.disabled = true;
    await guarded(async () => {
      await api('PUT', '/api/guidelines', { text: $('#guidelines-editor').value });
      state.guidelinesDirty = false;
      clearError();
      announce('Guidelines saved.');
    });
    button.disabled = false;
  }

  // ---- wiring ----------------------------------------------------------------------------------

  function init() {
    $('#login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('#token').value.trim();
      if (!token) {
        showError('Enter your access token.');
        return;
      }
      $('#sign-in').disabled = true;
      guarded(() => signIn(token)).finally(() => { $('#sign-in').disabled = false; });
    });
    $('#sign-out').addEventListener('click', () => { clearError(); announce('Signed out.'); signOut(); });
    $('#nav-label').addEventListener('click', () => guarded(loadTask));
    $('#nav-admin').addEventListener('click', () => guarded(loadAdmin));
    $('#refresh').addEventListener('click', () => guarded(async () => { await loadAdmin(); announce('Refreshed.'); }));
    $('#check-again').addEventListener('click', () => guarded(loadTask));
    $('#save-guidelines').addEventListener('click', saveGuidelines);
    $('#guidelines-editor').addEventListener('input', () => { state.guidelinesDirty = true; });

    $('#submit').addEventListener('click', submit);
    $('#skip').addEventListener('click', skip);
    $('#flag-unsafe').addEventListener('click', () => flag('unsafe'));
    $('#flag-broken').addEventListener('click', () => flag('broken'));

    const list = $('#responses');
    list.addEventListener('keydown', onCardKey);
    list.addEventListener('click', (e) => {
      const tie = e.target.closest('.tie-toggle');
      if (tie) toggleTie(state.order.indexOf(Number(tie.closest('.response').dataset.id)));
    });
    list.addEventListener('pointerdown', onPointerDown);
    list.addEventListener('pointermove', onPointerMove);
    list.addEventListener('pointerup', (e) => endDrag(e, true));
    list.addEventListener('pointercancel', (e) => endDrag(e, false));
    list.addEventListener('lostpointercapture', (e) => endDrag(e, false));

    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && drag) {
        const { grip, pointerId } = drag;
        endDrag({ pointerId }, false); // put the card back where it was
        if (grip.hasPointerCapture(pointerId)) grip.releasePointerCapture(pointerId);
      } else if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('#task').hidden) {
        e.preventDefault();
        submit();
      }
    });

    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) {
      signIn(saved).catch(() => {
        sessionStorage.removeItem(TOKEN_KEY);
        state.token = null;
        show('login');
      });
    } else {
      show('login');
      $('#token').focus();
    }
  }

  init();
})();
