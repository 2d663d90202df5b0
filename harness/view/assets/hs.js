"use strict";
// The hindsight viewer's core: the data store and its loader, the router, DOM helpers, number formats and the
// diverging colour scale of per-token signals. Plain JavaScript, no library; works from file:// (data files are
// <script>s that call HS.put, since file:// forbids fetch) and from `hindsight view --serve`.

const HS = (window.HS = {
  store: {},
  waiting: {},
  pages: {},
  ticket: 0,
  stamp: null,
  ARMS: ["initial", "oracle", "treated", "guarded", "control"],
  TRAINED: ["treated", "guarded", "control"],
  COLOURS: { treated: "#1f77b4", guarded: "#9467bd", control: "#ff7f0e", oracle: "#2ca02c", initial: "#555555" },
  PALETTE: ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#ff7f0e"],
});

// ----- data -----------------------------------------------------------------------------------------------
HS.put = function (key, data) {
  HS.store[key] = data;
  const waiting = HS.waiting[key];
  delete HS.waiting[key];
  (waiting || []).forEach((w) => w.resolve(data));
};

// The document KEY (data/KEY.js), loaded once; `fresh` loads it again (a run in progress, when served).
HS.load = function (key, fresh) {
  if (!fresh && key in HS.store) return Promise.resolve(HS.store[key]);
  return new Promise((resolve, reject) => {
    const first = !HS.waiting[key];
    (HS.waiting[key] = HS.waiting[key] || []).push({ resolve, reject });
    if (!first) return;
    const tag = document.createElement("script");
    tag.src = "data/" + key.split("/").map(encodeURIComponent).join("/") + ".js" + (fresh ? "?t=" + Date.now() : "");
    tag.onload = () => tag.remove();
    tag.onerror = () => {
      tag.remove();
      const waiting = HS.waiting[key] || [];
      delete HS.waiting[key];
      waiting.forEach((w) => w.reject(new Error("cannot load data/" + key + ".js (was the site written for this run?)")));
    };
    document.head.appendChild(tag);
  });
};

// ----- DOM ------------------------------------------------------------------------------------------------
HS.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  HS.attrs(node, attrs);
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
};

HS.svg = function (tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  HS.attrs(node, attrs);
  for (const child of children.flat(Infinity)) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
};

HS.attrs = function (node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.setAttribute("class", value);
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
};

HS.select = function (options, value, onchange, label) {
  const select = HS.el("select", { onchange: (e) => onchange(e.target.value), "aria-label": label });
  for (const option of options) {
    const [v, text] = Array.isArray(option) ? option : [option, option];
    select.append(HS.el("option", { value: v, selected: String(v) === String(value) }, text));
  }
  return HS.el("label", { class: "control" }, label ? label + " " : "", select);
};

HS.badge = (text, kind, title) => HS.el("span", { class: "badge " + (kind || ""), title }, text);

// ----- the router: #page=NAME&key=value…; page state lives in the hash ------------------------------------------
HS.params = () => new URLSearchParams(location.hash.slice(1));
HS.href = (params) => "#" + new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();

