"use strict";
// The runs index (sortable, filterable, runs picked for comparison) and a run's page (verdict, curves, held-out
// answers, config).

(function () {
  const { el } = HS;
  const COLUMNS = [
    ["id", "run"], ["sweep", "sweep"], ["profile", "profile"], ["method", "method"], ["status", "status"], ["seeds", "seeds"],
    ["n", "interactions"], ["treated", "treated clean"], ["control", "control clean"], ["oracle", "oracle clean"],
    ["win", "treated win rate"], ["seconds", "wall time"], ["created", "started"],
  ];

  function sortValue(row, column) {
    if (["treated", "control", "oracle", "guarded"].includes(column)) return row.clean[column] ? row.clean[column][1] : -1;
    if (column === "win") return row.win.treated ? row.win.treated[1] : -1;
    const value = row[column];
    return value === null || value === undefined ? "" : value;
  }

  function cell(row, column) {
    if (["treated", "control", "oracle"].includes(column)) {
      const point = row.clean[column] || (column === "treated" ? row.clean.guarded : null);
      return el("td", { class: "num" }, HS.interval(point, true));
    }
    if (column === "win") return el("td", { class: "num" }, HS.interval(row.win.treated, true));
    if (column === "id") return el("td", {}, el("a", { href: HS.href({ page: "run", run: row.key }) }, row.id));
    if (column === "status") return el("td", {}, HS.badge(row.status || "?", row.status));
    if (column === "seconds") return el("td", { class: "num" }, HS.duration(row.seconds));
    if (column === "created") return el("td", {}, (row.created || "").replace("T", " ").slice(0, 16));
    return el("td", {}, row[column] === null || row[column] === undefined ? "–" : row[column]);
  }

  HS.pages.index = async function (params, fresh) {
    const index = await HS.load("index", fresh);
    const state = {
      sort: params.get("sort") || "created", dir: params.get("dir") || "desc", q: params.get("q") || "",
      status: params.get("status") || "", method: params.get("method") || "", picked: new Set((params.get("pick") || "").split(",").filter(Boolean)),
    };
    const shownColumns = COLUMNS.filter(([c]) => c !== "sweep" || index.runs.some((r) => r.sweep));
    const body = el("tbody");
    const count = el("span", { class: "muted count" });
    const compare = el("a", { class: "button", href: "#" }, "compare");
    const head = el("tr", {}, el("th", {}, ""), shownColumns.map(([column, label]) => el("th", {
      class: "sortable", "data-column": column, onclick: () => {
        state.dir = state.sort === column && state.dir === "asc" ? "desc" : "asc";
        state.sort = column;
        draw();
      },
    }, label)));

    function draw() {
      const q = state.q.toLowerCase();
      const rows = index.runs.filter((r) => (!q || [r.id, r.profile, r.method, r.sweep].join(" ").toLowerCase().includes(q))
        && (!state.status || r.status === state.status) && (!state.method || r.method === state.method));
      const sign = state.dir === "asc" ? 1 : -1;
      rows.sort((a, b) => {
        const x = sortValue(a, state.sort), y = sortValue(b, state.sort);
        return (x < y ? -1 : x > y ? 1 : 0) * sign || (a.id < b.id ? -1 : 1);
      });
      body.replaceChildren(...rows.map((row) => el("tr", { "data-key": row.key },
        el("td", {}, el("input", { type: "checkbox", title: "pick for comparison", checked: state.picked.has(row.key), onchange: (e) => {
          if (e.target.checked) state.picked.add(row.key); else state.picked.delete(row.key);
          remember();
        } })),
        shownColumns.map(([column]) => cell(row, column)))));
      for (const th of head.querySelectorAll("th[data-column]")) th.dataset.sorted = th.dataset.column === state.sort ? state.dir : "";
      count.textContent = `${rows.length} of ${index.runs.length} runs`;
      remember();
    }

    function remember() {
      const picked = [...state.picked];
      compare.textContent = `compare ${picked.length} picked`;
      compare.href = HS.href({ page: "compare", runs: picked.join(",") });
      compare.classList.toggle("disabled", picked.length < 2);
      HS.remember({ sort: state.sort, dir: state.dir, q: state.q, status: state.status, method: state.method, pick: picked.join(",") });
    }

    const statuses = ["", ...new Set(index.runs.map((r) => r.status || "?"))];
    const methods = ["", ...new Set(index.runs.map((r) => r.method))];
    const search = el("input", { type: "search", placeholder: "filter: run, profile, method, sweep", value: state.q, class: "filter",
      oninput: (e) => { state.q = e.target.value; draw(); } });
    const controls = el("div", { class: "controls" }, search,
      HS.select(statuses.map((s) => [s, s || "any"]), state.status, (v) => { state.status = v; draw(); }, "status"),
      HS.select(methods.map((m) => [m, m || "any"]), state.method, (v) => { state.method = v; draw(); }, "method"), count, compare);
    draw();
    const figures = index.figures.length ? el("section", {}, el("h2", {}, "signal figures"),
      el("ul", {}, index.figures.map((f) => el("li", {}, el("a", { href: HS.href({ page: "signal", doc: f.key }) }, f.name))))) : null;
    const problems = index.problems.length ? el("details", { class: "problems" }, el("summary", {}, `${index.problems.length} runs left out (unreadable files)`),
      el("ul", {}, index.problems.map((p) => el("li", {}, p)))) : null;
    return el("section", { class: "index" }, el("h1", {}, index.title), el("p", { class: "muted" }, `written ${index.generated}; clean compliance at each arm's last evaluation, 95% intervals`),
      controls, el("table", { class: "runs" }, el("thead", {}, head), body), figures, problems);
  };

  // ----- a run ------------------------------------------------------------------------------------------------
  function marks(config) {
    if (config.flip_at !== null && config.flip_at !== undefined) return [config.flip_at];
    const c = config.continual;
    return c && c.add ? c.add.map((_, i) => (i + 1) * c.stage) : [];
  }

  function meta(run) {
    const info = run.info || {}, config = run.config;
    const parts = [`profile ${config.profile}`, `method ${config.method || "sdpo"}`, `${config.interactions} interactions in batches of ${config.batch_size}`,
      `${config.seeds} seed(s)`, `wall time ${HS.duration(info.seconds)}`, info.device ? `on ${info.device}` : null, info.created ? `started ${info.created}` : null];
    return el("p", { class: "meta" }, parts.filter(Boolean).join(" · "));
  }

  function configTable(config) {
    const flat = HS.flatten(config);
    return el("details", { class: "config" }, el("summary", {}, "config.yaml (every field)"),
      el("table", { class: "kv" }, Object.entries(flat).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v))))));
  }

  HS.pages.run = async function (params, fresh) {
    const key = params.get("run");
    if (!key) throw new Error("no run given (#page=run&run=KEY)");
    const run = await HS.load(key + "/run", fresh);
    const config = run.config;
    const prefIndex = Math.min(+(params.get("pref") || 0), Math.max(0, run.preferences.length - 1));
    const pref = run.preferences[prefIndex];
    const links = el("p", { class: "links" },
      run.interactions ? el("a", { href: HS.href({ page: "interactions", run: key }) }, `interactions (${run.interactions})`) : el("span", { class: "muted" }, "no interactions yet"),
      el("a", { href: HS.href({ page: "compare", runs: key }) }, "compare with…"),
      run.figures.map((name) => el("a", { href: HS.href({ page: "signal", doc: `${key}/signal-${name}` }) }, `signal: ${name}`)));
    const header = el("div", { class: "run-head" }, el("h1", {}, run.id, " ", HS.badge(run.status || "?", run.status)), meta(run), links,
      run.info && run.info.error ? el("p", { class: "error" }, run.info.error) : null);
    const prefs = run.preferences.length > 1 ? HS.select(run.preferences.map((p, i) => [i, p.name]), prefIndex, (v) => { HS.remember({ pref: v }); HS.render(false); }, "scored for") : null;
    const verdicts = pref ? el("div", { class: "verdict" }, el("p", {}, el("b", {}, pref.verdict)), pref.side_effects ? el("p", { class: "muted" }, pref.side_effects) : null)
      : el("p", { class: "muted" }, "no evaluation yet");
    const charts = el("div", { class: "charts" });
    for (const metric of run.metrics) {
      const byArm = pref && pref.curves[metric.field];
      if (!byArm) continue;
      const parity = metric.field === "win_rate" ? [{ name: "parity", value: 0.5, colour: "#999", dash: "1 3" }] : [];
      charts.append(HS.armChart(metric.label, byArm, metric.share, config.interactions, marks(config), parity));
    }
    const updates = el("div", { class: "charts" });
    for (const [name, byArm] of Object.entries(run.train)) {
      const series = Object.entries(byArm).map(([arm, points]) => ({ name: arm, colour: HS.COLOURS[arm] || "#333", points: points.map((p) => [p[0], p[1], p[1], p[1]]) }));
      updates.append(HS.chart({ title: name, series, xmax: config.interactions, marks: marks(config) }));
    }
    const answers = el("div", { class: "answers" });
    const section = el("section", { class: "run" }, header, prefs, verdicts,
      el("h2", {}, "evaluation curves ", el("span", { class: "muted" }, "(held-out prompts; bands: 95% intervals; hover for values, click a key to hide it)")), charts,
      el("h2", {}, "held-out answers"), answers,
      Object.keys(run.train).length ? [el("h2", {}, "updates ", el("span", { class: "muted" }, "(per update, mean over seeds)")), updates] : null,
      configTable(config), run.info ? el("details", { class: "config" }, el("summary", {}, "run.json"), el("pre", {}, JSON.stringify(run.info, null, 2))) : null);
    if (run.points.length) await HS.answers(answers, run, params, pref ? pref.name : null, fresh);
    else answers.append(el("p", { class: "muted" }, "no evaluation yet"));
    return section;
  };
})();
