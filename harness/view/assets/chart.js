"use strict";
// Line charts in inline SVG: series with optional 95% bands, horizontal reference lines (oracle, untrained), vertical
// markers (a preference change), a hover read-out of every series at the nearest x, and a legend that hides series.

(function () {
  const W = 380, H = 230, M = { l: 46, r: 12, t: 12, b: 30 };

  function ticks(lo, hi, count) {
    const span = hi - lo || 1;
    const step0 = span / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // opts: {title, share, series: [{name, colour, points: [[x, mean, low, high]], dash, band}], refs: [{name, value,
  //        colour, dash}], marks: [x], xmax}
  HS.chart = function (opts) {
    const series = opts.series.filter((s) => s.points.length);
    const refs = (opts.refs || []).filter((r) => r.value !== null && r.value !== undefined);
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const xmax = Math.max(opts.xmax || 0, ...xs, 1);
    const values = series.flatMap((s) => s.points.flatMap((p) => (s.band ? [p[1], p[2], p[3]] : [p[1]]))).concat(refs.map((r) => r.value)).filter((v) => v !== null && isFinite(v));
    let ylo = opts.share ? 0 : Math.min(0, ...values), yhi = opts.share ? 1 : Math.max(...values, ylo + 1e-9);
    if (!opts.share) yhi += (yhi - ylo) * 0.05;
    const X = (x) => M.l + (x / xmax) * (W - M.l - M.r);
    const Y = (y) => H - M.b - ((y - ylo) / (yhi - ylo || 1)) * (H - M.t - M.b);
    const svg = HS.svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.title });
    const grid = HS.svg("g", { class: "grid" });
    for (const y of ticks(ylo, yhi, 4)) {
      grid.append(HS.svg("line", { x1: M.l, x2: W - M.r, y1: Y(y), y2: Y(y) }), HS.svg("text", { x: M.l - 6, y: Y(y) + 4, "text-anchor": "end" }, HS.num(y)));
    }
    for (const x of ticks(0, xmax, 5)) grid.append(HS.svg("text", { x: X(x), y: H - M.b + 16, "text-anchor": "middle" }, HS.num(x)));
    grid.append(HS.svg("text", { x: W - M.r, y: H - 2, "text-anchor": "end", class: "axis-label" }, "interactions"));
    svg.append(grid, HS.svg("line", { class: "axis", x1: M.l, x2: M.l, y1: M.t, y2: H - M.b }), HS.svg("line", { class: "axis", x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }));
    for (const x of opts.marks || []) svg.append(HS.svg("line", { class: "mark", x1: X(x), x2: X(x), y1: M.t, y2: H - M.b }));
    const groups = {};
    const group = (name) => groups[name] || (groups[name] = svg.appendChild(HS.svg("g", { "data-series": name })));
    for (const r of refs) {
      group(r.name).append(HS.svg("line", { class: "ref", x1: M.l, x2: W - M.r, y1: Y(r.value), y2: Y(r.value), stroke: r.colour, "stroke-dasharray": r.dash || "6 4" }));
    }
    for (const s of series) {
      const g = group(s.name);
      if (s.band && s.points.some((p) => p[3] - p[2] > 1e-12)) {
        const upper = s.points.map((p) => `${X(p[0])},${Y(p[3])}`), lower = s.points.map((p) => `${X(p[0])},${Y(p[2])}`).reverse();
        g.append(HS.svg("polygon", { class: "band", points: upper.concat(lower).join(" "), fill: s.colour }));
      }
      const d = s.points.filter((p) => p[1] !== null && isFinite(p[1])).map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      g.append(HS.svg("path", { class: "line", d, stroke: s.colour, "stroke-dasharray": s.dash || null }));
      if (s.points.length <= 40) for (const p of s.points) if (p[1] !== null && isFinite(p[1])) g.append(HS.svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.6, fill: s.colour }));
    }
    // hover: the nearest evaluation point of every series
    const cursor = HS.svg("line", { class: "cursor", y1: M.t, y2: H - M.b, visibility: "hidden" });
    const tip = HS.el("div", { class: "tip", hidden: true });
    const overlay = HS.svg("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "overlay" });
    svg.append(cursor, overlay);
    overlay.addEventListener("mousemove", (event) => {
      const box = svg.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width * W - M.l) / (W - M.l - M.r) * xmax;
      const nearest = xs.reduce((best, v) => (Math.abs(v - x) < Math.abs(best - x) ? v : best), xs[0]);
      if (nearest === undefined) return;
      cursor.setAttribute("x1", X(nearest)); cursor.setAttribute("x2", X(nearest)); cursor.setAttribute("visibility", "visible");
      const lines = series.filter((s) => groups[s.name].style.display !== "none").map((s) => {
        const p = s.points.find((q) => q[0] === nearest);
        return p ? HS.el("div", {}, HS.el("b", { style: "color:" + s.colour }, s.name), " ", HS.interval(p, opts.share), p[4] > 1 ? ` (${p[4]} seeds)` : "") : null;
      });
      tip.replaceChildren(HS.el("div", { class: "muted" }, `${nearest} interactions`), ...lines.filter(Boolean),
        ...refs.map((r) => HS.el("div", {}, r.name + " " + HS.num(r.value, opts.share ? 2 : undefined))));
      tip.hidden = false;
      tip.style.left = Math.min(box.width - 180, Math.max(0, event.clientX - box.left + 12)) + "px";
      tip.style.top = Math.max(0, event.clientY - box.top - 10) + "px";
    });
    overlay.addEventListener("mouseleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
    const legend = HS.el("div", { class: "legend" });
    for (const item of [...series, ...refs]) {
      if (legend.querySelector(`[data-name="${CSS.escape(item.name)}"]`)) continue;
      legend.append(HS.el("button", {
        class: "key", "data-name": item.name, title: "show or hide",
        onclick: (e) => { const g = groups[item.name]; const hide = g.style.display !== "none"; g.style.display = hide ? "none" : ""; e.currentTarget.classList.toggle("off", hide); },
      }, HS.el("span", { class: "swatch", style: "background:" + item.colour }), item.name + (item.value !== undefined ? ` (${HS.num(item.value, opts.share ? 2 : undefined)})` : "")));
    }
    return HS.el("figure", { class: "chart-box" }, HS.el("figcaption", {}, opts.title), HS.el("div", { class: "plot" }, svg, tip), legend);
  };

  // The charts of one metric table {arm: [[x, mean, low, high, seeds]]}: trained arms as lines with bands, the
  // oracle and the untrained model as reference lines.
  HS.armChart = function (title, byArm, share, xmax, marks, extraRefs) {
    const series = [], refs = (extraRefs || []).slice();
    for (const arm of HS.ARMS) {
      const points = byArm[arm];
      if (!points || !points.length) continue;
      if (arm === "oracle" || arm === "initial") refs.push({ name: arm === "initial" ? "untrained" : "oracle", value: points[0][1], colour: HS.COLOURS[arm], dash: arm === "oracle" ? "6 4" : "2 3" });
      else series.push({ name: arm, colour: HS.COLOURS[arm], points, band: true });
    }
    return HS.chart({ title, share, series, refs, xmax, marks });
  };
})();