// Record page state in the hash without drawing the page again.
HS.remember = function (changes) {
  const params = HS.params();
  for (const [name, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") params.delete(name);
    else params.set(name, value);
  }
  history.replaceState(null, "", "#" + params.toString());
};

HS.render = async function (fresh) {
  const ticket = ++HS.ticket;
  const params = HS.params();
  const name = HS.pages[params.get("page")] ? params.get("page") : "index";
  const app = document.getElementById("app");
  document.body.dataset.ready = "";
  try {
    const node = await HS.pages[name](params, fresh);
    if (ticket !== HS.ticket) return;
    const scroll = fresh ? window.scrollY : 0;
    app.replaceChildren(node);
    window.scrollTo(0, scroll);
  } catch (error) {
    if (ticket !== HS.ticket) return;
    app.replaceChildren(HS.el("p", { class: "error" }, String((error && error.message) || error)));
    console.error(error);
  }
  document.body.dataset.ready = name;
};

// Served over HTTP, watch the index: when a run's files change, the server rewrites its data and the page redraws.
HS.poll = async function () {
  try {
    const index = await HS.load("index", true);
    if (HS.stamp !== null && index.stamp !== HS.stamp) await HS.render(true);
    HS.stamp = index.stamp;
    const running = index.runs.filter((r) => r.status === "running").length;
    document.getElementById("live").textContent = "live" + (running ? ` · ${running} running` : "") + " · " + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById("live").textContent = "server unreachable";
  }
};

HS.start = function () {
  window.addEventListener("hashchange", () => HS.render(false));
  HS.render(false);
  if (location.protocol.startsWith("http")) {
    HS.poll();
    setInterval(HS.poll, 3000);
  }
};

// ----- numbers --------------------------------------------------------------------------------------------
HS.num = function (value, digits) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (!isFinite(value)) return String(value);
  return digits === undefined ? String(+value.toPrecision(3)) : value.toFixed(digits);
};

// "mean [low, high]" of a point [x, mean, low, high, seeds]
HS.interval = function (point, share) {
  if (!point) return "–";
  const [, mean, low, high] = point;
  const f = (v) => (share ? HS.num(v, 2) : HS.num(v));
  return high - low < 1e-12 ? f(mean) : `${f(mean)} [${f(low)}, ${f(high)}]`;
};

HS.duration = function (seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
};

HS.flatten = function (data, prefix, out) {
  out = out || {};
  for (const [key, value] of Object.entries(data || {})) {
    if (value && typeof value === "object" && !Array.isArray(value)) HS.flatten(value, (prefix || "") + key + ".", out);
    else out[(prefix || "") + key] = value;
  }
  return out;
};

// ----- per-token signals ----------------------------------------------------------------------------------
// A diverging scale: red pushed down, blue pushed up, white 0; `scale` is the magnitude drawn at full strength.
HS.signalColour = function (value, scale) {
  const t = Math.max(-1, Math.min(1, value / (scale || 1)));
  const [r, g, b] = t >= 0 ? [33, 102, 172] : [178, 24, 43];
  return `rgba(${r}, ${g}, ${b}, ${(0.08 + 0.82 * Math.abs(t)).toFixed(3)})`;
};

// The scale a set of values is drawn at: their largest magnitude, ignoring the top 2% (single-token spikes).
HS.signalScale = function (values) {
  const sorted = values.filter((v) => v !== null && isFinite(v)).map(Math.abs).sort((a, b) => a - b);
  if (!sorted.length) return 1;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.98))] || sorted[sorted.length - 1] || 1;
};

// The tokens of an answer as coloured spans; `values[i]` null leaves token i uncoloured. The value shows on hover.
HS.tokenSpans = function (tokens, values, scale, what) {
  const box = HS.el("div", { class: "tokens" });
  tokens.forEach((token, i) => {
    const value = values[i];
    const shown = token === "" ? "∅" : token.replace(/\n/g, "⏎\n");
    const attrs = { class: "tok" };
    if (value !== null && value !== undefined) {
      attrs.style = "background:" + HS.signalColour(value, scale);
      attrs.title = `${JSON.stringify(token)} · ${what || "A"} = ${value.toFixed(4)}`;
      attrs["data-v"] = value;
    }
    box.append(HS.el("span", attrs, shown));
  });
  return box;
};

HS.scaleLegend = function (scale, what) {
  const stops = [-1, -0.5, 0, 0.5, 1].map((t) => HS.el("span", { class: "stop", style: "background:" + HS.signalColour(t * scale, scale) }, HS.num(t * scale)));
  return HS.el("div", { class: "scale" }, HS.el("span", { class: "muted" }, (what || "advantage") + ": "), stops, HS.el("span", { class: "muted" }, " (red: pushed down, blue: pushed up)"));
};
