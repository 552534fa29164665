// The review UI's script. Everything a customer (or a bot) wrote is inserted with
// textContent / text nodes, never as HTML.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const csrf = meta("csrf-token");
  const role = meta("staff-role");

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : res.statusText);
    return data;
  }

  function notice(text, bad = false) {
    const n = $("#notice");
    if (!n) return;
    n.textContent = text;
    n.classList.toggle("bad", bad);
  }

  function localTimes(root = document) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.dateTime);
      if (!Number.isNaN(d.getTime())) t.textContent = d.toLocaleString();
    }
  }

  // -- conversation list --------------------------------------------------------------
  function filtersPage() {
    const form = $("#filters");
    if (!form) return;
    form.elements.tz.value = String(new Date().getTimezoneOffset());
    form.addEventListener("submit", () => {
      form.elements.tz.value = String(new Date().getTimezoneOffset());
    });
    const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
    for (const b of form.querySelectorAll(".quick button")) {
      b.addEventListener("click", () => {
        const back = Number(b.dataset.back), days = Number(b.dataset.days);
        const until = new Date(); until.setDate(until.getDate() - back);
        const since = new Date(until); since.setDate(since.getDate() - (days - 1));
        form.elements.since.value = iso(since);
        form.elements.until.value = iso(until);
        form.requestSubmit();
      });
    }
  }

  // -- transcript ----------------------------------------------------------------------
  function transcriptPage() {
    const dataNode = $("#transcript-data");
    if (!dataNode) return;
    const data = JSON.parse(dataNode.textContent);
    let summary = data.summary;
    let paused = data.paused;
    const turns = new Map(data.turns.map((t) => [t.seq, t]));
    const base = `/review/api/bots/${encodeURIComponent(summary.bot)}/conversations/${encodeURIComponent(summary.conversation_id)}`;
    const canAct = role === "agent" || role === "admin";
    const list = $("#turns");

    function corrections() {
      const found = new Map();
      for (const t of [...turns.values()].sort((a, b) => a.seq - b.seq)) {
        for (const e of t.events) if (e.kind === "correction") found.set(e.data.seq, e.data);
      }
      return found;
    }

    function entityText(entities) {
      return (entities || []).map((e) => `${e.entity}=${e.value}`).join(", ");
    }

    function mood(sentiment) {  // the turn's sentiment event (bots/nlu/sentiment.py)
      const score = Number(sentiment.score);
      const signals = Array.isArray(sentiment.signals) ? sentiment.signals.map(String) : [];
      return el("span", { class: sentiment.frustrated ? "mood frustrated" : "mood",
        text: `sentiment ${score.toFixed(2)}` + (sentiment.frustrated ? " · frustrated" : "") +
          (signals.length ? ` (${signals.join(", ").replaceAll("_", " ")})` : "") });
    }

    function customer(turn, event, nlu, fixed, sentiment, number) {
      const text = event.data.text || (event.data.payload ? `[button] ${event.data.payload}` : "");
      const info = el("div", { class: "nlu" });
      if (nlu) {
        const conf = Number(nlu.confidence);
        info.append(el("span", { class: fixed ? "old" : "" }, "intent ", el("strong", { text: nlu.intent })),
          el("span", { class: conf < 0.5 ? "conf low" : "conf", text: `confidence ${conf.toFixed(2)}` }));
        if (nlu.entities && nlu.entities.length) {
          info.append(el("span", { class: fixed ? "old" : "", text: `entities ${entityText(nlu.entities)}` }));
        }
        if (nlu.read_as) info.append(el("span", { class: "read-as", text: `read as “${nlu.read_as}”` }));
        if (nlu.also && nlu.also.length) {
          info.append(el("span", { class: "also", text: `also asked ${nlu.also.map((s) => s.name).join(", ")}` }));
        }
      } else if (turn.status === "pending") {
        info.append(el("span", { class: "pending", text: "waiting for the bot…" }));
      }
      if (sentiment) info.append(mood(sentiment));
      if (fixed) {
        info.append(el("span", { class: "fixed", text: `corrected → ${fixed.intent}` +
          (fixed.entities && fixed.entities.length ? ` (${entityText(fixed.entities)})` : "") +
          (fixed.by ? ` by ${fixed.by}` : "") }));
      }
      if (canAct && text) {
        info.append(el("button", { type: "button", class: "correct", "aria-label": `Correct message ${turn.seq}`,
          onclick: () => openCorrection(turn.seq, event.data.text || "", fixed || nlu) }, "Correct"));
      }
      return el("div", { class: "msg customer" },
        el("div", { class: "who" }, el("span", { text: `${summary.customer_name || "Customer"} · #${number}` })),
        el("p", { class: "text", text }), info);
    }

    function reply(event, agent) {
      const d = event.data;
      const who = agent ? `Agent ${(d.metadata && d.metadata.agent) || ""}` : "Bot";
      const node = el("div", { class: agent ? "msg agent" : "msg bot" },
        el("div", { class: "who" }, el("span", { text: who }), el("span", { class: "badge source", text: d.source || "template" })),
        el("p", { class: "text", text: d.text || "" }));
      if (d.buttons && d.buttons.length) {
        node.append(el("div", { class: "buttons-shown", text: "Buttons: " + d.buttons.map((b) => b.title).join(" · ") }));
      }
      if (!agent && d.metadata && d.metadata.composed) node.append(attribution(d.metadata.composed));
      return node;
    }

    // a composed answer (answers.compose, bots/answers/retrieval.py): each sentence shown with the numbered
    // source (knowledge-base passage or answer template) that supported it, the source's text expandable
    function attribution(c) {
      const sources = new Map((c.sources || []).map((s) => [s.n, s]));
      const sentences = (c.sentences || []).map((s) => {
        const src = sources.get(s.source);
        const label = src ? `[${src.n}] ${src.kind} ${src.id}` : "the question";
        return el("li", {}, el("p", { class: "text", text: s.text }),
          el("details", { class: "source" },
            el("summary", { text: `${label} · ${Math.round((s.score || 0) * 100)}% of its words` }),
            src ? el("blockquote", { class: "text", text: src.text }) : null));
      });
      return el("details", { class: "attribution" },
        el("summary", { text: `Composed from ${sources.size} sources: which supported each sentence` }),
        el("ol", {}, ...sentences),
        c.dropped ? el("p", { class: "muted", text: `Not shown: ${c.dropped}` }) : null);
    }

    // who paused the bot, and why: an agent ("by") or the bot's own hand-off ("reason": bots/dialogue/engine.py)
    function handedOff(d) {
      if (d.by) return `Taken over by ${d.by}: the bot is paused`;
      const reason = String(d.reason || "");
      if (reason === "frustration") return "Handed off by the bot: the customer is frustrated";
      if (/fallback|out_of_scope|retries|nlu/.test(reason)) return "Handed off by the bot: it did not understand";
      if (/human|agent|person|handoff|operator/.test(reason) || !reason) return "Handed off by the bot: asked for a human";
      return `Handed off by the bot: ${reason.replaceAll("_", " ")}`;
    }

    function systemLine(event) {
      const by = event.data.by ? ` by ${event.data.by}` : "";
      switch (event.kind) {
        case "pause": return handedOff(event.data);
        case "resume": return `Handed back to the bot${by}`;
        case "assign": {  // who of the agents has it (bots/handoff.py): claimed, reassigned or given up
          const d = event.data;
          if (!d.to) return `Unassigned by ${d.by}` + (d.from && d.from !== d.by ? ` (was ${d.from})` : "");
          return d.to === d.by ? `Taken over by ${d.to}` : `Assigned to ${d.to} by ${d.by || "an admin"}`;
        }
        case "csat": return `Customer rated the conversation ${event.data.scale === "thumbs" ? (event.data.score >= 5 ? "thumbs up" : "thumbs down") : `${event.data.score}/5`}` +
          (event.data.counted ? "" : " (again: the first rating counts)");
        case "correction": return `Message #${event.data.seq} corrected${by}: intent ${event.data.intent}` +
          (event.data.new_intent ? " (new intent)" : "") + (event.data.handoff ? "; should have handed off" : "");
        case "slot": return `slot ${event.data.name} = ${event.data.value}`;
        case "session_start": return "session started";
        case "restart": return "conversation restarted";
        case "reminder": return `reminder ${event.data.name || ""} set for ${event.data.date_time}: intent ${event.data.intent}`;
        case "reminder_cancelled": return `reminders cancelled: ${event.data.name || event.data.intent || "all"}`;
        case "reminder_skipped": return `reminder ${event.data.name} not run: ${event.data.reason}`;
        default: return event.kind;
      }
    }

    // the page follows new messages only when the reader is already at the bottom
    const atBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;

    function renderTurns(follow = atBottom()) {
      const fixes = corrections();
      let customers = 0;  // customer messages are numbered among themselves: agents' and bots' turns take no number
      const items = [...turns.values()].sort((a, b) => a.seq - b.seq).map((turn) => {
        const li = el("li", { class: "turn", "data-seq": turn.seq });
        const nlu = (turn.events.find((e) => e.kind === "nlu") || {}).data;
        const sentiment = (turn.events.find((e) => e.kind === "sentiment") || {}).data;
        for (const event of turn.events) {
          if (event.kind === "user" && event.data.reminder) {  // not the customer: a reminder firing (bots/reminders.py)
            li.append(el("div", { class: "sys", text: `reminder ${event.data.reminder.name} fired: intent ${event.data.reminder.intent}` }));
          } else if (event.kind === "user" && event.data.opened) {  // the web chat opened: the bot's welcome follows
            li.append(el("div", { class: "sys", text: "chat opened" }));
          } else if (event.kind === "user") li.append(customer(turn, event, nlu, fixes.get(turn.seq), sentiment, ++customers));
          else if (event.kind === "bot") li.append(reply(event, false));
          else if (event.kind === "agent") li.append(reply(event, true));
          else if (event.kind !== "nlu" && event.kind !== "sentiment") li.append(el("div", { class: "sys", text: systemLine(event) }));
        }
        return li;
      });
      list.replaceChildren(...items);
      if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    }

    function renderSummary() {
      const badges = $("#status-badges");
      badges.replaceChildren(
        ...(summary.fallback ? [el("span", { class: "badge warn", text: "fell back" })] : []),
        ...(summary.handoff ? [el("span", { class: "badge live", text: "handed off" })] : []),
        ...(summary.flagged ? [el("span", { class: "badge flag", text: "flagged" })] : []),
        ...(summary.reviewed ? [el("span", { class: "badge ok", text: "reviewed" })] : []),
        ...(summary.frustration > 0 ? [el("span", { class: "badge flag", text: `frustrated ×${summary.frustration}` })] : []),
        ...(summary.csat ? [el("span", { class: summary.csat <= 2 ? "badge flag" : "badge ok", text: `rated ${summary.csat}/5` })] : []));
      $("#tags").replaceChildren(...summary.tags.map((t) => el("span", { class: "badge tag" }, t,
        canAct ? el("button", { type: "button", "aria-label": `Remove tag ${t}`, onclick: () => changeTags([], [t]) }, "×") : null)));
      const flag = $("#flag"), reviewed = $("#reviewed");
      flag.setAttribute("aria-pressed", String(summary.flagged));
      flag.textContent = summary.flagged ? "Unflag" : "Flag";
      reviewed.setAttribute("aria-pressed", String(summary.reviewed));
      reviewed.textContent = summary.reviewed ? "Reviewed ✓" : "Mark reviewed";
      $("#live-state").textContent = paused ? "A person has this conversation: the bot is paused." : "The bot is answering.";
      $("#takeover").disabled = paused;
      $("#handback").disabled = !paused;
    }

    async function act(fn, okText) {
      try {
        await fn();
        if (okText) notice(okText);
      } catch (err) {
        notice(err.message, true);
      }
    }

    async function changeTags(add, remove) {
      await act(async () => { summary = await api("POST", `${base}/tags`, { add, remove }); renderSummary(); });
    }

    // correction dialog
    const dialog = $("#correct-dialog");
    let correcting = 0;
    const NEW_INTENT = "\u0000new";  // the intent list's "New intent..." entry (never an intent name)
    function entityRow(entity = "", value = "", start = null, end = null) {
      const row = el("div", { class: "entity-row" },
        el("input", { "aria-label": "Entity name", placeholder: "entity", value: entity, list: "entity-names", class: "entity-name" }),
        el("input", { "aria-label": "Entity value", placeholder: "value as written", value, class: "entity-value" }));
      if (start !== null) Object.assign(row.dataset, { start, end, value });  // the span selected in the message
      row.append(el("button", { type: "button", "aria-label": "Remove entity", onclick: () => row.remove() }, "×"));
      $("#correct-entities").append(row);
      return row;
    }
    function markSelection() {  // text selected in the message: a new entity row with its exact span
      const sel = window.getSelection();
      const box = $("#correct-text");
      if (!sel || sel.isCollapsed || !box.contains(sel.anchorNode) || !box.contains(sel.focusNode)) return;
      const text = box.textContent;
      let start = Math.min(sel.anchorOffset, sel.focusOffset), end = Math.max(sel.anchorOffset, sel.focusOffset);
      while (start < end && /\s/.test(text[start])) start++;
      while (end > start && /\s/.test(text[end - 1])) end--;
      if (start === end) return;
      const row = entityRow("", text.slice(start, end), start, end);
      sel.removeAllRanges();
      row.querySelector(".entity-name").focus();
    }
    function openCorrection(seq, text, current) {
      correcting = seq;
      $("#correct-text").textContent = text;
      const select = $("#correct-intent");
      select.replaceChildren(...data.intents.map((i) => el("option", { value: i, text: i })),
        el("option", { value: NEW_INTENT, text: "New intent\u2026" }));
      $("#correct-new-intent").value = "";
      if (current && current.intent && !data.intents.includes(current.intent)) {
        select.value = NEW_INTENT; $("#correct-new-intent").value = current.intent;
      } else if (current && current.intent) select.value = current.intent;
      $("#new-intent-row").hidden = select.value !== NEW_INTENT;
      $("#correct-handoff").checked = Boolean(current && current.handoff);
      $("#correct-entities").replaceChildren();
      for (const e of (current && current.entities) || []) entityRow(e.entity, e.value, e.start ?? null, e.end ?? null);
      $("#correct-error").textContent = "";
      dialog.showModal();
      select.focus();
    }
    if (dialog) {
      document.body.append(el("datalist", { id: "entity-names" }, ...data.entities.map((e) => el("option", { value: e }))));
      $("#add-entity").addEventListener("click", () => entityRow());
      $("#correct-text").addEventListener("mouseup", markSelection);
      $("#correct-text").addEventListener("keyup", markSelection);
      $("#correct-intent").addEventListener("change", () => {
        const isNew = $("#correct-intent").value === NEW_INTENT;
        $("#new-intent-row").hidden = !isNew;
        if (isNew) $("#correct-new-intent").focus();
      });
      $("#correct-cancel").addEventListener("click", () => dialog.close());
      $("#correct-form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const entities = [...dialog.querySelectorAll(".entity-row")].map((r) => {
          const e = { entity: r.querySelector(".entity-name").value.trim(), value: r.querySelector(".entity-value").value.trim() };
          // a span selected in the message keeps its offsets while its value is the selected text
          if (r.dataset.start !== undefined && e.value === r.dataset.value) Object.assign(e, { start: Number(r.dataset.start), end: Number(r.dataset.end) });
          return e;
        }).filter((e) => e.entity || e.value);
        const isNew = $("#correct-intent").value === NEW_INTENT;
        const intent = isNew ? $("#correct-new-intent").value.trim() : $("#correct-intent").value;
        if (!intent) { $("#correct-error").textContent = "Type the new intent's name."; return; }
        try {
          const res = await api("POST", `${base}/corrections`, { seq: correcting, intent, entities, new_intent: isNew,
            handoff: $("#correct-handoff").checked });
          if (isNew && !data.intents.includes(intent)) data.intents.push(intent);
          turns.set(res.turn.seq, res.turn);
          for (const tag of $("#correct-handoff").checked ? ["corrected", "should-hand-off"] : ["corrected"]) {
            if (!summary.tags.includes(tag)) summary.tags.push(tag);
          }
          dialog.close();
          renderTurns(); renderSummary();
          notice(`Saved: message #${correcting} is now ${intent}.`);
        } catch (err) {
          $("#correct-error").textContent = err.message;
        }
      });
    }

    $("#flag").addEventListener("click", () => act(async () => {
      summary = await api("POST", `${base}/flag`, { flagged: !summary.flagged }); renderSummary();
    }));
    $("#reviewed").addEventListener("click", () => act(async () => {
      summary = await api("POST", `${base}/reviewed`, { reviewed: !summary.reviewed }); renderSummary();
    }, "Marked as reviewed."));
    $("#tag-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("#tag-input");
      const tag = input.value.trim();
      if (tag) changeTags([tag], []).then(() => { input.value = ""; });
    });
    // export corrections: confirm (and pick the format), then download; nothing is written on the server
    const exportDialog = $("#export-dialog");
    $("#export-corrections").addEventListener("click", () => {
      $("#export-bot").textContent = summary.bot;
      $("#export-error").textContent = "";
      exportDialog.showModal();
      $("#export-format").focus();
    });
    $("#export-cancel").addEventListener("click", () => exportDialog.close());
    $("#export-save").addEventListener("click", async () => {
      try {
        const res = await api("POST", `/review/api/bots/${encodeURIComponent(summary.bot)}/export-corrections`,
          { format: $("#export-format").value });
        exportDialog.close();
        notice(`Saved ${res.written} correction(s) on the server in ${res.path}.` +
          (res.skipped.length ? ` ${res.skipped.length} could not be exported: the file's header says why.` : ""));
      } catch (err) {
        $("#export-error").textContent = err.message;
      }
    });
    $("#export-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const format = $("#export-format").value;
      try {
        const res = await fetch(`/review/api/bots/${encodeURIComponent(summary.bot)}/export-corrections?format=${format}`,
          { credentials: "same-origin" });
        if (!res.ok) {
          const data = await res.json().catch(() => ({}));
          throw new Error(typeof data.detail === "string" ? data.detail : res.statusText);
        }
        const name = (/filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "") || [])[1] || "corrections.yml";
        const url = URL.createObjectURL(await res.blob());
        const link = el("a", { href: url, download: name });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
        exportDialog.close();
        const skipped = Number(res.headers.get("X-Corrections-Skipped") || 0);
        notice(`Exported ${res.headers.get("X-Corrections-Examples")} correction(s) as ${name}.` +
          (skipped ? ` ${skipped} could not be exported: the file's header says why.` : ""));
      } catch (err) {
        $("#export-error").textContent = err.message;
      }
    });
    $("#takeover").addEventListener("click", () => act(async () => {
      await api("POST", `${base}/takeover`); paused = true; summary.handoff = true; renderSummary();
      $("#reply-text").focus();
    }, "You have the conversation. The bot stays silent until you hand it back."));
    $("#handback").addEventListener("click", () => act(async () => {
      await api("POST", `${base}/handback`); paused = false; summary.handoff = false; renderSummary();
    }, "Handed back: the bot answers again."));
    $("#reply-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const box = $("#reply-text");
      const text = box.value.trim();
      if (!text) return;
      act(async () => {
        const r = await api("POST", `${base}/reply`, { text });
        box.value = "";
        turns.set(r.turn.seq, r.turn);
        paused = true; summary.handoff = true;
        renderTurns(true); renderSummary();
      }, "Reply sent.");
    });
    $("#reply-text").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("#reply-form").requestSubmit();
    });
    let typingSent = 0;  // the customer's web chat shows "typing" while the agent writes (told every 3 s at most)
    $("#reply-text").addEventListener("input", () => {
      const box = $("#reply-text");
      if (!box.value.trim() || box.value.startsWith("/") || Date.now() - typingSent < 3000) return;
      typingSent = Date.now();
      api("POST", `${base}/typing`).catch(() => {});
    });

    renderTurns(summary.handoff);  // a live conversation opens at its newest message
    renderSummary();

    // live: new turns without reloading
    const after = Math.max(0, ...turns.keys());
    const source = new EventSource(`${base}/events?after=${after}`);
    source.addEventListener("turn", (ev) => {
      const turn = JSON.parse(ev.data);
      turns.set(turn.seq, turn);
      renderTurns();
    });
    source.addEventListener("summary", (ev) => {
      const s = JSON.parse(ev.data);
      paused = s.paused;
      delete s.paused;
      summary = s;
      renderSummary();
    });
  }

  // -- live queue: the store's, re-read every few seconds (any replica serves it) ----------------
  function waited(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  function beep() {  // a short tone: no sound file to serve
    try {
      const ctx = new AudioContext();
      const osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.frequency.value = 880; gain.gain.value = 0.08;
      osc.connect(gain).connect(ctx.destination);
      osc.start(); osc.stop(ctx.currentTime + 0.25);
    } catch (err) { /* audio blocked until the page was used: the title and the notification still tell */ }
  }

  function queuePage() {
    const list = $("#queue-table");
    if (!list) return;
    const count = $("#queue-count"), me = meta("staff-user"), baseTitle = document.title;
    const sound = $("#queue-sound"), notify = $("#queue-notify");
    sound.checked = localStorage.getItem("queue-sound") === "1";
    notify.checked = localStorage.getItem("queue-notify") === "1" && window.Notification && Notification.permission === "granted";
    sound.addEventListener("change", () => localStorage.setItem("queue-sound", sound.checked ? "1" : "0"));
    notify.addEventListener("change", async () => {
      if (notify.checked && window.Notification && Notification.permission !== "granted") {
        notify.checked = (await Notification.requestPermission()) === "granted";
        if (!notify.checked) notice("The browser did not allow notifications for this site.", true);
      }
      localStorage.setItem("queue-notify", notify.checked ? "1" : "0");
    });
    let seen = null, skew = 0;

    async function act(path, body) {
      try {
        await api("POST", path, body);
        notice("");
      } catch (err) {
        notice(err.message, true);
      }
      await refresh();
    }

    function row(c) {
      const base = `/review/api/bots/${encodeURIComponent(c.bot)}/conversations/${encodeURIComponent(c.conversation_id)}`;
      const link = `/review/bots/${encodeURIComponent(c.bot)}/conversations/${encodeURIComponent(c.conversation_id)}`;
      const waiting = c.waiting_since !== null && c.waiting_since !== undefined;
      const who = el("div", { class: "q-who" },
        el("a", { class: "q-name", href: link }, el("strong", { text: c.customer }), " ",
          el("span", { class: "mono muted", text: c.conversation_id })),
        el("span", { class: "badge", text: c.channel }), el("span", { class: "muted", text: c.bot }),
        c.frustration > 0 ? el("span", { class: "badge flag", text: "frustrated" }) : null);
      const state = waiting
        ? el("span", { class: "q-wait", "data-since": c.waiting_since, text: `waiting ${waited(Date.now() / 1000 - skew - c.waiting_since)}` })
        : el("span", { class: "q-wait muted", text: "with an agent" });
      const buttons = el("div", { class: "q-actions" });
      if (c.assignee) {
        buttons.append(el("span", { class: "badge live", text: c.assignee === me ? "assigned to you" : `assigned to ${c.assignee}` }));
        if (c.assignee === me || role === "admin") {
          buttons.append(el("button", { type: "button", onclick: () => act(`${base}/unassign`) }, "Unassign"));
        }
      } else {
        buttons.append(el("button", { type: "button", class: "primary", onclick: () => act(`${base}/claim`) }, "Assign to me"));
      }
      if (role === "admin") {
        const input = el("input", { "aria-label": `Reassign ${c.conversation_id} to`, placeholder: "agent", maxlength: 64, size: 8 });
        buttons.append(el("form", { class: "inline", onsubmit: (ev) => {
          ev.preventDefault();
          if (input.value.trim()) act(`${base}/reassign`, { to: input.value.trim(), expected: c.assignee || null });
        } }, input, el("button", { type: "submit" }, "Reassign")));
      }
      return el("li", { class: waiting ? "queue-item waiting" : "queue-item", "data-id": c.conversation_id },
        who, el("p", { class: "q-preview", text: c.preview || "—" }), el("div", { class: "q-foot" }, state, buttons));
    }

    function tick() {
      for (const t of list.querySelectorAll(".q-wait[data-since]")) {
        t.textContent = `waiting ${waited(Date.now() / 1000 - skew - Number(t.dataset.since))}`;
      }
    }

    async function refresh() {
      try {
        const data = await api("GET", "/review/api/queue?limit=200");
        skew = Date.now() / 1000 - data.now;
        count.textContent = data.waiting === 1 ? "1 customer waiting" : `${data.waiting} customers waiting`;
        document.title = data.unassigned ? `(${data.unassigned}) ${baseTitle}` : baseTitle;
        list.hidden = data.items.length === 0;
        list.replaceChildren(...data.items.map(row));
        const now = new Set(data.items.filter((c) => c.waiting_since !== null).map((c) => `${c.bot}/${c.conversation_id}`));
        const joined = seen === null ? [] : data.items.filter((c) => c.waiting_since !== null && !seen.has(`${c.bot}/${c.conversation_id}`));
        seen = now;
        if (joined.length) {
          if (sound.checked) beep();
          if (notify.checked && window.Notification && Notification.permission === "granted") {
            const c = joined[0];
            new Notification(joined.length === 1 ? `${c.customer} is waiting` : `${joined.length} customers joined the queue`,
              { body: c.preview || c.channel, tag: "switchboard-queue" });
          }
        }
      } catch (err) {
        count.textContent = `Could not refresh: ${err.message}`;
      }
    }
    refresh();
    setInterval(refresh, 3000);
    setInterval(tick, 1000);
  }

  // -- canned replies: "/" in the composer, and the admins' page --------------------------------
  function cannedShortcut() {
    const box = $("#reply-text"), dataNode = $("#transcript-data");
    if (!box || !dataNode || !(role === "agent" || role === "admin")) return;
    const summary = JSON.parse(dataNode.textContent).summary;
    const url = `/review/api/bots/${encodeURIComponent(summary.bot)}/conversations/${encodeURIComponent(summary.conversation_id)}/canned`;
    const menu = el("ul", { id: "canned-menu", class: "canned-menu", role: "listbox", "aria-label": "Canned replies", hidden: true });
    box.after(menu);
    box.setAttribute("aria-controls", "canned-menu");
    box.setAttribute("aria-autocomplete", "list");
    let replies = null, shown = [], active = 0;
    const close = () => { menu.hidden = true; shown = []; box.setAttribute("aria-expanded", "false"); };
    function insert(reply) {
      box.value = reply.text;  // already filled from the conversation's slots by the server
      close();
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
    function render() {
      menu.replaceChildren(...shown.map((r, i) => el("li", {
        role: "option", id: `canned-${i}`, "aria-selected": String(i === active), class: i === active ? "active" : "",
        onmousedown: (ev) => { ev.preventDefault(); insert(r); },
      }, el("strong", { class: "mono", text: `/${r.name}` }), " ", el("span", { text: r.text }))));
      menu.hidden = shown.length === 0;
      box.setAttribute("aria-expanded", String(!menu.hidden));
      if (!menu.hidden) box.setAttribute("aria-activedescendant", `canned-${active}`);
    }
    box.addEventListener("input", async () => {
      const typed = /^\/([\w-]*)$/.exec(box.value);
      if (!typed) return close();
      if (replies === null) {
        try { replies = (await api("GET", url)).items; } catch (err) { notice(err.message, true); replies = []; }
      }
      const query = typed[1].toLowerCase();
      shown = replies.filter((r) => r.name.startsWith(query)).concat(
        replies.filter((r) => !r.name.startsWith(query) && r.name.includes(query))).slice(0, 8);
      active = 0;
      render();
    });
    box.addEventListener("keydown", (ev) => {
      if (menu.hidden) return;
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        active = (active + (ev.key === "ArrowDown" ? 1 : shown.length - 1)) % shown.length;
        render();
      } else if (ev.key === "Enter" || ev.key === "Tab") {
        ev.preventDefault();
        ev.stopImmediatePropagation();
        insert(shown[active]);
      } else if (ev.key === "Escape") close();
    }, true);
    box.addEventListener("blur", () => setTimeout(close, 150));
  }

  function cannedPage() {
    const form = $("#canned-form");
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("PUT", "/review/api/canned", { bot: $("#canned-bot").value, name: $("#canned-name").value.trim(),
          text: $("#canned-text").value });
        location.reload();
      } catch (err) { notice(err.message, true); }
    });
    for (const b of document.querySelectorAll(".canned-delete")) {
      b.addEventListener("click", async () => {
        const row = b.closest("tr");
        try {
          await api("DELETE", `/review/api/canned?bot=${encodeURIComponent(row.dataset.bot)}&name=${encodeURIComponent(row.dataset.name)}`);
          row.remove();
          notice(`Deleted /${row.dataset.name}.`);
        } catch (err) { notice(err.message, true); }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (role === "viewer") for (const n of document.querySelectorAll(".agent-only")) n.hidden = true;
    localTimes();
    filtersPage();
    transcriptPage();
    queuePage();
    cannedShortcut();
    cannedPage();
  });
})();
