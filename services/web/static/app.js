// warmwire's web page: chat, notes and a live dashboard over one WebSocket (/ws).
// The server relays the wire protocol's frames (README "Wire protocol") as JSON.
// Every text from warmwire or the user is put in the page with textContent, never as HTML.
"use strict";

const RECONNECT_MS = 1000;          // after a lost connection, try again this often
const CHAT_TITLE_CHARS = 32;        // a chat is named after its first message, cut here
const CHATS_KEY = "warmwire.chats";
const CURRENT_KEY = "warmwire.chat";
const TOKEN_KEY = "warmwire.token";
const SENDER = "web";
const INTERIM = new Set(["queued", "progress", "delta"]);

const $ = (id) => document.getElementById(id);
const page = { ws: null, ready: false, historyPage: 50, maxUpload: 0, view: "chat",
               pending: new Map(), answers: new Map(), oldest: null };

function newId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function send(message) {
  if (page.ws && page.ready) { page.ws.send(JSON.stringify(message)); return true; }
  return false;
}

function sendFrame(frame, pending) {
  page.pending.set(frame.id, pending);
  if (!send({ op: "send", frame })) {
    page.pending.delete(frame.id);
    return false;
  }
  return true;
}

// -- connection ------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  page.ws = ws;
  ws.onmessage = (event) => onMessage(JSON.parse(event.data));
  ws.onclose = () => {
    page.ready = false;
    setConnection(false, "disconnected, reconnecting…");
    setTimeout(connect, RECONNECT_MS);
  };
}

function setConnection(up, text) {
  const node = $("connection");
  node.textContent = text;
  node.classList.toggle("up", up);
}

function onMessage(message) {
  switch (message.op) {
    case "hello":
      page.historyPage = message.history_page;
      page.maxUpload = message.max_upload_bytes;
      if (message.need_token) {
        const token = sessionStorage.getItem(TOKEN_KEY);
        if (token) page.ws.send(JSON.stringify({ op: "auth", token }));
        else showLogin("");
      }
      break;
    case "ready": onReady(); break;
    case "denied":
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("That token was not right.");
      break;
    case "frame": onFrame(message.frame); break;
    case "learn-progress": onLearnProgress(message); break;
    case "status": renderStatus(message); break;
    case "error": setConnection(true, message.text); break;
  }
}

function showLogin(error) {
  $("login").hidden = false;
  document.querySelector("main").hidden = true;
  $("login-error").textContent = error;
  $("token").focus();
}

function onReady() {
  page.ready = true;
  $("login").hidden = true;
  document.querySelector("main").hidden = false;
  setConnection(true, "connected");
  loadHistory(currentChat(), "");
  if (page.view === "dashboard") send({ op: "dashboard", on: true });
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  if (page.ws && page.ws.readyState === WebSocket.OPEN) page.ws.close(); // reconnects with the token
});

// -- views -----------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => showView(tab.dataset.view));
}

function showView(view) {
  page.view = view;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  }
  for (const name of ["chat", "notes", "dashboard"]) $(`view-${name}`).hidden = name !== view;
  send({ op: "dashboard", on: view === "dashboard" });
  if (view === "chat") $("input").focus();
}

// -- chats -----------------------------------------------------------------------------
function chats() {
  try { return JSON.parse(localStorage.getItem(CHATS_KEY)) || []; } catch { return []; }
}

function saveChats(list) { localStorage.setItem(CHATS_KEY, JSON.stringify(list)); }

function currentChat() {
  let id = localStorage.getItem(CURRENT_KEY);
  if (!id || !chats().some((chat) => chat.id === id)) id = createChat();
  return id;
}

function createChat() {
  const id = `web-${newId()}`;
  const list = chats();
  list.unshift({ id, title: `New chat ${list.length + 1}` });
  saveChats(list);
  localStorage.setItem(CURRENT_KEY, id);
  return id;
}

function renderChatList() {
  const current = localStorage.getItem(CURRENT_KEY);
  const list = $("chat-list");
  list.replaceChildren();
  for (const chat of chats()) {
    const item = el("li", chat.id === current ? "current" : "", chat.title);
    item.dataset.chat = chat.id;
    item.title = chat.id;
    item.addEventListener("click", () => selectChat(chat.id));
    list.append(item);
  }
}

