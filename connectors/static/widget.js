/* Switchboard chat widget. Embed on any allowed site with one tag:
 *   <script src="https://BOT-SERVER/widget.js" data-bot="BOT" async></script>
 * Options (data-*): title, inline (fill data-target instead of a floating button), target (CSS selector),
 * name (the customer's display name, e.g. of the signed-in shopper: shown to support agents, stored with the
 * conversation; one line, at most 80 characters).
 * Everything shown is inserted as text (textContent): nothing a customer, bot or agent wrote is parsed as HTML.
 * Rich replies (docs/channels.md): buttons send their payload, link buttons and attachments open http(s) links,
 * images are <img> of http(s) or data:image URLs (anything else, or an image that fails to load, is shown as
 * its link in text), and a custom payload is dispatched to the page as a "switchboard:custom" event
 * (bubbling from the widget's element; detail: {bot, custom, text, replayed}), never shown.
 */
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || !script.dataset.bot) {
    console.error("Switchboard widget: add data-bot=\"<bot name>\" to the script tag");
    return;
  }
  const bot = script.dataset.bot;
  const server = new URL(script.src, location.href).origin;
  const socketBase = server.replace(/^http/, "ws");
  const inline = script.hasAttribute("data-inline");
  const title = script.dataset.title || "Chat with us";
  // one printable line of at most 80 characters, as the server takes it (invisible characters dropped)
  const customerName = Array.from((script.dataset.name || "")
    .replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]/g, " ")
    .replace(/\s+/g, " ").trim()).slice(0, 80).join("").trim() || undefined;
  const key = `switchboard:${server}:${bot}`;

  const storage = {
    get(name) { try { return localStorage.getItem(`${key}:${name}`); } catch (e) { return null; } },
    set(name, value) { try { localStorage.setItem(`${key}:${name}`, value); } catch (e) { /* private mode */ } },
    remove(name) { try { localStorage.removeItem(`${key}:${name}`); } catch (e) { /* private mode */ } },
  };
  function newId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  // The server starts each conversation and returns its token, which alone reads it back (history,
  // socket). It is sent in a header and a frame, never in a URL. A stored id without a token (a widget
  // from before tokens) is not resumed.
  let conversationId = storage.get("conversation");
  let token = storage.get("token");
  if (!conversationId || !token) { conversationId = null; token = null; }
  const hadConversation = Boolean(conversationId);
  function forgetConversation() {
    conversationId = null; token = null;
    storage.remove("conversation"); storage.remove("token");
  }
  async function ensureConversation() {
    if (conversationId && token) return;
    const res = await fetch(`${server}/bots/${encodeURIComponent(bot)}/webhooks/web/conversations`,
      { method: "POST", mode: "cors", credentials: "omit",
        ...(customerName ? { headers: { "Content-Type": "application/json" },
                             body: JSON.stringify({ name: customerName }) } : {}) });
    if (!res.ok) throw new Error(`new conversation: HTTP ${res.status}`);
    const data = await res.json();
    conversationId = data.conversation_id; token = data.token;
    storage.set("conversation", conversationId); storage.set("token", token);
  }
  let outbox = [];
  try { outbox = JSON.parse(storage.get("outbox") || "[]"); } catch (e) { outbox = []; }
  const saveOutbox = () => storage.set("outbox", JSON.stringify(outbox));

  // -- DOM (a shadow root keeps the host page's styles out) -------------------------------
  const host = document.createElement("div");
  host.className = "switchboard-widget";
  const target = script.dataset.target ? document.querySelector(script.dataset.target) : null;
  (target || document.body).appendChild(host);
  const root = host.attachShadow({ mode: "open" });
  // Styles through a constructed sheet: allowed by host pages whose CSP forbids inline <style>.
  const css = `
  :host { all: initial; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; }
  .launcher { position: fixed; right: 20px; bottom: 20px; width: 56px; height: 56px; border-radius: 50%; border: 0;
    background: #2457d6; color: #fff; cursor: pointer; display: grid; place-items: center; box-shadow: 0 4px 14px rgba(0,0,0,.25); z-index: 2147483000; }
  .launcher.unread::after { content: ""; position: absolute; top: 6px; right: 6px; width: 12px; height: 12px;
    border-radius: 50%; background: #f04438; border: 2px solid #fff; }
  .panel { position: fixed; right: 20px; bottom: 88px; width: min(370px, calc(100vw - 24px)); height: min(560px, calc(100vh - 110px));
    background: #fff; border-radius: 14px; box-shadow: 0 10px 40px rgba(0,0,0,.25); display: flex; flex-direction: column;
    overflow: hidden; z-index: 2147483000; }
  .panel.inline { position: static; width: 100%; height: 100%; box-shadow: none; border-radius: 0; }
  .panel[hidden] { display: none; }
  header { display: flex; align-items: center; gap: .5rem; padding: .7rem .9rem; background: #2457d6; color: #fff; }
  header h2 { font-size: 1rem; margin: 0; flex: 1; }
  header .status { font-size: .75rem; opacity: .9; }
  header button { background: none; border: 0; color: #fff; font-size: 1.4rem; cursor: pointer; line-height: 1; }
  .log { flex: 1; overflow-y: auto; padding: .8rem; display: flex; flex-direction: column; gap: .45rem; background: #f7f8fa; }
  .msg { max-width: 82%; padding: .5rem .75rem; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere; }
  .msg.user { align-self: flex-end; background: #2457d6; color: #fff; border-bottom-right-radius: 4px; }
  .msg.user.sending { opacity: .65; }
  .msg.bot, .msg.agent { align-self: flex-start; background: #fff; border: 1px solid #e3e6ea; border-bottom-left-radius: 4px; }
  .msg.agent { border-color: #cdb9f7; background: #f7f2ff; }
  .msg .who { display: block; font-size: .7rem; color: #6b4fbb; font-weight: 600; margin-bottom: .1rem; }
  .msg.error { align-self: center; background: #fef3f2; color: #b42318; font-size: .85rem; }
  .msg.streaming::after { content: "▍"; animation: blink 1s steps(1) infinite; }
  .choices { display: flex; flex-wrap: wrap; gap: .35rem; margin-top: .45rem; }
  .choices button { border: 1px solid #2457d6; color: #2457d6; background: #fff; border-radius: 14px; padding: .25rem .7rem;
    cursor: pointer; font: inherit; font-size: .85rem; }
  .choices button:hover, .choices a:hover { background: #eef3ff; }
  .choices a { border: 1px solid #2457d6; color: #2457d6; background: #fff; border-radius: 14px; padding: .25rem .7rem;
    font-size: .85rem; text-decoration: none; }
  .choices a::after { content: " ↗"; }
  .msg img.image { display: block; max-width: 100%; max-height: 260px; margin-top: .45rem; border-radius: 8px; }
  .msg a.attachment { display: block; margin-top: .35rem; color: #2457d6; }
  .msg .link { display: block; margin-top: .35rem; }
  .typing { padding: 0 .9rem .4rem; background: #f7f8fa; color: #5b636e; font-size: .85rem; }
  .typing[hidden] { display: none; }
  .dots span { animation: blink 1.2s infinite; } .dots span:nth-child(2) { animation-delay: .2s; } .dots span:nth-child(3) { animation-delay: .4s; }
  @keyframes blink { 50% { opacity: 0; } }
  form { display: flex; border-top: 1px solid #e3e6ea; }
  input { flex: 1; border: 0; padding: .85rem; font: inherit; min-width: 0; }
  form button { border: 0; background: #2457d6; color: #fff; padding: 0 1.1rem; font: inherit; cursor: pointer; }
  button:focus-visible, input:focus-visible, .log:focus-visible { outline: 3px solid #93c5fd; outline-offset: -3px; }
  .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet.prototype.replaceSync === "function") {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  }
  root.innerHTML = `<button class="launcher" type="button" aria-expanded="false" aria-controls="panel" aria-label="Open chat"><svg width="26" height="26" viewBox="0 0 24 24" aria-hidden="true" focusable="false">
  <path fill="currentColor" d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z"/></svg></button>
