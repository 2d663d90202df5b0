"use strict";
// A run's interactions (filter by arm, seed, step, satisfied, label, text) with each answer's tokens coloured by the
// update's per-token signal, and the signal page (`hindsight signal`: one answer under several follow-ups).

(function () {
  const { el } = HS;
  const PAGE = 25;
  const SATISFIED = [["", "any"], ["yes", "satisfied"], ["no", "complained"], ["none", "no verdict (neutral user)"]];

  function matches(row, f) {
    const text = (row.prompt + " " + row.response + " " + row.followup).toLowerCase();
    return (!f.arm || row.arm === f.arm) && (f.seed === "" || row.seed === +f.seed)
      && (f.from === "" || row.step >= +f.from) && (f.to === "" || row.step <= +f.to)
      && (!f.satisfied || (f.satisfied === "yes" ? row.satisfied === true : f.satisfied === "no" ? row.satisfied === false : row.satisfied === null))
      && (!f.label || row.label === f.label) && (!f.q || text.includes(f.q.toLowerCase()));
  }

  function pairView(pair) {
    const side = (name) => {
      const s = pair[name];
      const values = s.tokens.map(() => s.weight);
      return el("div", { class: "pair-side" }, el("div", { class: "muted" }, `${name}` + (pair[`reward_${name}`] !== undefined ? ` · reward ${HS.num(pair[`reward_${name}`])}` : "")
        + (s.weight !== null ? ` · weight on each token's log-prob ${s.weight}` : " · update not applied")), HS.tokenSpans(s.tokens, values, Math.abs(pair.chosen.weight || 1), "weight"));
    };
    return el("div", { class: "pair" }, el("div", { class: "muted" }, `${pair.objective} pair (label ${pair.label})`), side("chosen"), side("rejected"));
  }

  function card(row, signal) {
    const head = el("div", { class: "card-head" },
      HS.badge(row.arm, "arm", null), ` seed ${row.seed} · interaction ${row.index} · update ${row.step} · ${row.tokens} tokens${row.finished ? "" : " (cut)"}`,
      row.satisfied === true ? HS.badge("satisfied", "pass") : row.satisfied === false ? HS.badge("complained", "fail") : HS.badge("neutral user", ""),
      row.label ? HS.badge(row.label, "") : null, row.flagged ? HS.badge(row.skipped ? "flagged, skipped" : "flagged", "fail") : null,
      row.kept !== null && row.kept !== undefined ? HS.badge(row.kept ? "pair kept" : `not kept: ${row.why}`, row.kept ? "pass" : "") : null,
      row.failed ? HS.badge("simulator failed: " + row.failed, "fail") : null);
    let answer;
    if (signal && signal.advantage && signal.advantage.length) {
      const scale = HS.signalScale(signal.advantage);
      answer = el("div", {}, HS.tokenSpans(signal.tokens, signal.advantage, scale, "A"),
        el("div", { class: "muted small" }, `advantage reference ${signal.reference}` + (row.neutral ? ` (neutral follow-up: "${row.neutral}")` : "")
          + (row.adv ? ` · mean ${HS.num(row.adv[0])}, min ${HS.num(row.adv[1])}, max ${HS.num(row.adv[2])}` : ""), " · colour scale ±" + HS.num(scale)));
    } else {
      answer = el("div", { class: "text" }, row.response, row.adv ? el("div", { class: "muted small" }, `advantage mean ${HS.num(row.adv[0])}, min ${HS.num(row.adv[1])}, max ${HS.num(row.adv[2])} (no per-token record)`) : null);
    }
    return el("article", { class: "interaction", "data-arm": row.arm, "data-index": row.index },
      head, el("div", { class: "turn user" }, el("span", { class: "who" }, "prompt"), row.prompt),
      el("div", { class: "turn assistant" }, el("span", { class: "who" }, "answer"), answer),
      signal && signal.pair ? pairView(signal.pair) : null,
      el("div", { class: "turn user" }, el("span", { class: "who" }, "follow-up"), row.followup));
  }

  HS.pages.interactions = async function (params, fresh) {
    const key = params.get("run");
    const [run, doc] = await Promise.all([HS.load(key + "/run", fresh), HS.load(key + "/interactions", fresh)]);
    const f = {};
    for (const name of ["arm", "seed", "from", "to", "satisfied", "label", "q"]) f[name] = params.get(name) || "";
    let limit = PAGE;
    const list = el("div", { class: "cards" });
    const count = el("span", { class: "muted count" });
    const more = el("button", { onclick: () => { limit += PAGE; draw(); } }, "show more");
    let ticket = 0;
    async function draw() {
      const mine = ++ticket;
      HS.remember(f);
      const rows = doc.rows.filter((r) => matches(r, f));
      const shown = rows.slice(0, limit);
      count.textContent = `${rows.length} of ${doc.rows.length} interactions`;
      const chunks = [...new Set(shown.map((r) => r.chunk).filter((c) => c !== null && c !== undefined))];
      const loaded = await Promise.all(chunks.map((c) => HS.load(`${key}/signals-${c}`, fresh)));
      const signals = {};
      if (mine !== ticket) return;  // a newer filter is drawing
      for (const chunk of loaded) for (const s of chunk.rows) signals[`${s.arm}/${s.seed}/${s.index}`] = s;
      list.replaceChildren(...shown.map((r) => card(r, signals[`${r.arm}/${r.seed}/${r.index}`])));
      more.hidden = rows.length <= limit;
      list.dataset.drawn = String(Date.now());
    }
    const values = (name) => [...new Set(doc.rows.map((r) => r[name]).filter((v) => v !== null && v !== undefined))].sort((a, b) => (a < b ? -1 : 1));
    const set = (name) => (v) => { f[name] = v; limit = PAGE; draw(); };
    const number = (name, label) => el("label", { class: "control" }, label + " ", el("input", { type: "number", min: 0, value: f[name], class: "step", "aria-label": label, oninput: (e) => set(name)(e.target.value) }));
    const controls = el("div", { class: "controls" },
      HS.select([["", "any"], ...values("arm")], f.arm, set("arm"), "arm"),
      values("seed").length > 1 ? HS.select([["", "any"], ...values("seed")], f.seed, set("seed"), "seed") : null,
      number("from", "update from"), number("to", "to"),
      HS.select(SATISFIED, f.satisfied, set("satisfied"), "satisfied"),
      values("label").length ? HS.select([["", "any"], ...values("label")], f.label, set("label"), "label") : null,
      el("input", { type: "search", class: "filter", placeholder: "text in prompt, answer or follow-up", value: f.q, oninput: (e) => set("q")(e.target.value) }),
      count);
    await draw();
    return el("section", { class: "interactions" },
      el("h1", {}, el("a", { href: HS.href({ page: "run", run: key }) }, run.id), " · interactions"),
      el("p", { class: "muted" }, "Each answer's tokens are coloured by the advantage its update gave them (SDPO), or a pair's tokens by their gradient weight (RLHI methods); hover a token for its value."),
      HS.scaleLegend(1, "advantage ÷ the answer's colour scale"), controls, list, more);
  };

  // ----- hindsight signal: one answer, several follow-ups, one shared colour scale --------------------------------
  HS.pages.signal = async function (params, fresh) {
    const fig = await HS.load(params.get("doc"), fresh);
    const scale = Math.max(1e-9, ...fig.rows.flatMap((r) => r.advantage.map(Math.abs)));
    const rows = fig.rows.map((r) => el("tr", {}, el("th", {}, el("div", {}, r.label), el("div", { class: "muted small" }, r.followup)),
      el("td", {}, HS.tokenSpans(fig.tokens, r.advantage, scale, "A"),
        el("div", { class: "muted small" }, `sum ${HS.num(r.advantage.reduce((a, b) => a + b, 0))}, mean ${HS.num(r.advantage.reduce((a, b) => a + b, 0) / Math.max(1, r.advantage.length))}`))));
    return el("section", { class: "signal" }, el("h1", {}, "per-token advantage under several follow-ups"),
      el("p", { class: "meta" }, `model ${fig.model} · ${fig.reference} advantage reference` + (fig.reference_followup ? ` ("${fig.reference_followup}")` : "") + ` · profile ${fig.profile} · answer from ${fig.source}`),
      el("div", { class: "turn user" }, el("span", { class: "who" }, "prompt"), fig.prompt),
      HS.scaleLegend(scale, "advantage"), el("table", { class: "heatmap" }, el("tbody", {}, rows)));
  };
})();
