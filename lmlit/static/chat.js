"use strict";
// Model text is untrusted. With the vendored libraries, markdown goes marked (raw HTML escaped to text) -> DOMPurify
// -> the page; without them, textContent only. Conversations and settings live in localStorage; errors are page state.
const $ = (id) => document.getElementById(id);
const log = $('log'), input = $('input'), scroller = $('scroller'), sendButton = $('send');
const STORE = 'lmlit.chat.v1';
let store = load();
let active = null;            // the one reply in flight: {controller, conv, answer, done (a promise)}
let follow = true;            // keep the view at the bottom while a reply streams, unless the user scrolled up
let context = null;           // the model's context length, from /v1/models
let retryAction = null;
const KEY = 'lmlit.chat.apikey';          // `lmlit serve --api-key`: kept for this tab only (sessionStorage)

function apiHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key} : {'Content-Type': 'application/json'};
}
function askForKey() {
  $('apikey-label').hidden = false;
  $('apikey').focus();
}

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE));
    if (saved && saved.conversations && typeof saved.conversations === 'object') return saved;
  } catch (e) { /* a broken store starts afresh */ }
  return {conversations: {}, order: [], current: null, settings: {}};
}
function save() {
  try { localStorage.setItem(STORE, JSON.stringify(store)); }
  catch (e) { showError('could not save the conversation in this browser (' + e.name + ')', null); }
}
function newConversation() {
  const id = 'c' + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
  store.conversations[id] = {id, title: 'New chat', messages: [], draft: ''};
  store.order.unshift(id);
  store.current = id;
  save();
  return store.conversations[id];
}
function current() { return store.conversations[store.current] || newConversation(); }

