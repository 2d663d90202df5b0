"use strict";
// Two or more runs compared: every metric's curves overlaid (one colour per run, one trained arm at a time, each run's
// oracle dashed) and the config fields that differ.

(function () {
  const { el } = HS;

  function picker(index, keys) {
    const picked = new Set(keys);
    const go = () => HS.render(false);
    return el("details", { class: "picker", open: keys.length < 2 }, el("summary", {}, `runs compared (${keys.length}); pick others`),
      el("div", { class: "pick-list" }, index.runs.map((r) => el("label", {}, el("input", {
        type: "checkbox", checked: picked.has(r.key), onchange: (e) => {
          if (e.target.checked) picked.add(r.key); else picked.delete(r.key);
          HS.remember({ runs: [...picked].join(",") });
          go();
        },
      }), ` ${r.id}` + (r.sweep ? ` (${r.sweep})` : "")))));
  }

  function differences(runs) {
    const flat = runs.map((r) => HS.flatten(r.config));
    const keys = [...new Set(flat.flatMap(Object.keys))].filter((k) => k !== "seed" && new Set(flat.map((f) => JSON.stringify(f[k]))).size > 1);
    if (!keys.length) return el("p", { class: "muted" }, "the configs are the same (seed aside)");
    return el("table", { class: "kv diff" }, el("thead", {}, el("tr", {}, el("th", {}, "field"), runs.map((r, i) => el("th", { style: "color:" + HS.PALETTE[i % HS.PALETTE.length] }, r.id)))),
      el("tbody", {}, keys.map((k) => el("tr", {}, el("th", {}, k), flat.map((f) => el("td", {}, f[k] === undefined ? "–" : JSON.stringify(f[k])))))));
  }

  HS.pages.compare = async function (params, fresh) {
    const index = await HS.load("index", fresh);
    const keys = (params.get("runs") || "").split(",").filter((k) => index.runs.some((r) => r.key === k));
    const head = [el("h1", {}, "compare runs"), picker(index, keys)];
    if (keys.length < 1) return el("section", { class: "compare" }, head, el("p", { class: "muted" }, "pick two or more runs (here, or with the checkboxes of the runs index)"));
    const runs = await Promise.all(keys.map((k) => HS.load(k + "/run", fresh)));
    const arms = HS.TRAINED.filter((arm) => runs.some((r) => r.preferences.some((p) => Object.values(p.curves).some((c) => c[arm]))));
    const arm = arms.includes(params.get("arm")) ? params.get("arm") : arms[0] || "treated";
    const charts = el("div", { class: "charts" });
    const xmax = Math.max(...runs.map((r) => r.config.interactions || 0));
    for (const metric of runs[0].metrics) {
      const series = [], refs = [];
      runs.forEach((run, i) => {
        const colour = HS.PALETTE[i % HS.PALETTE.length];
        run.preferences.forEach((pref) => {
          const byArm = pref.curves[metric.field] || {};
          const name = run.id + (pref.name ? ` · ${pref.name}` : "");
          if (byArm[arm]) series.push({ name, colour, points: byArm[arm], band: true, dash: pref.name && pref !== run.preferences[0] ? "5 3" : null });
          if (byArm.oracle && pref === run.preferences[0]) refs.push({ name: `${run.id} oracle`, value: byArm.oracle[0][1], colour, dash: "6 4" });
        });
      });
      if (series.length) charts.append(HS.chart({ title: `${metric.label} · ${arm}`, share: metric.share, series, refs, xmax }));
    }
    const controls = el("div", { class: "controls" }, HS.select(arms, arm, (v) => { HS.remember({ arm: v }); HS.render(false); }, "arm"),
      runs.map((r, i) => el("a", { href: HS.href({ page: "run", run: r.key }), style: "color:" + HS.PALETTE[i % HS.PALETTE.length] }, r.id)));
    return el("section", { class: "compare" }, head, controls,
      el("h2", {}, "last evaluation"), el("table", { class: "runs" }, el("thead", {}, el("tr", {}, ["run", "arm", "interactions", ...runs[0].metrics.map((m) => m.label)].map((h) => el("th", {}, h)))),
        el("tbody", {}, runs.flatMap((run) => run.preferences.flatMap((pref) => HS.TRAINED.filter((a) => (pref.curves.clean || {})[a]).map((a) => el("tr", {},
          el("td", {}, run.id + (pref.name ? ` · ${pref.name}` : "")), el("td", {}, a), el("td", { class: "num" }, pref.curves.clean[a].slice(-1)[0][0]),
          run.metrics.map((m) => el("td", { class: "num" }, HS.interval(((pref.curves[m.field] || {})[a] || []).slice(-1)[0], m.share))))))))),
      el("h2", {}, "curves"), charts, el("h2", {}, "config fields that differ"), differences(runs));
  };
})();