function selectChat(id) {
  localStorage.setItem(CURRENT_KEY, id);
  loadHistory(id, "");
  $("input").focus();
}

$("new-chat").addEventListener("click", () => selectChat(createChat()));

function nameChat(id, text) {
  const list = chats();
  const chat = list.find((c) => c.id === id);
  if (chat && chat.title.startsWith("New chat") && text.trim()) {
    chat.title = text.trim().slice(0, CHAT_TITLE_CHARS);
    saveChats(list);
    renderChatList();
  }
}

// -- messages --------------------------------------------------------------------------
function loadHistory(chat, before) {
  renderChatList();
  if (!before) {
    $("messages").replaceChildren();
    page.answers.clear();
    page.oldest = null;
    $("older").hidden = true;
  }
  sendFrame({ type: "history", id: newId(), chat, before, limit: page.historyPage },
            { kind: "history", chat, before });
}

$("older").addEventListener("click", () => {
  if (page.oldest) loadHistory(currentChat(), page.oldest);
});

function userBubble(id, text, sender) {
  const item = el("li", "msg user");
  item.dataset.id = id;
  item.append(el("div", "text", text), el("div", "meta", sender));
  return item;
}

function answerBubble(id) {
  // Notices and the reply's text are children in the order they came.
  const item = el("li", "msg bot");
  item.dataset.id = id;
  const text = el("div", "text", "");
  const meta = el("div", "meta", "");
  item.append(meta);
  const answer = { item, text, meta, streamed: "" };
  page.answers.set(id, answer);
  return answer;
}

function onHistory(frame, pending) {
  if (pending.chat !== currentChat()) return;
  const nodes = [];
  for (const message of frame.messages) {
    nodes.push(userBubble(message.id, message.text, message.sender));
    const answer = answerBubble(message.id);
    for (const out of message.answers) showAnswer(answer, out, null);
    nodes.push(answer.item);
  }
  const list = $("messages");
  if (pending.before) list.prepend(...nodes);
  else { list.append(...nodes); list.scrollTop = list.scrollHeight; }
  if (frame.messages.length) page.oldest = frame.messages[0].id;
  $("older").hidden = !frame.more;
}

function noticeText(frame) {
  switch (frame.kind) {
    case "queued": return frame.position ? `queued, position ${frame.position}` : frame.text;
    case "busy": return `busy: ${frame.text}` + (frame.retry_after != null ? ` (try again in ${frame.retry_after} s)` : "");
    case "unavailable": return `unavailable: ${frame.text}` + (frame.retry_after != null ? ` (try again in ${frame.retry_after} s)` : "");
    case "progress": return `progress: ${frame.text}`;
    default: return `${frame.kind}: ${frame.text}`;
  }
}

// One frame for a message's answer: a reply (final), a delta (more text), or a notice.
function showAnswer(answer, frame, sentAt) {
  if (frame.type === "reply") {
    answer.text.textContent = frame.text;
    if (!answer.text.isConnected) answer.item.insertBefore(answer.text, answer.meta);
    const took = sentAt === null ? "" : ` · ${formatMs(performance.now() - sentAt)}`;
    answer.meta.textContent = `${frame.tier}${took}`;
    answer.item.classList.add("answered", `tier-${frame.tier}`);
    answer.item.dataset.tier = frame.tier;
  } else if (frame.kind === "delta") {
    answer.streamed += frame.text;
    answer.text.textContent = answer.streamed;
    if (!answer.text.isConnected) answer.item.insertBefore(answer.text, answer.meta);
  } else {
    const notice = el("div", `notice kind-${frame.kind}`, noticeText(frame));
    answer.item.insertBefore(notice, answer.meta);
    if (!INTERIM.has(frame.kind)) answer.item.classList.add("answered");
  }
}