// ---- rendering model text
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const haveMarkdown = typeof window.marked !== 'undefined' && typeof window.DOMPurify !== 'undefined';
if (haveMarkdown) {
  marked.use({gfm: true, breaks: true, renderer: {html(token) { return escapeHtml(token.raw || token.text || ''); }}});
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') { node.setAttribute('target', '_blank'); node.setAttribute('rel', 'noopener noreferrer nofollow'); }
  });
}
const PURIFY = {FORBID_TAGS: ['img', 'svg', 'math', 'style', 'form', 'input', 'button', 'iframe', 'video', 'audio'],
                ALLOWED_URI_REGEXP: /^(?:[h]ttps?:|mailto:|#)/i};   // web links only, no javascript: or data: ([h]: the page names no URL, see test_serve)

function markdownInto(el, text) {
  if (!haveMarkdown) { const p = document.createElement('p'); p.className = 'plain'; p.textContent = text; el.appendChild(p); return; }
  const holder = document.createElement('div');
  holder.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
  holder.querySelectorAll('pre > code').forEach((code) => {
    if (window.hljs) { try { hljs.highlightElement(code); } catch (e) { /* unknown language: left plain */ } }
    const copy = button('Copy', 'copy-code', 'Copy code', () => copyText(code.textContent, copy));
    code.parentElement.appendChild(copy);
  });
  el.append(...holder.childNodes);
}

// An assistant message is a string or a list of parts {type: text|python|python_output, text}: the conversation format,
// which is what goes back to the server (it renders the parts as the model's own tokens). The stream brings the parts
// in each delta's `lmlit_parts` ({index, type, text[, closed]}: append text to part `index`; 07b documents it), so a
// tool call is never guessed from the text. A python part keeps `closed: false` while (or if) its call never ended.
function addPart(parts, d) {
  let part = parts[d.index];
  if (!part) {
    part = parts[d.index] = {type: d.type, text: ''};
    if (d.type === 'python') part.closed = false;
  }
  part.text += d.text;
  if (d.closed) part.closed = true;
}
function addText(parts, text) {          // a delta without parts (not lmlit serve): its text, as text
  const last = parts[parts.length - 1];
  addPart(parts, {index: last && last.type === 'text' ? parts.length - 1 : parts.length, type: 'text', text});
}
function contentOf(parts) {
  const present = parts.filter(Boolean);
  if (present.every((p) => p.type === 'text')) return present.map((p) => p.text).join('');
  return present.map((p) => (p.type === 'python' && !p.closed ? {type: p.type, text: p.text, closed: false} : {type: p.type, text: p.text}));
}
const MARKS = {python: ['<<', ''], python_output: ['=', '>>'], text: ['', '']};
function plainText(content) {            // what the model's text stream showed: <<expr=result>>
  if (typeof content === 'string') return content;
  return content.map((p) => (MARKS[p.type] || MARKS.text)[0] + p.text + ((MARKS[p.type] || MARKS.text)[1])).join('');
}

function toolBlock(part, result, live) {
  const block = document.createElement('div');
  block.className = 'toolcall';
  block.setAttribute('role', 'group');
  const label = document.createElement('span');
  label.className = 'label';
  const expr = document.createElement('code');
  expr.className = 'expr';
  expr.textContent = part.text;
  const outcome = document.createElement('span');
  outcome.className = 'result';
  if (result) { outcome.textContent = '= ' + result.text; block.dataset.state = 'result'; }
  else if (part.closed === false && live) { outcome.textContent = '…'; block.dataset.state = 'running'; }
  else if (part.closed === false) { outcome.textContent = 'unclosed: the reply ended inside this call'; block.dataset.state = 'unclosed'; }
  else { outcome.textContent = 'no result'; block.dataset.state = 'no-result'; }
  label.textContent = block.dataset.state === 'unclosed' ? 'unclosed tool call' : 'tool call';
  block.setAttribute('aria-label', label.textContent);
  block.append(label, expr, ' ', outcome);
  return block;
}

function renderContent(el, content, live = false) {
  el.replaceChildren();
  if (typeof content === 'string') { markdownInto(el, content); return; }
  content.forEach((part, i) => {
    if (!part) return;
    if (part.type === 'text') { markdownInto(el, part.text); return; }
    const next = content[i + 1];
    if (part.type === 'python') el.appendChild(toolBlock(part, next && next.type === 'python_output' ? next : null, live));
    else if (!(content[i - 1] && content[i - 1].type === 'python')) {     // a result with no call before it: shown alone
      el.appendChild(toolBlock({text: '', closed: true}, part, live));
    }
  });
}

function button(text, className, label, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.className = className;
  b.setAttribute('aria-label', label);
  b.onclick = onclick;
  return b;
}
async function copyText(text, b) {
  try { await navigator.clipboard.writeText(text); }
  catch (e) {
    const area = document.createElement('textarea');
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  const was = b.textContent;
  b.textContent = 'Copied';
  setTimeout(() => { b.textContent = was; }, 1200);
}

function statsText(stats) {
  if (!stats) return '';
  const rate = stats.seconds > 0 ? (stats.tokens / stats.seconds).toFixed(1) : '–';
  return `${stats.tokens} tokens · ${rate} tok/s · stopped: ${stats.finish || '?'}`;
}

function messageView(conv, m, i) {
  const div = document.createElement('div');
  div.className = 'msg ' + m.role;
  div.dataset.index = i;
  const body = document.createElement('div');
  body.className = 'body';
  if (m.role === 'user') body.textContent = m.content; else renderContent(body, m.content);
  const tools = document.createElement('div');
  tools.className = 'tools';
  tools.appendChild(button('Copy', 'copy', m.role === 'user' ? 'Copy this message' : 'Copy this reply',
                           (ev) => copyText(plainText(m.content), ev.target)));
  if (m.role === 'user') tools.appendChild(button('Edit', 'edit', 'Edit this message and resend', () => editFrom(conv, i)));
  else if (i === conv.messages.length - 1) tools.appendChild(button('Regenerate', 'regenerate', 'Regenerate this reply', regenerate));
  if (m.role === 'assistant') {
    const stats = document.createElement('span');
    stats.className = 'stats';
    stats.textContent = statsText(m.stats);
    tools.appendChild(stats);
  }
  div.append(body, tools);
  return div;
}

function redraw() {
  const conv = current();
  log.replaceChildren(...conv.messages.map((m, i) => messageView(conv, m, i)));
  if (active && active.conv === conv) {
    const view = messageView(conv, active.answer, conv.messages.length);
    view.classList.add('streaming');
    view.querySelector('.tools').replaceChildren(button('Regenerate', 'regenerate', 'Stop and regenerate this reply', regenerate));
    active.body = view.querySelector('.body');
    log.appendChild(view);
  }
  drawList();
  keepBottom();
}
function drawList() {
  const list = $('chats');
  list.replaceChildren(...store.order.map((id) => {
    const conv = store.conversations[id];
    const li = document.createElement('li');
    li.setAttribute('aria-current', id === store.current ? 'true' : 'false');
    const open = button(conv.title, 'open', 'Open conversation: ' + conv.title, () => switchTo(id));
    const del = button('✕', 'delete', 'Delete conversation: ' + conv.title, () => removeConversation(id));
    li.append(open, del);
    return li;
  }));
}
function keepBottom() { if (follow) scroller.scrollTop = scroller.scrollHeight; }
scroller.addEventListener('scroll', () => { follow = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40; });

// ---- page state: busy/idle, errors
function setBusy(busy) {
  document.body.dataset.idle = busy ? '' : '1';
  sendButton.textContent = busy ? 'Stop' : 'Send';
  sendButton.classList.toggle('stop', busy);
  sendButton.setAttribute('aria-label', busy ? 'Stop the reply' : 'Send the message');
  setStatus(busy ? 'busy' : 'ok', busy ? 'generating…' : 'ready');
}
function setStatus(state, text) { const s = $('status'); s.dataset.state = state; s.textContent = text; }
function showError(text, retry) {
  $('alert-text').textContent = text;
  retryAction = retry;
  $('retry').hidden = !retry;
  $('alert').hidden = false;
  keepBottom();
}
function clearError() { $('alert').hidden = true; retryAction = null; }
$('retry').onclick = () => { const action = retryAction; clearError(); if (action) action(); };

// ---- settings, bounded by the model's context
function setting(id, fallback) { const v = parseFloat($(id).value); return Number.isFinite(v) ? v : fallback; }
function maxTokens() {
  let n = Math.max(1, Math.round(setting('maxtokens', 256)));
  if (context) n = Math.min(n, context - 1);
  return n;
}
['temperature', 'topk', 'maxtokens'].forEach((id) => {
  if (store.settings[id] !== undefined) $(id).value = store.settings[id];
  $(id).addEventListener('change', () => {
    if (id === 'maxtokens') $(id).value = maxTokens();
    store.settings[id] = $(id).value;
    save();
  });
});

// ---- one reply at a time
async function abortActive() {
  if (!active) return;
  const running = active;
  running.controller.abort();
  await running.done;
}

function readSSE(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return (async () => {
    while (true) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (line.startsWith('data: ') && line !== 'data: [DONE]') onEvent(JSON.parse(line.slice(6)));
      }
    }
  })();
}

function apiMessages(messages) {
  // stats and other page fields stay here; tool parts go back as {type, text}: the server renders the model's tokens
  const wire = (content) => (typeof content === 'string' ? content : content.map((p) => ({type: p.type, text: p.text})));
  return messages.map((m) => ({role: m.role, content: wire(m.content)}));
}

async function reply() {
  while (active) await abortActive();      // after this loop nothing is in flight, and `active = me` follows at once
  clearError();
  const conv = current();
  const controller = new AbortController();
  const answer = {role: 'assistant', content: ''};
  let finish = null, usageTokens = null, chunks = 0, first = null;
  const parts = [];
  let resolveDone;
  const me = {controller, conv, answer, body: null, done: new Promise((r) => { resolveDone = r; })};
  active = me;
  follow = true;
  setBusy(true);
  redraw();
  let pending = false;
  const paint = () => {
    pending = false;
    if (active !== me || !me.body) return;
    renderContent(me.body, contentOf(parts), true);
    keepBottom();
  };
  let failure = null;
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST', headers: apiHeaders(), signal: controller.signal,
      body: JSON.stringify({messages: apiMessages(conv.messages), stream: true, stream_options: {include_usage: true},
                            temperature: setting('temperature', 0.6), top_k: Math.round(setting('topk', 50)),
                            max_tokens: maxTokens()})});
    if (!res.ok) {
      let message = `the server answered ${res.status}`;
      try { message = (await res.json()).error.message || message; } catch (e) { /* not JSON */ }
      failure = message;
      if (res.status === 401) { failure = 'This server needs its API key: type it in the API key field, then Retry. (' + message + ')'; askForKey(); }
    } else {
      await readSSE(res, (chunk) => {
        if (chunk.usage && chunk.usage.completion_tokens !== undefined) usageTokens = chunk.usage.completion_tokens;
        const choice = (chunk.choices || [])[0];
        if (!choice) return;
        const delta = choice.delta || {};
        if (delta.content || (delta.lmlit_parts && delta.lmlit_parts.length)) {
          if (first === null) first = performance.now();
          if (delta.content) chunks += 1;
          if (delta.lmlit_parts) delta.lmlit_parts.forEach((d) => addPart(parts, d));
          else addText(parts, delta.content);
          if (!pending) { pending = true; requestAnimationFrame(paint); }
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      });
    }
  } catch (e) {
    if (e.name !== 'AbortError') failure = 'connection to the server lost (' + e.message + ')';
  }
  const stopped = controller.signal.aborted;
  if (active === me) {
    active = null;
    if (failure) {
      showError(failure, reply);
      if (!$('apikey-label').hidden && failure.startsWith('This server needs')) $('apikey').focus();          // the conversation is unchanged: Retry asks again
    } else if (parts.length || !stopped) {
      answer.content = contentOf(parts);
      answer.stats = {tokens: usageTokens ?? chunks, seconds: first === null ? 0 : (performance.now() - first) / 1000,
                      finish: stopped ? 'by you' : finish};
      conv.messages.push(answer);
      save();
    }
    setBusy(false);
    redraw();
    input.focus();
  }
  resolveDone();
}