<section class="panel" id="panel" role="dialog" aria-modal="false" aria-labelledby="title" hidden>
  <header><h2 id="title"></h2><span class="status" role="status" aria-live="polite"></span>
    <button class="close" type="button" aria-label="Close chat">×</button></header>
  <div class="log" role="log" aria-live="polite" aria-label="Conversation" tabindex="0"></div>
  <div class="typing" role="status" aria-live="polite" hidden>
    <span class="dots" aria-hidden="true"><span>●</span><span>●</span><span>●</span></span>
    <span class="sr">The assistant is typing</span></div>
  <form class="composer"><label class="sr" for="input">Your message</label>
    <input id="input" autocomplete="off" maxlength="4000" placeholder="Type a message…">
    <button type="submit">Send</button></form>
</section>`;
  if (!root.adoptedStyleSheets || root.adoptedStyleSheets.length === 0) {
    const style = document.createElement("style");
    style.textContent = css;
    root.prepend(style);
  }
  const $ = (sel) => root.querySelector(sel);
  const launcher = $(".launcher"), panel = $(".panel"), log = $(".log"), input = $("#input");
  const typingBox = $(".typing"), status = $(".status");
  $("#title").textContent = title;
  if (inline) { launcher.remove(); panel.classList.add("inline"); panel.hidden = false; $(".close").remove(); }

  // -- rendering ---------------------------------------------------------------------------
  const userBubbles = new Map();   // message id -> element
  const answered = new Set();      // message ids whose reply is shown
  const streaming = new Map();     // message id -> element showing partial text
  const waiting = new Set();       // message ids the bot is working on (typing indicator)
  let lastSeq = 0;

  function scroll() { log.scrollTop = log.scrollHeight; }
  function showTyping() { typingBox.hidden = waiting.size === 0; }
  function userBubble(id, text, pending) {
    const div = document.createElement("div");
    div.className = pending ? "msg user sending" : "msg user";
    div.textContent = text;
    log.appendChild(div);
    if (id) userBubbles.set(id, div);
    scroll();
  }
  // A URL the widget may follow (link buttons, attachments) or load (images): absolute http(s), or for images
  // a base64 data:image of a raster type. Anything else is shown as text, never put in an attribute.
  function safeUrl(value, image) {
    if (typeof value !== "string" || !value) return null;
    if (image && /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$/i.test(value)) return value;
    let url;
    try { url = new URL(value); } catch (e) { return null; }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }
  function linkText(label, value) {  // what cannot be shown, as text (a data: URL is named, not printed)
    const span = document.createElement("span");
    span.className = "link";
    span.textContent = `${label}: ${/^data:/i.test(value) ? "(inline data, not shown)" : value}`;
    return span;
  }
  function dispatchCustom(response, replayed) {
    let custom;
    try { custom = JSON.parse(JSON.stringify(response.custom)); } catch (e) { return; }
    host.dispatchEvent(new CustomEvent("switchboard:custom", {
      bubbles: true, detail: { bot, custom, text: response.text || "", replayed: Boolean(replayed) } }));
  }
  function replyBubble(response, role, replayed) {
    if (response.custom) dispatchCustom(response, replayed);
    const buttons = Array.isArray(response.buttons) ? response.buttons : [];
    if (!response.text && !buttons.length && !response.image && !response.attachment) return;  // only data
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    if (role === "agent") {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = "Support agent";
      div.appendChild(who);
    }
    div.appendChild(document.createTextNode(response.text || ""));
    if (response.image) {
      const src = safeUrl(response.image, true);
      if (src) {
        const img = document.createElement("img");
        img.className = "image";
        img.alt = response.text ? "Image for the message above" : "Image from the assistant";
        img.referrerPolicy = "no-referrer";
        img.addEventListener("error", () => { img.replaceWith(linkText("Image", response.image)); scroll(); });
        img.addEventListener("load", scroll);
        img.src = src;
        div.appendChild(img);
      } else {
        div.appendChild(linkText("Image", response.image));
      }
    }
    if (response.attachment) {
      const href = safeUrl(response.attachment, false);
      if (href) {
        const a = document.createElement("a");
        a.className = "attachment";
        a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer";
        let name = "";
        try { name = decodeURIComponent(new URL(href).pathname.split("/").pop() || ""); } catch (e) { name = ""; }
        a.textContent = `Attachment: ${name || href}`;
        div.appendChild(a);
      } else {
        div.appendChild(linkText("Attachment", response.attachment));
      }
    }
    if (buttons.length) {
      const row = document.createElement("div");
      row.className = "choices";
      row.setAttribute("role", "group");
      row.setAttribute("aria-label", "Suggested replies");
      for (const b of buttons) {
        if (b.url) {
          const href = safeUrl(b.url, false);
          if (!href) { row.appendChild(linkText(b.title || "Link", b.url)); continue; }
          const a = document.createElement("a");
          a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer";
          a.textContent = b.title || href;
          row.appendChild(a);
          continue;
        }
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = b.title;
        button.addEventListener("click", () => send(b.title, b.payload));
        row.appendChild(button);
      }
      div.appendChild(row);
    }
    log.appendChild(div);
    if (panel.hidden) { launcher.classList.add("unread"); launcher.setAttribute("aria-label", "Open chat (new message)"); }
    scroll();
  }
  function errorBubble(text) {
    const div = document.createElement("div");
    div.className = "msg error";
    div.setAttribute("role", "alert");
    div.textContent = text;
    log.appendChild(div);
    scroll();
  }

  // -- connection ------------------------------------------------------------------------
  let socket = null, connecting = false, attempts = 0;

  async function loadHistory() {
    await ensureConversation();
    const url = `${server}/bots/${encodeURIComponent(bot)}/webhooks/web/history?conversation_id=${conversationId}`;
    const res = await fetch(url, { mode: "cors", credentials: "omit", headers: { "X-Conversation-Token": token } });
    if (res.status === 403) forgetConversation();  // e.g. the server's key changed: start a new conversation
    if (!res.ok) throw new Error(`history: HTTP ${res.status}`);
    const data = await res.json();
    log.replaceChildren(); userBubbles.clear(); answered.clear();
    const known = new Set();
    for (const m of data.messages) {
      if (m.role === "user") {
        known.add(m.message_id);
        userBubble(m.message_id, m.text, false);
        if (m.answered) answered.add(m.message_id);
      } else {
        replyBubble(m, m.role, true);  // from history: a custom payload's event says replayed
      }
    }
    lastSeq = data.last_seq || 0;
    outbox = outbox.filter((o) => !answered.has(o.id));
    saveOutbox();
    for (const o of outbox) if (!known.has(o.id)) userBubble(o.id, o.display, true);
  }

  function transmit(item) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "message", id: item.id, text: item.text, payload: item.payload || undefined,
                                   name: customerName }));
    }
  }

  async function connect() {
    if (connecting || socket) return;
    connecting = true;
    try {
      await loadHistory();
    } catch (e) {
      connecting = false;
      status.textContent = "Offline, retrying…";
      return retry();
    }
    const ws = new WebSocket(`${socketBase}/bots/${encodeURIComponent(bot)}/webhooks/web/ws?conversation_id=${conversationId}&after=${lastSeq}`);
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token }));  // first frame: the conversation's token
      socket = ws; connecting = false; attempts = 0; status.textContent = "";
      for (const item of outbox) transmit(item);  // resend whatever was not answered; ids make it idempotent
    });
    ws.addEventListener("message", (ev) => { try { handle(JSON.parse(ev.data)); } catch (e) { console.error(e); } });
    ws.addEventListener("close", (ev) => {
      if (ev.code === 1008 && /token/.test(ev.reason)) forgetConversation();
      socket = null; connecting = false; waiting.clear(); showTyping();
      status.textContent = "Reconnecting…";
      retry();
    });
  }
  function retry() {
    const delay = Math.min(8000, 400 * 2 ** attempts++) * (0.8 + Math.random() * 0.4);
    setTimeout(connect, delay);
  }

  function handle(frame) {
    switch (frame.type) {
      case "ack": {
        const bubble = userBubbles.get(frame.id);
        if (bubble) bubble.classList.remove("sending");
        break;
      }
      case "typing":
        if (frame.on && frame.id) waiting.add(frame.id); else waiting.delete(frame.id);
        showTyping();
        break;
      case "partial": {  // streamed text of an answer being generated
        let div = streaming.get(frame.id);
        if (!div) {
          div = document.createElement("div");
          div.className = "msg bot streaming";
          div.setAttribute("aria-busy", "true");  // screen readers wait for the finished reply
          log.appendChild(div);
          streaming.set(frame.id, div);
        }
        div.textContent = frame.text;
        scroll();
        break;
      }
      case "reply": {
        const partial = streaming.get(frame.id);
        if (partial) { partial.remove(); streaming.delete(frame.id); }
        waiting.delete(frame.id); showTyping();
        outbox = outbox.filter((o) => o.id !== frame.id); saveOutbox();
        const bubble = userBubbles.get(frame.id);
        if (bubble) bubble.classList.remove("sending");
        if (!answered.has(frame.id)) for (const r of frame.responses) replyBubble(r, "bot");
        answered.add(frame.id);
        lastSeq = Math.max(lastSeq, frame.seq || 0);
        break;
      }
      case "agent":
        waiting.delete("agent"); showTyping();  // the agent's typing ("typing" frames with id "agent") ends here
        for (const r of frame.responses) replyBubble(r, "agent");
        lastSeq = Math.max(lastSeq, frame.seq || 0);
        break;
      case "bot":  // the bot's answer to a reminder (no message of the customer's asked for it)
        if ((frame.seq || 0) > lastSeq) for (const r of frame.responses) replyBubble(r, "bot");
        lastSeq = Math.max(lastSeq, frame.seq || 0);
        break;
      case "error":
        waiting.delete(frame.id); showTyping();
        if (frame.retry) {
          const delay = Math.max(1500, Math.ceil((frame.retry_after || 0) * 1000));
          setTimeout(() => { const item = outbox.find((o) => o.id === frame.id); if (item) transmit(item); }, delay);
        } else {
          outbox = outbox.filter((o) => o.id !== frame.id); saveOutbox();
          errorBubble(frame.detail || "The message could not be sent.");
        }
        break;
      default:
        break;
    }
  }

  function send(text, payload) {
    const display = String(text).trim();
    if (!display) return;
    const item = { id: newId(), text: display, display, payload: payload || null };
    outbox.push(item); saveOutbox();
    userBubble(item.id, display, true);
    if (socket) transmit(item); else connect();
  }

  // -- opening, closing, keyboard -----------------------------------------------------------
  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.classList.remove("unread");
    launcher.setAttribute("aria-label", "Close chat");
    connect();
    input.focus();
  }
  function close() {
    if (inline) return;
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat");
    launcher.focus();
  }
  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  const closeButton = $(".close");
  if (closeButton) closeButton.addEventListener("click", close);
  panel.addEventListener("keydown", (ev) => { if (ev.key === "Escape") close(); });
  $(".composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    input.value = "";
    send(text);
  });

  window.SwitchboardWidget = { open, close, conversationId: () => conversationId };
  if (inline || hadConversation || outbox.length) connect();
})();