function formatMs(ms) {
  return ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function sendChat() {
  const input = $("input");
  const text = input.value;
  if (!text.trim() || !page.ready) return;
  const chat = currentChat();
  const id = newId();
  const list = $("messages");
  list.append(userBubble(id, text, SENDER));
  const answer = answerBubble(id);
  list.append(answer.item);
  list.scrollTop = list.scrollHeight;
  sendFrame({ type: "chat", id, chat, sender: SENDER, text }, { kind: "chat", chat, sentAt: performance.now() });
  input.value = "";
  nameChat(chat, text);
}

$("composer").addEventListener("submit", (event) => { event.preventDefault(); sendChat(); });
$("input").addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter is a new line; Enter that ends an input method's composition
  // (Thai and other IMEs) only ends the composition.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    sendChat();
  }
});

function onFrame(frame) {
  const pending = page.pending.get(frame.id);
  if (pending && frame.type === "history") { page.pending.delete(frame.id); onHistory(frame, pending); return; }
  if (pending && (pending.kind === "learn" || pending.kind === "search")) {
    page.pending.delete(frame.id);
    (pending.kind === "learn" ? onLearned : onFound)(frame);
    return;
  }
  const answer = page.answers.get(frame.id);
  if (answer) showAnswer(answer, frame, pending ? pending.sentAt : null);
  if (pending && (frame.type === "reply" || !INTERIM.has(frame.kind))) page.pending.delete(frame.id);
}

// -- notes -----------------------------------------------------------------------------
$("learn").addEventListener("click", () => {
  const text = $("note-text").value;
  if (!text.trim()) return;
  if (sendFrame({ type: "learn", id: newId(), text, source: "web" }, { kind: "learn" })) {
    $("learn-status").textContent = "learning…";
  }
});

function onLearned(frame) {
  if (frame.type === "learned") {
    $("learn-status").textContent = frame.indexed ? "Learned." : "Learned (findable by meaning once the index is back).";
    $("note-text").value = "";
  } else {
    $("learn-status").textContent = `Not learned: ${frame.text}`;
  }
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value;
  if (!query.trim()) return;
  if (sendFrame({ type: "search", id: newId(), query }, { kind: "search" })) {
    $("search-status").textContent = "searching…";
  }
});

function onFound(frame) {
  const hits = $("hits");
  hits.replaceChildren();
  if (frame.type !== "found") { $("search-status").textContent = `Search failed: ${frame.text}`; return; }
  $("search-status").textContent = frame.hits.length
    ? `${frame.hits.length} passages${frame.degraded ? " (full text only: the vector index is down)" : ""}`
    : "Nothing found.";
  for (const hit of frame.hits) {
    const item = el("li", "hit");
    item.append(el("div", "text", hit.text),
                el("div", "source", `${hit.source} · score ${Number(hit.score).toPrecision(3)}`));
    hits.append(item);
  }
}

const uploads = new Map();

async function learnFiles(files) {
  for (const file of files) {
    const id = newId();
    const item = el("li", "upload");
    const label = el("div", "label", `${file.name}: reading…`);
    const bar = el("progress");
    item.append(label, bar);
    $("uploads").prepend(item);
    if (file.size > page.maxUpload) {
      label.textContent = `${file.name}: too large (${file.size} bytes; at most ${page.maxUpload})`;
      continue;
    }
    uploads.set(id, { label, bar });
    const text = await file.text();
    if (!send({ op: "learn-file", id, name: file.name, text })) label.textContent = `${file.name}: not connected`;
  }
}

function onLearnProgress(message) {
  const upload = uploads.get(message.id);
  if (!upload) return;
  upload.bar.max = Math.max(message.total, 1);
  upload.bar.value = message.done + message.failed;
  const failed = message.failed ? `, ${message.failed} failed (${message.error})` : "";
  const finished = message.done + message.failed === message.total;
  upload.label.textContent = `${message.name}: ${message.done}/${message.total} notes learned${failed}${finished ? " — done" : ""}`;
  upload.label.parentElement.classList.toggle("done", finished);
}

$("file").addEventListener("change", (event) => { learnFiles(Array.from(event.target.files)); event.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  learnFiles(Array.from(event.dataTransfer.files));
});

renderChatList();
connect();