function titleOf(text) { const t = text.replace(/\s+/g, ' ').trim(); return t.length > 40 ? t.slice(0, 40) + '…' : t; }

async function send() {
  const text = input.value.trim();
  if (!text) return;
  await abortActive();
  const conv = current();
  conv.messages.push({role: 'user', content: text});
  if (conv.title === 'New chat') conv.title = titleOf(text);
  input.value = '';
  conv.draft = '';
  save();
  input.focus();
  reply();
}
async function regenerate() {
  await abortActive();
  const conv = current();
  if (conv.messages.length && conv.messages[conv.messages.length - 1].role === 'assistant') conv.messages.pop();
  save();
  reply();
}
async function editFrom(conv, i) {
  await abortActive();
  input.value = conv.messages[i].content;
  conv.messages = conv.messages.slice(0, i);
  if (i === 0) conv.title = 'New chat';          // named again by the question that replaces it
  conv.draft = input.value;
  save();
  clearError();
  redraw();
  input.focus();
}
async function switchTo(id) {
  await abortActive();
  current().draft = input.value;
  store.current = id;
  input.value = current().draft || '';
  save();
  clearError();
  document.body.classList.remove('show-chats');
  follow = true;
  redraw();
  input.focus();
}
async function removeConversation(id) {
  const conv = store.conversations[id];
  if (!confirm(`Delete the conversation "${conv.title}"?`)) return;
  if (active && active.conv === conv) await abortActive();
  delete store.conversations[id];
  store.order = store.order.filter((k) => k !== id);
  if (store.current === id) store.current = store.order[0] || null;
  input.value = current().draft || '';
  save();
  redraw();
}

