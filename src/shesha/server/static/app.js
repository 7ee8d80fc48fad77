// shesha's pages: the live query, uploads with progress, and small enhancements.
// Untrusted text (documents, output, model replies) is only ever set with textContent.
"use strict";

const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else except " +
  "finally for from global if import in is lambda nonlocal not or pass raise return try while with yield print").split(" "));

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A small Python highlighter: tokens become spans whose text is set with textContent.
function highlight(code) {
  const pre = el("pre", "code");
  const pattern = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|(\b\d[\d_.]*\b)|([A-Za-z_]\w*)|([\s\S])/g;
  let m;
  while ((m = pattern.exec(code)) !== null) {
    if (m[1]) pre.appendChild(el("span", "c1", m[1]));
    else if (m[2]) pre.appendChild(el("span", "s", m[2]));
    else if (m[3]) pre.appendChild(el("span", "mi", m[3]));
    else if (m[4]) pre.appendChild(KEYWORDS.has(m[4]) ? el("span", "k", m[4]) : document.createTextNode(m[4]));
    else pre.appendChild(document.createTextNode(m[5]));
  }
  return pre;
}

function liveRun(box) {
  const root = box.dataset.root, id = box.dataset.query, project = box.dataset.project;
  const steps = document.getElementById("steps");
  const state = document.getElementById("state");
  const cancel = document.getElementById("cancel");
  const totals = { tokens: 0, cost: 0, subs: 0, costKnown: true };
  const stepNodes = new Map();
  let lastCode = null;

  function step(n) {
    if (!stepNodes.has(n)) {
      const li = el("li", "step");
      li.appendChild(el("h3", null, n === 0 ? "Step 0 (the engine's)" : "Step " + n));
      const meta = el("p", "muted", "");
      li.appendChild(meta);
      const subs = el("details", "subs"); subs.hidden = true;
      const summary = el("summary", null, "0 sub-calls"); subs.appendChild(summary);
      const list = el("ol"); subs.appendChild(list);
      li.appendChild(subs);
      steps.appendChild(li);
      stepNodes.set(n, { li, meta, subs, summary, list, count: 0, tokens: 0 });
    }
    return stepNodes.get(n);
  }
  function showTotals(n) {
    document.getElementById("t-step").textContent = n;
    document.getElementById("t-subs").textContent = totals.subs;
    document.getElementById("t-tokens").textContent = totals.tokens.toLocaleString();
    document.getElementById("t-cost").textContent = totals.costKnown ? "$" + totals.cost.toFixed(4) : "cost unknown";
  }
  function setState(text, cls) { state.textContent = text; state.className = "status " + (cls || text); }
  function finish(record) {
    cancel.disabled = true;
    source.close();
    const link = document.getElementById("trace-link");
    const result = record.result;
    if (result && result.answer !== null && result.answer !== undefined) {
      const box = document.getElementById("answer");
      document.getElementById("answer-text").textContent = result.answer;
      box.hidden = false;
    }
    if (result && result.trace_path) {
      const name = result.trace_path.split("/").pop();
      link.firstChild.href = root + "/p/" + encodeURIComponent(project) + "/t/" + encodeURIComponent(name);
      link.hidden = false;
    }
  }

  const source = new EventSource(root + "/api/queries/" + encodeURIComponent(id) + "/events");
  source.onmessage = () => {};
  const on = (type, fn) => source.addEventListener(type, (ev) => fn(JSON.parse(ev.data)));
  on("queued", (r) => setState(r.position > 1 ? "waiting: " + r.position + " in line" : "next in line", "queued"));
  on("started", () => setState("running"));
  on("llm_response", (r) => {
    const s = step(r.iteration);
    totals.tokens += r.prompt_tokens + r.completion_tokens;
    if (r.cost_usd === null) totals.costKnown = false; else totals.cost += r.cost_usd;
    s.meta.textContent = "model " + ((r.duration_ms || 0) / 1000).toFixed(2) + " s · " +
      (r.prompt_tokens + r.completion_tokens).toLocaleString() + " tokens";
    showTotals(r.iteration);
  });
  on("code", (r) => {
    const s = step(r.iteration);
    const block = el("div", "block");
    block.appendChild(highlight(r.code));
    s.li.insertBefore(block, s.subs);
    lastCode = block;
  });
  on("exec_result", (r) => {
    if (!lastCode) return;
    const out = [r.stdout, r.stderr, r.error].filter(Boolean).join("");
    lastCode.appendChild(el("p", "muted", r.status + " · " + ((r.duration_ms || 0) / 1000).toFixed(2) + " s"));
    lastCode.appendChild(el("pre", "output", out || "(no output)"));
  });
  on("subcall_request", (r) => {
    const s = step(r.iteration);
    s.count += 1; totals.subs += 1;
    s.subs.hidden = false;
    s.summary.textContent = s.count + " sub-calls";
    const item = el("li");
    item.appendChild(el("strong", null, r.instruction));
    item.appendChild(el("span", "muted", " (" + r.content_chars.toLocaleString() + " chars)"));
    item.appendChild(el("pre", "output", r.content_preview));
    s.list.appendChild(item);
    showTotals(r.iteration);
  });
  on("subcall_response", (r) => {
    if (r.cached) return;  // answered from the cache: nothing spent
    totals.tokens += (r.prompt_tokens || 0) + (r.completion_tokens || 0);
    if (r.error === null && r.cost_usd === null) totals.costKnown = false;
    else if (r.cost_usd) totals.cost += r.cost_usd;
    showTotals(r.iteration);
  });
  for (const kind of ["nudge", "repeat_nudge", "unseen_answer", "warning", "limit"]) {
    on(kind, (r) => step(r.iteration).li.appendChild(el("p", "note", r.message)));
  }
  on("final", (r) => step(r.iteration).li.appendChild(el("p", "final", "FINAL: " + (r.answer === null ? "(none)" : r.answer))));
  on("done", (r) => { setState(r.result.status); finish(r); });
  on("cancelled", (r) => { setState("cancelled"); finish(r); });
  on("failed", (r) => {
    setState("failed");
    steps.appendChild(el("li", "step error", r.error));
    finish(r);
  });
  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    fetch(root + "/api/queries/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
  });
}

