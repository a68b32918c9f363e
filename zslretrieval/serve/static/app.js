// zslr serve: the search page. Plain JavaScript, no build step, nothing loaded from elsewhere.
// The query lives in the URL (/?attributes=stripes,water&class=zebra&top_k=24), so a search can be
// shared and reloaded; an uploaded example image cannot be put in a URL and is kept in memory only.
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = ["attributes", "text", "class"];
// filters and the relevance cut-off: applied by the server inside the search (never a cut of a page)
const FILTERS = ["folder", "path_glob", "after", "before", "min_bytes", "min_score"];
// marks: catalog id -> 1 (right) or -1 (wrong); "Refine" sends them as more_like / less_like
const state = { vocab: [], caps: {}, file: null, offset: 0, topK: 24, params: null, loading: false, more: false,
                marks: new Map() };

function norm(s) { return s.toLowerCase().replace(/[\s_+\-]+/g, ""); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setStatus(text, isError, suggestions) {
  const s = $("status");
  s.replaceChildren(text);
  s.className = isError ? "error" : "";
  for (const name of suggestions || []) {
    const b = el("button", { type: "button", class: "sugg" }, name);
    b.addEventListener("click", () => replaceUnknown(name));
    s.append(b);
  }
}

// ----------------------------------------------------------------------------- URL state
function readUrl() {
  const q = new URLSearchParams(location.search);
  for (const f of FIELDS) $(f).value = q.getAll(f).join(f === "attributes" ? ", " : " ");
  for (const f of FILTERS) $(f).value = q.get(f) || "";
  state.marks = new Map();
  for (const [key, v] of [["more_like", 1], ["less_like", -1]]) {
    for (const id of (q.get(key) || "").split(",")) if (/^\d+$/.test(id)) state.marks.set(parseInt(id, 10), v);
  }
  updateRefine();
  const k = parseInt(q.get("top_k") || "24", 10);
  if ([12, 24, 48, 96].includes(k)) $("top_k").value = String(k);
  return q;
}

function formParams() {
  const p = new URLSearchParams();
  for (const f of FIELDS) {
    const v = $(f).value.trim();
    if (v && !$("f-" + f).hidden) p.append(f, v);
  }
  for (const f of FILTERS) {
    const v = $(f).value.trim();
    if (v) p.set(f, v);
  }
  p.set("top_k", $("top_k").value);
  return p;
}

function markedParams(p) {
  const ids = (v) => [...state.marks].filter(([, m]) => m === v).map(([id]) => id).join(",");
  if (ids(1)) p.set("more_like", ids(1)); else p.delete("more_like");
  if (ids(-1)) p.set("less_like", ids(-1)); else p.delete("less_like");
  return p;
}

function updateRefine() {
  const n = state.marks.size;
  $("refine").disabled = n === 0;
  $("refine").textContent = n ? `Refine (${n} marked)` : "Refine";
}

function toggleMark(fig, id, value) {
  if (state.marks.get(id) === value) state.marks.delete(id); else state.marks.set(id, value);
  for (const f of document.querySelectorAll(`figure.hit[data-id="${id}"]`)) paintMark(f, state.marks.get(id));
  updateRefine();
}

function paintMark(fig, m) {
  fig.classList.toggle("right", m === 1);
  fig.classList.toggle("wrong", m === -1);
  fig.querySelector("button.yes").setAttribute("aria-pressed", String(m === 1));
  fig.querySelector("button.no").setAttribute("aria-pressed", String(m === -1));
}

function hasQuery(p) { return FIELDS.some((f) => p.has(f)); }

// ----------------------------------------------------------------------------- rendering
function describe(resolved, query) {
  const why = el("p", { class: "why" });
  if (resolved.class) {
    why.append("class ", el("b", {}, resolved.class));
    if (resolved.attributes && resolved.attributes.length) {
      why.append(" — its strongest attributes: " +
        resolved.attributes.map((a) => `${a.name} ${a.weight.toFixed(2)}`).join(", "));
    }
  } else if (resolved.attributes) {
    why.append("understood as: ");
    resolved.attributes.forEach((a, i) => {
      if (i) why.append(", ");
      why.append(el("b", {}, a.name), a.weight === 1 ? "" : `=${a.weight}`);
    });
  } else if (resolved.image) {
    why.append("example image ", el("b", {}, resolved.image));
  } else if (resolved.text) {
    why.append("text ", el("b", {}, resolved.text));
  } else {
    why.append(query.kind + ": " + query.text);
  }
  // A raw-feature index answers through the general model: say what the words were read as (prompt,
  // WordNet definitions) and which ImageNet classes the query vector is nearest to.
  const how = resolved.understood_as;
  if (how) {
    why.append(" — read as ", how.texts.map((t) => `“${t}”`).join(" + "));
    const defs = (how.glosses || []).flat();
    if (defs.length) why.append(" with WordNet: ", el("i", {}, defs.join(" / ")));
    // ImageNet classes the name names (exact lemma, or kinds of it: "fox" -> red fox, kit fox ...)
    const anchored = (how.anchors || []).filter((a) => a && a.classes);
    if (anchored.length) {
      why.append("; anchored on ImageNet " +
        anchored.map((a) => `${a.classes.join(", ")} (${a.rule}, share ${a.weight})`).join(" / "));
    }
    if (how.nearest_imagenet && how.nearest_imagenet.length) {
      why.append("; looks like ImageNet " +
        how.nearest_imagenet.map((c) => `${c.name} (${c.cosine.toFixed(2)})`).join(", "));
    }
    // A model's sentence map: the attributes the text reads as, and the known classes nearest to it
    // (unseen ones marked) and whose people-written descriptions it reads most like
    if (how.nearest_attributes && how.nearest_attributes.length) {
      why.append("; attributes " + how.nearest_attributes.map((a) => a.name).join(", "));
    }
    if (how.nearest_classes && how.nearest_classes.length) {
      why.append("; nearest classes " + how.nearest_classes.slice(0, 3)
        .map((c) => `${c.name}${c.seen === false ? " (unseen)" : ""} ${c.cosine.toFixed(2)}`).join(", "));
    }
    if (how.reads_like && how.reads_like.length) {
      why.append("; reads like the descriptions of " +
        how.reads_like.map((c) => `${c.name} ${c.cosine.toFixed(2)}`).join(", "));
    }
  }
  const fb = resolved.feedback;
  if (fb) {
    why.append(" — refined with ", el("b", {}, `${fb.more_like.length} right`), ", ",
               el("b", {}, `${fb.less_like.length} wrong`), ` (${fb.rule})`);
  }
  if (resolved.filter) {
    why.append(" — only images with " + Object.entries(resolved.filter).map(([k, v]) => `${k} ${v}`).join(", "));
  }
  return why;
}

function hitFigure(h) {
  const img = el("img", { src: h.thumb, alt: h.name, loading: "lazy", width: 256, height: 256 });
  img.addEventListener("error", () => img.replaceWith(el("div", { class: "ph" }, "no image file", el("br"), "id " + h.id)));
  const link = el("a", { href: h.image, target: "_blank", rel: "noopener", title: h.name }, img);
  const rel = h.relevance === null || h.relevance === undefined ? null : h.relevance;
  const cap = el("figcaption", {},
    el("span", { class: "rank" }, "#" + h.rank), " · ",
    el("span", { class: "score" }, h.score.toFixed(4)), " · ",
    ...(rel === null ? [] : [el("span", { class: "rel", title: "relevance (comparable across queries)" },
                                "rel " + rel.toFixed(2)), " · "]),
    el("span", { class: "label" }, h.label === null ? "–" : h.label), el("br"),
    el("span", { class: "name", title: h.name }, h.name.split("/").pop()));
  const yes = el("button", { type: "button", class: "mark yes", title: "right: more like this", "aria-pressed": "false" }, "✓");
  const no = el("button", { type: "button", class: "mark no", title: "wrong: less like this", "aria-pressed": "false" }, "✗");
  const fig = el("figure", { class: "hit", "data-id": h.id }, link, cap, el("div", { class: "marks" }, yes, no));
  yes.addEventListener("click", () => toggleMark(fig, h.id, 1));
  no.addEventListener("click", () => toggleMark(fig, h.id, -1));
  paintMark(fig, state.marks.get(h.id));
  return fig;
}

function render(data, append) {
  const main = $("results");
  if (!append) main.replaceChildren();
  data.queries.forEach((q, i) => {
    let sec = main.querySelector(`section[data-q="${i}"]`);
    if (!sec) {
      sec = el("section", { class: "query", "data-q": i },
        el("h2", {}, `${q.query.kind}: ${q.query.text}`), describe(q.resolved, q.query), el("div", { class: "grid" }));
      main.append(sec);
    }
    const grid = sec.querySelector(".grid");
    for (const h of q.results) grid.append(hitFigure(h));
    if (!q.results.length && !append) {
      grid.append(el("p", {}, FILTERS.some((f) => state.params.has(f))
        ? "no results: no image matches the filters and the relevance cut-off" : "no results: the index is empty"));
    }
  });
  state.more = data.queries.some((q) => q.more);
  $("more").hidden = !state.more;
  const shown = main.querySelectorAll("figure.hit").length;
  setStatus(`${shown} result${shown === 1 ? "" : "s"} shown · ${data.entries} images in index ${data.index} · ` +
            `search ${data.took_ms.toFixed(1)} ms`);
}

// ----------------------------------------------------------------------------- searching
async function call(url, opts) {
  const r = await fetch(url, opts);
  let body;
  try { body = await r.json(); } catch (e) { body = { error: `HTTP ${r.status}` }; }
  if (!r.ok) {
    const err = new Error(body.error || `HTTP ${r.status}`);
    err.suggestions = body.suggestions;
    throw err;
  }
  return body;
}

async function search(append) {
  if (state.loading) return;
  const p = new URLSearchParams(state.params);
  if (!hasQuery(p) && !state.file) { $("results").replaceChildren(); $("more").hidden = true; setStatus(""); return; }
  state.loading = true;
  if (!append) { state.offset = 0; setStatus("searching…"); }
  p.set("offset", String(state.offset));
  try {
    let data;
    if (state.file) {
      p.set("name", state.file.name || "uploaded image");
      data = await call("/api/search/image?" + p, {
        method: "POST", body: state.file,
        headers: { "Content-Type": state.file.type || "application/octet-stream" } });
    } else {
      data = await call("/api/search?" + p);
    }
    render(data, append);
    state.loading = false;
    // the page may still end above the fold (few results per page, a tall screen): keep filling it
    const r = $("pager").getBoundingClientRect();
    if (state.more && r.top < window.innerHeight) setTimeout(more, 0);
  } catch (e) {
    if (!append) $("results").replaceChildren();
    $("more").hidden = true;
    setStatus(e.message, true, e.suggestions);
  } finally {
    state.loading = false;
  }
}

function submit(ev, refine) {
  if (ev) ev.preventDefault();
  hideSuggest();
  if (!refine) { state.marks.clear(); updateRefine(); }   // a new search starts without marks
  state.params = markedParams(formParams());
  const url = "/?" + state.params.toString();
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  search(false);
}

function more() {
  if (state.loading || !state.more) return;
  state.offset += parseInt($("top_k").value, 10);
  search(true);
}

function replaceUnknown(name) {
  // swap the last attribute term (the usual culprit) or the class for a suggested name
  const a = $("attributes"), c = $("class");
  if (c.value.trim() && state.classes && state.classes.includes(name)) c.value = name;
  else {
    const terms = a.value.split(",");
    const bad = $("status").firstChild.textContent.match(/unknown \w+ '([^']*)'/);
    const i = bad ? terms.findIndex((t) => t.trim().replace(/^-/, "").split("=")[0].trim() === bad[1]) : -1;
    const j = i >= 0 ? i : terms.length - 1;
    const neg = terms[j].trim().startsWith("-") ? "-" : "";
    const w = terms[j].includes("=") ? "=" + terms[j].split("=")[1].trim() : "";
    terms[j] = " " + neg + name + w;
    a.value = terms.join(",").replace(/^ /, "");
  }
  submit();
}