$('form').onsubmit = (ev) => {
  ev.preventDefault();
  if (active) { abortActive(); return; }       // the button is Stop while generating (Enter still sends, replacing the reply)
  send();
};
input.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
});
input.addEventListener('input', () => { current().draft = input.value; save(); });
document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && active) { ev.preventDefault(); abortActive(); } });
$('new').onclick = async () => {
  await abortActive();
  current().draft = input.value;
  const conv = current();
  if (conv.messages.length || conv.draft) newConversation();
  input.value = '';
  clearError();
  redraw();
  input.focus();
};
$('apikey').addEventListener('change', () => { sessionStorage.setItem(KEY, $('apikey').value.trim()); checkServer(); });
if (sessionStorage.getItem(KEY)) $('apikey-label').hidden = false;
$('chats-toggle').onclick = () => document.body.classList.toggle('show-chats');
window.addEventListener('beforeunload', (ev) => { if (input.value.trim()) { ev.preventDefault(); ev.returnValue = ''; } });

// ---- the server: is it up, which model, what context
async function checkServer() {
  try {
    const health = await fetch('/health', {cache: 'no-store'});
    if (!health.ok) throw new Error('status ' + health.status);
    setStatus('ok', 'ready');
  } catch (e) {
    setStatus('down', 'server down');
    showError('The lmlit server is not reachable (' + e.message + '). Is `lmlit serve` still running?', checkServer);
    return;
  }
  try {
    const answer = await fetch('/v1/models', {headers: apiHeaders()});
    if (answer.status === 401) { $('model').textContent = 'model: (API key needed)'; askForKey(); return; }
    const models = await answer.json();
    const model = (models.data || [])[0] || {};
    const bits = [model.id || 'unknown model'];
    if (model.stage) bits.push('stage ' + model.stage);
    if (model.step !== undefined && model.step !== null) bits.push('step ' + model.step);
    if (model.context_length) {
      context = model.context_length;
      bits.push('context ' + context);
      $('maxtokens').max = context - 1;
      $('maxtokens').value = maxTokens();
    }
    $('model').textContent = bits.join(' · ');
  } catch (e) { $('model').textContent = 'model: unknown'; }
}

input.value = current().draft || '';
redraw();
input.focus();
checkServer();
