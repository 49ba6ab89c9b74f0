// tracewire viewer: plain JS, no build step, no other origin.
// Trace content is untrusted: it only ever reaches the page through textContent / text nodes.
"use strict";
(function () {
  const main = document.getElementById("main");
  const ROW = 24;
  const PAGE = 50;
  const CLIP = 400;
  const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
  let cleanup = null;

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(typeof kid === "object" ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  async function api(path) {
    const response = await fetch(path, { headers: { accept: "application/json" } });
    const body = await response.json().catch(() => ({ error: { message: response.statusText } }));
    if (!response.ok) {
      const err = new Error((body.error && body.error.message) || response.statusText);
      err.detail = body.error || {};
      throw err;
    }
    return body;
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms >= 10000) return (ms / 1000).toFixed(1) + " s";
    if (ms >= 100) return Math.round(ms) + " ms";
    return ms.toFixed(ms < 10 ? 2 : 1) + " ms";
  }
  function q(value) { return "'" + String(value).replace(/'/g, "''") + "'"; }
  const TYPE_LABELS = { CHAT_MODEL: "CHAT", RETRIEVER: "RETR", EMBEDDING: "EMB", GUARDRAIL: "GUARD",
    EVALUATOR: "EVAL", WORKFLOW: "FLOW", RERANKER: "RANK", UNKNOWN: "?" };
  function typeLabel(t) { return TYPE_LABELS[t] || String(t).slice(0, 5); }
  function traceHref(id) { return "#/trace/" + encodeURIComponent(id); }
  function sessionHref(id) { return "#/session/" + encodeURIComponent(id); }
  function listHref(filter) { return "#/?q=" + encodeURIComponent(filter); }

  function errorBox(message) { return el("div", { class: "error-box", role: "alert", text: message }); }

  // ---------------------------------------------------------------- JSON viewer
  function isTruncated(v) {
    return v && typeof v === "object" && !Array.isArray(v) && v["tracewire.truncated"] === true;
  }
  function clipString(s) {
    const quoted = JSON.stringify(s);
    if (quoted.length <= CLIP) return el("span", { class: "s", text: quoted });
    const span = el("span", { class: "s", text: quoted.slice(0, CLIP) + "…" });
    const btn = el("button", {
      class: "clip-btn show-all", type: "button", text: "show all (" + s.length + " chars)",
      onclick: (ev) => { ev.stopPropagation(); span.textContent = quoted; btn.remove(); },
    });
    return el("span", null, span, btn);
  }
  function jsonNode(v, depth) {
    if (v === null || v === undefined) return el("span", { class: "l", text: "null" });
    if (typeof v === "string") return clipString(v);
    if (typeof v === "number") return el("span", { class: "n", text: String(v) });
    if (typeof v === "boolean") return el("span", { class: "l", text: String(v) });
    if (isTruncated(v)) {
      const size = v.original_size !== undefined ? " — original size " + v.original_size + " bytes" : "";
      return el("span", null, el("span", { class: "truncated", text: "truncated" + size }), " ",
        typeof v.preview === "string" ? clipString(v.preview) : null);
    }
    const entries = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
    const label = Array.isArray(v) ? "[" + entries.length + " items]" : "{" + entries.length + " keys}";
    if (entries.length === 0) return el("span", { text: Array.isArray(v) ? "[]" : "{}" });
    const details = el("details", depth < 3 ? { open: "" } : null, el("summary", { text: label }));
    const addItems = (from, to) => {
      for (const [k, x] of entries.slice(from, to)) {
        details.append(el("div", { class: "item" }, el("span", { class: "k", text: Array.isArray(v) ? k : JSON.stringify(k) }), ": ",
          jsonNode(x, depth + 1)));
      }
    };
    addItems(0, 200);
    if (entries.length > 200) {
      const more = el("button", {
        class: "clip-btn", type: "button", text: "show " + (entries.length - 200) + " more",
        onclick: () => { more.remove(); addItems(200, entries.length); },
      });
      details.append(more);
    }
    return details;
  }
  function jsonView(v) { return el("div", { class: "json" }, jsonNode(v, 0)); }

  // ---------------------------------------------------------------- list page
  function filterError(detail, message) {
    const box = el("div", { class: "error-box", role: "alert", id: "filter-error" });
    box.append(el("div", { text: detail.problem || message }));
    if (typeof detail.text === "string" && typeof detail.position === "number") {
      const text = detail.text, pos = detail.position;
      let end = pos;
      while (end < text.length && !/\s/.test(text[end])) end++;
      const bad = el("span", { class: "bad", text: pos < text.length ? text.slice(pos, end) : "␣" });
      box.append(el("div", { class: "mono" }, text.slice(0, pos), bad, text.slice(end)));
    }
    return box;
  }

  function listPage(params) {
    const state = {
      q: params.get("q") || "", errors: params.get("errors") === "1", range: params.get("range") || "",
      sort: params.get("sort") === "duration" ? "duration" : "time", live: params.get("live") === "1",
      cursors: [null], page: 0, next: null, selected: new Set(),
    };
    const input = el("input", { id: "filter", type: "search", spellcheck: "false", autocomplete: "off",
      placeholder: "status = 'ERROR' AND metadata.tenant = 'acme' AND execution_time_ms > 500" });
    input.value = state.q;
    const form = el("form", { class: "toolbar", id: "filter-form" }, input,
      el("button", { type: "submit", id: "apply" , text: "Apply" }));
    const errorsBtn = el("button", { type: "button", id: "errors-only", text: "Errors only" });
    const rangeBtns = ["15m", "1h", "24h", "7d", ""].map((r) => el("button", {
      type: "button", id: "range-" + (r || "all"), "data-range": r, text: r || "all time" }));
    const sortSel = el("select", { id: "sort" }, el("option", { value: "time", text: "Newest first" }),
      el("option", { value: "duration", text: "Slowest first" }));
    sortSel.value = state.sort;
    const liveBtn = el("button", { type: "button", id: "live", text: "Live" });
    const compareBtn = el("button", { type: "button", id: "compare-selected", text: "Compare selected", disabled: "" });
    const quick = el("div", { class: "toolbar" }, errorsBtn, el("span", { class: "muted", text: "Time:" }),
      ...rangeBtns, sortSel, liveBtn, compareBtn);
    const errorSlot = el("div");
    const tbody = el("tbody");
    const table = el("table", { class: "list", id: "trace-list" }, el("thead", null, el("tr", null,
      ...["", "Time (UTC)", "Name", "State", "HTTP", "Duration", "Session", "User", "Tokens", "Request"].map(
        (h) => el("th", { text: h })))), tbody);
    const status = el("span", { class: "muted", id: "list-status" });
    const newer = el("button", { type: "button", id: "newer", text: "← Newer" });
    const older = el("button", { type: "button", id: "older", text: "Older →" });
    main.replaceChildren(form, quick, errorSlot, table, el("div", { class: "pager" }, newer, older, status));

    function sync() {
      errorsBtn.classList.toggle("on", state.errors);
      for (const b of rangeBtns) b.classList.toggle("on", b.dataset.range === state.range);
      liveBtn.classList.toggle("on", state.live);
      newer.disabled = state.page === 0;
      older.disabled = !state.next;
      compareBtn.disabled = state.selected.size !== 2;
      const p = new URLSearchParams();
      if (state.q) p.set("q", state.q);
      if (state.errors) p.set("errors", "1");
      if (state.range) p.set("range", state.range);
      if (state.sort !== "time") p.set("sort", state.sort);
      if (state.live) p.set("live", "1");
      const hash = "#/" + (p.toString() ? "?" + p.toString() : "");
      if (location.hash !== hash) history.replaceState(null, "", hash);
    }

    let shown = null;  // ids on the last load: live mode marks the rows that are new
    function row(t) {
      const box = el("input", { type: "checkbox", class: "pick", "aria-label": "select for compare" });
      box.checked = state.selected.has(t.trace_id);
      box.addEventListener("click", (ev) => {
        ev.stopPropagation();
        if (box.checked) state.selected.add(t.trace_id); else state.selected.delete(t.trace_id);
        sync();
      });
      const tr = el("tr", { class: "trace-row", "data-trace-id": t.trace_id },
        el("td", null, box),
        el("td", { class: "mono", text: fmtTime(t.time_ms) }),
        el("td", { class: "name", text: t.name || "" }),
        el("td", { class: "state-" + t.state, text: t.state }),
        el("td", { class: "num", text: t.status_code === null ? "" : t.status_code }),
        el("td", { class: "num", text: fmtMs(t.duration_ms) }),
        el("td", null, t.session_id ? el("a", { href: sessionHref(t.session_id), text: t.session_id }) : ""),
        el("td", null, t.user_id ? el("a", { href: listHref("user_id = " + q(t.user_id)), text: t.user_id }) : ""),
        el("td", { class: "num", text: t.tokens === null ? "" : t.tokens }),
        el("td", { class: "preview", text: t.request_preview || "", title: t.request_preview || "" }));
      tr.addEventListener("click", (ev) => {
        if (ev.target.closest("a")) return;
        location.hash = traceHref(t.trace_id);
      });
      return tr;
    }

    let loading = 0;
    async function load() {
      const ticket = ++loading;
      const p = new URLSearchParams({ limit: String(PAGE), sort: state.sort });
      if (state.q) p.set("filter", state.q);
      if (state.errors) p.set("errors", "1");
      if (state.range) p.set("since_ms", String(Date.now() - RANGES[state.range]));
      const cursor = state.cursors[state.page];
      if (cursor) p.set("cursor", cursor);
      status.textContent = "loading…";
      try {
        const body = await api("/api/traces?" + p.toString());
        if (ticket !== loading) return;
        errorSlot.replaceChildren();
        const rows = body.traces.map(row);
        if (shown && state.live) rows.forEach((r, k) => { if (!shown.has(body.traces[k].trace_id)) r.classList.add("new"); });
        shown = new Set(body.traces.map((t) => t.trace_id));
        tbody.replaceChildren(...rows);
        if (body.traces.length === 0) tbody.append(el("tr", null, el("td", { colspan: "10", class: "muted", text: "No traces match." })));
        state.next = body.next_cursor;
        status.textContent = "page " + (state.page + 1) + " · " + body.traces.length + " traces" +
          (state.live ? " · live" : "");
      } catch (err) {
        if (ticket !== loading) return;
        errorSlot.replaceChildren(filterError(err.detail || {}, err.message));
        status.textContent = "";
      }
      sync();
    }
    function restart() { state.cursors = [null]; state.page = 0; load(); }

    form.addEventListener("submit", (ev) => { ev.preventDefault(); state.q = input.value.trim(); restart(); });
    errorsBtn.addEventListener("click", () => { state.errors = !state.errors; restart(); });
    for (const b of rangeBtns) b.addEventListener("click", () => { state.range = b.dataset.range; restart(); });
    sortSel.addEventListener("change", () => { state.sort = sortSel.value; restart(); });
    newer.addEventListener("click", () => { if (state.page > 0) { state.page--; load(); } });
    older.addEventListener("click", () => {
      if (!state.next) return;
      state.cursors[state.page + 1] = state.next; state.page++; load();
    });
    compareBtn.addEventListener("click", () => {
      const [a, b] = [...state.selected];
      location.hash = "#/compare/" + encodeURIComponent(a) + "/" + encodeURIComponent(b);
    });
    let timer = null;
    function setLive(on) {
      state.live = on;
      if (timer) { clearInterval(timer); timer = null; }
      if (on) timer = setInterval(() => { if (state.page === 0 && !document.hidden) load(); }, 2000);
      sync();
    }
    liveBtn.addEventListener("click", () => { setLive(!state.live); if (state.live) load(); });
    setLive(state.live);
    load();
    return () => { if (timer) clearInterval(timer); };
  }

  // ---------------------------------------------------------------- trace page
  function kvTable(pairs) {
    return el("table", { class: "kv" }, ...pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== "")
      .map(([k, v]) => el("tr", null, el("td", { text: k }), el("td", null, typeof v === "object" ? v : String(v)))));
  }

  function spanDetail(s, critical) {
    const out = [el("h2", { id: "span-title", text: s.name })];
    out.push(kvTable([
      ["type", s.type], ["status", s.status + (s.status_message ? ": " + s.status_message : "")],
      ["span id", el("code", { text: s.span_id })], ["starts at", fmtMs(s.start_ms)],
      ["duration", fmtMs(s.duration_ms)], ["critical path", critical.has(s.span_id) ? "yes" : "no"],
    ]));
    const usage = s.attributes["mlflow.chat.tokenUsage"];
    if (usage) { out.push(el("h3", { text: "Token usage" }), jsonView(usage)); }
    out.push(el("h3", { text: "Inputs" }), el("div", { id: "span-inputs" }, jsonView(s.inputs)));
    out.push(el("h3", { text: "Outputs" }), el("div", { id: "span-outputs" }, jsonView(s.outputs)));
    const attrs = Object.entries(s.attributes).filter(([k]) => k !== "mlflow.chat.tokenUsage");
    if (attrs.length) out.push(el("h3", { text: "Attributes" }), kvTable(attrs.map(([k, v]) => [k, jsonView(v)])));
    if (s.events.length) {
      out.push(el("h3", { text: "Events" }));
      for (const e of s.events) {
        const a = e.attributes || {};
        const box = el("div", { class: "event" }, el("b", { text: e.name }));
        if (e.name === "exception") {
          box.append(el("div", { class: "state-ERROR", text: (a["exception.type"] || "") + ": " + (a["exception.message"] || "") }));
          if (a["exception.stacktrace"]) box.append(el("pre", { class: "stack", text: a["exception.stacktrace"] }));
        } else if (Object.keys(a).length) {
          box.append(jsonView(a));
        }
        out.push(box);
      }
    }
    return out;
  }

  async function tracePage(traceId, spanId) {
    main.replaceChildren(el("p", { class: "muted", text: "Loading trace…" }));
    const t0 = performance.now();
    let view;
    try {
      view = await api("/api/traces/" + encodeURIComponent(traceId) + "?details=0");
    } catch (err) {
      main.replaceChildren(errorBox(err.message));
      return null;
    }
    const t1 = performance.now();
    const s = view.summary;
    const spans = view.spans;
    const critical = new Set(view.critical_path);
    const total = Math.max(view.total_ms, 1e-6);
    const copy = el("button", { type: "button", id: "copy-id", text: "copy",
      onclick: () => { navigator.clipboard && navigator.clipboard.writeText(s.trace_id); } });
    const head = el("div", { class: "trace-head" },
      el("h1", { id: "trace-name", text: s.name || "(unnamed)" }),
      el("span", { class: "state-" + s.state, text: s.state }),
      el("span", { text: fmtMs(s.duration_ms) }),
      el("span", { class: "muted", text: fmtTime(s.time_ms) + " UTC" }),
      el("span", null, el("code", { id: "trace-id", text: s.trace_id }), " ", copy),
      s.session_id ? el("a", { id: "session-link", href: sessionHref(s.session_id), text: "session " + s.session_id }) : null,
      s.user_id ? el("a", { href: listHref("user_id = " + q(s.user_id)), text: "user " + s.user_id + "'s traces" }) : null,
      s.tokens !== null ? el("span", { text: s.tokens + " tokens" }) : null,
      el("span", { class: "muted", text: spans.length + " spans" }),
      el("a", { href: "#/compare/" + encodeURIComponent(s.trace_id), text: "compare…" }));
    const info = view.info || {};
    const meta = el("details", { class: "trace-meta", id: "trace-meta" }, el("summary", { text: "Trace metadata and tags" }),
      jsonView({ client_request_id: info.client_request_id, request_preview: info.request_preview,
        response_preview: info.response_preview, metadata: info.trace_metadata, tags: info.tags }));
    head.append(meta);
    const critBtn = el("button", { type: "button", id: "crit-toggle", class: "on", text: "Critical path" });
    const legend = el("div", { class: "legend" }, critBtn,
      el("span", null, el("i", { class: "lg-crit" }), "critical path"),
      view.marks.ttfb_ms !== undefined ? el("span", { text: "┆ green: first byte " + fmtMs(view.marks.ttfb_ms) }) : null,
      view.marks.disconnect_ms !== undefined ? el("span", { class: "state-ERROR", text: "┆ red: client disconnected" }) : null);
    const tree = el("div", { class: "tree", id: "span-tree", tabindex: "0" });
    const inner = el("div", { class: "tree-inner" });
    tree.append(inner);
    const detail = el("div", { class: "detail", id: "span-detail" }, el("p", { class: "muted", text: "Select a span." }));
    const ticks = el("div", { class: "ticks" });
    for (let k = 0; k <= 4; k++) {
      const tick = el("span", { class: "tick", text: fmtMs((total * k) / 4) });
      tick.style.left = k * 25 + "%";
      ticks.append(tick);
    }
    const axis = el("div", { class: "axis" }, el("span", { text: " span" }), ticks);
    main.replaceChildren(head, legend, el("div", { class: "split" }, el("div", { class: "tree-wrap" }, axis, tree), detail));

    // Which spans are hidden under a collapsed parent; recomputed on toggle only.
    const collapsed = new Set();
    const hasKids = spans.map((sp, i) => i + 1 < spans.length && spans[i + 1].depth > sp.depth);
    let visible = spans.map((_, i) => i);
    function recompute() {
      visible = [];
      let hideBelow = Infinity;
      for (let i = 0; i < spans.length; i++) {
        const d = spans[i].depth;
        if (d > hideBelow) continue;
        hideBelow = Infinity;
        visible.push(i);
        if (collapsed.has(i)) hideBelow = d;
      }
      inner.style.height = visible.length * ROW + "px";
    }
    let selected = -1;
    const marks = [];
    for (const [name, at] of [["ttfb", view.marks.ttfb_ms], ["disconnect", view.marks.disconnect_ms]]) {
      if (at === undefined) continue;
      const m = el("div", { class: "mark " + name, title: name });
      m.style.left = "calc(45% + " + (at / total) * 55 + "%)";
      marks.push(m);
    }
    function renderRows() {
      const first = Math.max(0, Math.floor(tree.scrollTop / ROW) - 10);
      const last = Math.min(visible.length, first + Math.ceil(tree.clientHeight / ROW) + 20);
      const rows = [];
      for (let v = first; v < last; v++) {
        const i = visible[v];
        const sp = spans[i];
        const cls = "span-row" + (sp.status === "ERROR" ? " error" : "") + (critical.has(sp.span_id) ? " crit" : "") +
          (i === selected ? " sel" : "");
        const toggle = hasKids[i] ? el("span", { class: "twisty", text: collapsed.has(i) ? "▸ " : "▾ " }) : el("span", { text: "  " });
        const name = el("div", { class: "span-name" }, toggle,
          el("span", { class: "type type-" + sp.type.replace(/[^A-Z_]/g, ""), text: typeLabel(sp.type), title: sp.type }),
          el("span", { class: "sname", text: sp.name }),
          sp.status === "ERROR" ? el("span", { class: "err-mark", text: "!", title: "error" }) : null);
        name.style.paddingLeft = 4 + sp.depth * 14 + "px";
        const bar = el("div", { class: "bar", title: fmtMs(sp.duration_ms) });
        bar.style.left = (sp.start_ms / total) * 100 + "%";
        bar.style.width = ((sp.duration_ms || 0) / total) * 100 + "%";
        const r = el("div", { class: cls, "data-index": String(i), "data-span-id": sp.span_id }, name,
          el("div", { class: "lane" }, bar));
        r.style.top = v * ROW + "px";
        rows.push(r);
      }
      inner.replaceChildren(...rows, ...marks);
    }
    async function select(i) {
      selected = i;
      history.replaceState(null, "", traceHref(traceId) + "/" + encodeURIComponent(spans[i].span_id));
      renderRows();
      const sp = spans[i];
      if (!sp.attributes) {
        try {
          Object.assign(sp, await api("/api/traces/" + encodeURIComponent(traceId) + "/spans/" + encodeURIComponent(sp.span_id)));
        } catch (err) {
          if (selected === i) detail.replaceChildren(errorBox(err.message));
          return;
        }
      }
      if (selected === i) detail.replaceChildren(...spanDetail(sp, critical));
    }
    inner.addEventListener("click", (ev) => {
      const r = ev.target.closest(".span-row");
      if (!r) return;
      const i = Number(r.dataset.index);
      if (ev.target.classList.contains("twisty")) {
        if (collapsed.has(i)) collapsed.delete(i); else collapsed.add(i);
        recompute(); renderRows(); return;
      }
      select(i);
    });
    tree.addEventListener("keydown", (ev) => {
      if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
      ev.preventDefault();
      const pos = Math.max(0, visible.indexOf(selected) + (ev.key === "ArrowDown" ? 1 : -1));
      if (pos < visible.length) select(visible[pos]);
    });
    critBtn.addEventListener("click", () => {
      critBtn.classList.toggle("on");
      tree.classList.toggle("crit-off", !critBtn.classList.contains("on"));
    });
    let frame = 0;
    tree.addEventListener("scroll", () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; renderRows(); });
    });
    recompute();
    renderRows();
    const pick = spanId ? spans.findIndex((sp) => sp.span_id === spanId) : -1;
    if (pick >= 0) {
      select(pick);
      tree.scrollTop = Math.max(0, visible.indexOf(pick) * ROW - 100);
    } else if (spans.length) {
      select(0);
    }
    // Timings for the benchmark: fetch + JSON parse, then first render.
    document.body.dataset.fetchMs = String(Math.round(t1 - t0));
    document.body.dataset.renderMs = String(Math.round(performance.now() - t1));
    return null;
  }

  // ---------------------------------------------------------------- session page
  async function sessionPage(sessionId) {
    main.replaceChildren(el("p", { class: "muted", text: "Loading session…" }));
    let view;
    try { view = await api("/api/sessions/" + encodeURIComponent(sessionId)); } catch (err) {
      main.replaceChildren(errorBox(err.message)); return;
    }
    const t = view.totals;
    const conv = el("div", { class: "conv", id: "conversation" }, ...view.traces.map((r) => el("div",
      { class: "turn" + (r.state === "ERROR" ? " error" : ""), "data-trace-id": r.trace_id },
      el("div", { class: "toolbar" }, el("a", { href: traceHref(r.trace_id), text: r.name || r.trace_id }),
        el("span", { class: "muted", text: fmtTime(r.time_ms) }), el("span", { class: "state-" + r.state, text: r.state }),
        el("span", { text: fmtMs(r.duration_ms) }), r.tokens !== null ? el("span", { text: r.tokens + " tokens" }) : null),
      el("div", { class: "bubble req", text: r.request_preview || "" }),
      el("div", { class: "bubble res", text: r.response_preview || "" }))));
    main.replaceChildren(
      el("div", { class: "trace-head" }, el("h1", { text: "Session " }, el("code", { id: "session-id", text: view.session_id })),
        el("a", { href: listHref("session_id = " + q(view.session_id)), text: "as a list" })),
      el("div", { class: "totals", id: "session-totals" },
        el("span", null, el("b", { text: t.traces }), " traces"), el("span", null, el("b", { text: t.tokens }), " tokens"),
        el("span", null, el("b", { text: fmtMs(t.duration_ms) }), " total duration"),
        el("span", { class: t.errors ? "state-ERROR" : "" }, el("b", { text: t.errors }), " errors")),
      conv);
  }

  // ---------------------------------------------------------------- compare page
  async function comparePage(a, b) {
    const ia = el("input", { id: "cmp-a", placeholder: "trace id A", class: "mono", size: "38" });
    const ib = el("input", { id: "cmp-b", placeholder: "trace id B", class: "mono", size: "38" });
    ia.value = a || ""; ib.value = b || "";
    const form = el("form", { class: "toolbar" }, ia, ib, el("button", { type: "submit", text: "Compare" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.hash = "#/compare/" + encodeURIComponent(ia.value.trim()) + "/" + encodeURIComponent(ib.value.trim());
    });
    main.replaceChildren(form);
    if (!a || !b) { main.append(el("p", { class: "muted", text: "Pick two traces (or tick two rows in the list)." })); return; }
    let view;
    try { view = await api("/api/compare?" + new URLSearchParams({ a, b }).toString()); } catch (err) {
      main.append(errorBox(err.message)); return;
    }
    const tbody = el("tbody");
    for (const r of view.rows) {
      const delta = r.duration_delta_ms;
      const out = r.outputs_equal === null ? "–" : r.outputs_equal ? "same" : "differs";
      const name = el("td", { text: r.name, title: r.path });
      name.style.paddingLeft = 6 + r.depth * 14 + "px";
      const tr = el("tr", { class: "cmp-row" + (r.a && r.b ? "" : " only"), "data-path": r.path }, name,
        el("td", { class: "num", text: r.a ? fmtMs(r.a.duration_ms) : "—" }),
        el("td", { class: "num", text: r.b ? fmtMs(r.b.duration_ms) : "—" }),
        el("td", { class: "num " + (delta > 0 ? "slower" : delta < 0 ? "faster" : ""),
          text: delta === null ? "" : (delta > 0 ? "+" : "") + fmtMs(delta) }),
        el("td", { class: r.outputs_equal === false ? "diff" : "muted", text: out }));
      let open = null;
      tr.addEventListener("click", () => {
        if (open) { open.remove(); open = null; return; }
        open = el("tr", { class: "cmp-detail" }, el("td", { colspan: "5" }, el("div", { class: "cmp-out" },
          el("div", null, el("b", { text: "A outputs" }), r.a ? jsonView(r.a.outputs) : "—"),
          el("div", null, el("b", { text: "B outputs" }), r.b ? jsonView(r.b.outputs) : "—"))));
        tr.after(open);
      });
      tbody.append(tr);
    }
    const side = (label, sm) => el("div", null, el("b", { text: label + " " }),
      el("a", { href: traceHref(sm.trace_id), text: sm.name || sm.trace_id }), " ",
      el("span", { class: "state-" + sm.state, text: sm.state }), " " + fmtMs(sm.duration_ms) + " · " + fmtTime(sm.time_ms));
    main.append(el("div", { class: "trace-head" }, side("A", view.a), side("B", view.b)),
      el("table", { class: "cmp", id: "compare-table" }, el("thead", null, el("tr", null,
        ...["Span (aligned by name path)", "A", "B", "Δ (B − A)", "Outputs"].map((h) => el("th", { text: h })))), tbody));
  }

  // ---------------------------------------------------------------- router
  function route() {
    if (cleanup) { cleanup(); cleanup = null; }
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const parts = path.split("/").filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
    if (parts[0] === "trace" && parts[1]) tracePage(parts[1], parts[2]);
    else if (parts[0] === "session" && parts[1]) sessionPage(parts.slice(1).join("/"));
    else if (parts[0] === "compare") comparePage(parts[1], parts[2]);
    else cleanup = listPage(new URLSearchParams(query || ""));
    window.scrollTo(0, 0);
  }
  window.addEventListener("hashchange", route);
  api("/api/info").then((info) => { document.getElementById("table-name").textContent = info.table; }).catch(() => {});
  route();
})();