function uploads(form) {
  const progress = document.getElementById("upload-progress");
  const result = document.getElementById("upload-result");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    progress.hidden = false; progress.value = 0;
    result.textContent = "";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = 100 * e.loaded / e.total; };
    xhr.onload = () => {
      progress.value = 100;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = { error: xhr.statusText }; }
      if (xhr.status >= 400) {
        result.appendChild(el("p", "error", body.error || ("upload failed: " + xhr.status)));
        if (body.hint) result.appendChild(el("p", "muted", "hint: " + body.hint));
        return;
      }
      const stored = body.stored || [], failed = body.failed || [];
      result.appendChild(el("p", "ok", stored.length + " stored, " + failed.length + " failed"));
      for (const f of failed) {
        const [message, hint] = f.error.split("\nHint: ");
        result.appendChild(el("p", "error", f.path.split("/").pop() + ": " + message));
        if (hint) result.appendChild(el("p", "muted", "hint: " + hint));
      }
      if (stored.length) { const again = el("a", null, "Show the documents"); again.href = location.pathname; result.appendChild(again); }
    };
    xhr.onerror = () => result.appendChild(el("p", "error", "The upload failed: the server did not answer."));
    xhr.send(new FormData(form));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) liveRun(live);
  const form = document.getElementById("upload");
  if (form) uploads(form);
  const incomplete = document.getElementById("incomplete");
  if (incomplete) setTimeout(() => location.reload(), 1000 * Number(incomplete.dataset.refresh || 2));
});