// ----------------------------------------------------------------------------- image upload
function useFile(file) {
  if (!file) return;
  state.file = file;
  $("drop-text").textContent = `example: ${file.name} (${Math.round(file.size / 1024)} KiB) — `;
  submit();
}

function setupDrop() {
  const d = $("drop");
  d.addEventListener("dragover", (e) => { e.preventDefault(); d.classList.add("over"); });
  d.addEventListener("dragleave", () => d.classList.remove("over"));
  d.addEventListener("drop", (e) => {
    e.preventDefault();
    d.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
}

// ----------------------------------------------------------------------------- autocomplete
let active = -1;

function currentTerm() {
  const v = $("attributes").value;
  const start = v.lastIndexOf(",") + 1;
  let t = v.slice(start);
  const lead = t.match(/^\s*-?\s*/)[0];
  t = t.slice(lead.length);
  if (t.includes("=")) return null;   // a weight is being typed: the name is done
  return { start: start + lead.length, text: t };
}

function hideSuggest() { $("suggest").hidden = true; active = -1; }

function showSuggest() {
  const term = currentTerm();
  const list = $("suggest");
  if (!term || !term.text.trim()) return hideSuggest();
  const key = norm(term.text);
  const prefix = [], inside = [];
  for (const name of state.vocab) {
    const n = norm(name);
    if (n.startsWith(key)) prefix.push(name); else if (n.includes(key)) inside.push(name);
  }
  const names = prefix.concat(inside).slice(0, 10);
  if (!names.length || (names.length === 1 && norm(names[0]) === key)) return hideSuggest();
  list.replaceChildren(...names.map((n, i) => {
    const li = el("li", { role: "option", "data-name": n }, n);
    li.addEventListener("mousedown", (e) => { e.preventDefault(); accept(n); });
    if (i === active) li.className = "active";
    return li;
  }));
  list.hidden = false;
}

function accept(name) {
  const a = $("attributes"), term = currentTerm();
  if (!term) return;
  a.value = a.value.slice(0, term.start) + name + ", ";
  hideSuggest();
  a.focus();
}

function setupAutocomplete() {
  const a = $("attributes");
  a.addEventListener("input", () => { active = -1; showSuggest(); });
  a.addEventListener("blur", () => setTimeout(hideSuggest, 100));
  a.addEventListener("keydown", (e) => {
    const list = $("suggest");
    if (list.hidden) return;
    const items = list.querySelectorAll("li");
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      active = (active + (e.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
      items.forEach((li, i) => li.classList.toggle("active", i === active));
    } else if ((e.key === "Enter" || e.key === "Tab") && active >= 0) {
      e.preventDefault();
      accept(items[active].dataset.name);
    } else if (e.key === "Escape") {
      hideSuggest();
    }
  });
}

// ----------------------------------------------------------------------------- start
async function start() {
  setupAutocomplete();
  setupDrop();
  $("search").addEventListener("submit", (e) => submit(e, false));
  $("refine").addEventListener("click", () => submit(null, true));
  $("more").addEventListener("click", more);
  $("top_k").addEventListener("change", () => { if (hasQuery(formParams()) || state.file) submit(); });
  $("clear").addEventListener("click", () => {
    for (const f of FIELDS.concat(FILTERS)) $(f).value = "";
    state.file = null;
    $("file").value = "";
    $("drop-text").textContent = "drop an image here, or";
    submit();
  });
  window.addEventListener("popstate", () => {
    state.file = null; readUrl(); state.params = markedParams(formParams()); search(false);
  });
  // more results when the end of the page comes into view
  new IntersectionObserver((entries) => { if (entries[0].isIntersecting) more(); }).observe($("pager"));
  try {
    const [info, vocab] = await Promise.all([call("/api/info"), call("/api/vocabulary")]);
    state.caps = info.capabilities;
    state.vocab = vocab.attributes;
    state.classes = vocab.classes;
    $("classes").replaceChildren(...vocab.classes.map((c) => el("option", { value: c })));
    $("f-attributes").hidden = !info.capabilities.attributes;
    $("f-class").hidden = !info.capabilities.class;
    $("f-text").hidden = !info.capabilities.text;
    $("f-image").hidden = !info.capabilities.image;
    $("info").textContent = `index ${info.index} · ${info.entries} images · ` +
      (info.model ? `model ${info.model}` : "raw features") + ` · metric ${info.metric}`;
  } catch (e) {
    setStatus("cannot reach the index: " + e.message, true);
    return;
  }
  readUrl();
  state.params = markedParams(formParams());
  if (hasQuery(state.params)) search(false);
}

start();
