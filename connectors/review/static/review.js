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

    function customer(turn, event, nlu, fixed, sentiment) {
      const text = event.data.text || (event.data.payload ? `[button] ${event.data.payload}` : "");
      const info = el("div", { class: "nlu" });
      if (nlu) {
        const conf = Number(nlu.confidence);
        info.append(el("span", { class: fixed ? "old" : "" }, "intent ", el("strong", { text: nlu.intent })),
          el("span", { class: conf < 0.5 ? "conf low" : "conf", text: `confidence ${conf.toFixed(2)}` }));
        if (nlu.entities && nlu.entities.length) {
          info.append(el("span", { class: fixed ? "old" : "", text: `entities ${entityText(nlu.entities)}` }));
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
        el("div", { class: "who" }, el("span", { text: `Customer · #${turn.seq}` })),
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
      return node;
    }

    function systemLine(event) {
      const by = event.data.by ? ` by ${event.data.by}` : "";
      switch (event.kind) {
        case "pause": return event.data.reason === "frustration" ? "Handed to a person: the customer is frustrated"
          : `Taken over${by}: the bot is paused`;
        case "resume": return `Handed back to the bot${by}`;
        case "correction": return `Message #${event.data.seq} corrected${by}: intent ${event.data.intent}`;
        case "slot": return `slot ${event.data.name} = ${event.data.value}`;
        case "session_start": return "session started";
        case "restart": return "conversation restarted";
        case "reminder": return `reminder ${event.data.name || ""} set for ${event.data.date_time}: intent ${event.data.intent}`;
        case "reminder_cancelled": return `reminders cancelled: ${event.data.name || event.data.intent || "all"}`;
        case "reminder_skipped": return `reminder ${event.data.name} not run: ${event.data.reason}`;
        default: return event.kind;
      }
    }

    function renderTurns() {
      const fixes = corrections();
      const items = [...turns.values()].sort((a, b) => a.seq - b.seq).map((turn) => {
        const li = el("li", { class: "turn", "data-seq": turn.seq });
        const nlu = (turn.events.find((e) => e.kind === "nlu") || {}).data;
        const sentiment = (turn.events.find((e) => e.kind === "sentiment") || {}).data;
        for (const event of turn.events) {
          if (event.kind === "user" && event.data.reminder) {  // not the customer: a reminder firing (bots/reminders.py)
            li.append(el("div", { class: "sys", text: `reminder ${event.data.reminder.name} fired: intent ${event.data.reminder.intent}` }));
          } else if (event.kind === "user" && event.data.opened) {  // the web chat opened: the bot's welcome follows
            li.append(el("div", { class: "sys", text: "chat opened" }));
          } else if (event.kind === "user") li.append(customer(turn, event, nlu, fixes.get(turn.seq), sentiment));
          else if (event.kind === "bot") li.append(reply(event, false));
          else if (event.kind === "agent") li.append(reply(event, true));
          else if (event.kind !== "nlu" && event.kind !== "sentiment") li.append(el("div", { class: "sys", text: systemLine(event) }));
        }
        return li;
      });
      list.replaceChildren(...items);
    }

    function renderSummary() {
      const badges = $("#status-badges");
      badges.replaceChildren(
        ...(summary.fallback ? [el("span", { class: "badge warn", text: "fell back" })] : []),
        ...(summary.handoff ? [el("span", { class: "badge live", text: "handed off" })] : []),
        ...(summary.flagged ? [el("span", { class: "badge flag", text: "flagged" })] : []),
        ...(summary.reviewed ? [el("span", { class: "badge ok", text: "reviewed" })] : []),
        ...(summary.frustration > 0 ? [el("span", { class: "badge flag", text: `frustrated ×${summary.frustration}` })] : []));
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
    function entityRow(entity = "", value = "") {
      const row = el("div", { class: "entity-row" },
        el("input", { "aria-label": "Entity name", placeholder: "entity", value: entity, list: "entity-names", class: "entity-name" }),
        el("input", { "aria-label": "Entity value", placeholder: "value as written", value, class: "entity-value" }));
      row.append(el("button", { type: "button", "aria-label": "Remove entity", onclick: () => row.remove() }, "×"));
      $("#correct-entities").append(row);
    }
    function openCorrection(seq, text, current) {
      correcting = seq;
      $("#correct-text").textContent = text;
      const select = $("#correct-intent");
      select.replaceChildren(...data.intents.map((i) => el("option", { value: i, text: i })));
      if (current && current.intent) select.value = current.intent;
      $("#correct-entities").replaceChildren();
      for (const e of (current && current.entities) || []) entityRow(e.entity, e.value);
      $("#correct-error").textContent = "";
      dialog.showModal();
      select.focus();
    }
    if (dialog) {
      document.body.append(el("datalist", { id: "entity-names" }, ...data.entities.map((e) => el("option", { value: e }))));
      $("#add-entity").addEventListener("click", () => entityRow());
      $("#correct-cancel").addEventListener("click", () => dialog.close());
      $("#correct-form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const entities = [...dialog.querySelectorAll(".entity-row")].map((r) => ({
          entity: r.querySelector(".entity-name").value.trim(), value: r.querySelector(".entity-value").value.trim(),
        })).filter((e) => e.entity || e.value);
        try {
          const res = await api("POST", `${base}/corrections`, { seq: correcting, intent: $("#correct-intent").value, entities });
          turns.set(res.turn.seq, res.turn);
          if (!summary.tags.includes("corrected")) summary.tags.push("corrected");
          dialog.close();
          renderTurns(); renderSummary();
          notice(`Saved: message #${correcting} is now ${$("#correct-intent").value}.`);
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
        renderTurns(); renderSummary();
      }, "Reply sent.");
    });
    $("#reply-text").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("#reply-form").requestSubmit();
    });

    renderTurns();
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

  // -- live queue: refreshed every few seconds -----------------------------------------------
  function queuePage() {
    const table = $("#queue-table");
    if (!table) return;
    const body = $("tbody", table), count = $("#queue-count");
    async function refresh() {
      try {
        const data = await api("GET", "/review/api/queue?limit=200");
        count.textContent = data.total === 1 ? "1 conversation waiting" : `${data.total} conversations waiting`;
        table.hidden = data.total === 0;
        body.replaceChildren(...data.items.map((c) => {
          const link = `/review/bots/${encodeURIComponent(c.bot)}/conversations/${encodeURIComponent(c.conversation_id)}`;
          const when = new Date(c.last_activity * 1000).toLocaleString();
          return el("tr", {}, el("td", { text: when }), el("td", { text: c.bot }), el("td", { text: c.channel }),
            el("td", {}, el("a", { class: "conv-link", href: link, text: c.conversation_id })),
            el("td", { text: c.last_intent || "—" }));
        }));
      } catch (err) {
        count.textContent = `Could not refresh: ${err.message}`;
      }
    }
    setInterval(refresh, 5000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (role === "viewer") for (const n of document.querySelectorAll(".agent-only")) n.hidden = true;
    localTimes();
    filtersPage();
    transcriptPage();
    queuePage();
  });
})();
