"use strict";
// A run's held-out answers at one evaluation point, side by side: untrained, oracle, then each trained arm, with each
// check's result, the degeneration flags, relevance and the judge's verdict against the untrained answer.

(function () {
  const { el } = HS;
  const VERDICT = { A: "wins vs untrained", B: "loses vs untrained", tie: "ties with untrained", invalid: "invalid verdict" };

  function answerCell(row, checks) {
    if (!row) return el("td", { class: "answer missing" }, "–");
    const failed = new Set(row.failed);
    const names = checks.length ? checks : row.failed;
    const badges = [
      ...names.map((name) => HS.badge((failed.has(name) ? "✗ " : "✓ ") + name, failed.has(name) ? "fail" : "pass", failed.has(name) ? "check failed" : "check passed")),
      ...row.flags.map((flag) => HS.badge(flag, "fail", "degeneration")),
      row.relevant ? null : HS.badge("not relevant", "fail", `similarity to the prompt ${row.sim[0]}, to the untrained answer ${row.sim[1]}`),
      HS.badge(row.clean ? "clean" : "not clean", row.clean ? "pass" : "fail"),
      row.verdict ? HS.badge(VERDICT[row.verdict] || row.verdict, row.verdict === "A" ? "pass" : row.verdict === "B" ? "fail" : "") : null,
    ];
    return el("td", { class: "answer" }, el("div", { class: "text" }, row.answer), el("div", { class: "badges" }, HS.badge(`${row.words} words`, ""), badges));
  }

  // Fill `box` with the answers of the evaluation point in the hash (default: the last), for one seed.
  HS.answers = async function (box, run, params, preference, fresh) {
    const trainedPoints = run.points.filter((x) => x > 0);
    const x = trainedPoints.includes(+params.get("x")) ? +params.get("x") : trainedPoints[trainedPoints.length - 1] || 0;
    const seed = run.seeds.includes(+params.get("seed")) ? +params.get("seed") : run.seeds[0];
    const [untrained, point] = await Promise.all([
      run.points.includes(0) ? HS.load(`${run.key}/samples-0`, fresh) : Promise.resolve({ rows: [] }),
      x > 0 ? HS.load(`${run.key}/samples-${x}`, fresh) : Promise.resolve({ rows: [] }),
    ]);
    const mine = (r) => (r.preference || null) === (preference || null);
    const rows = untrained.rows.concat(point.rows).filter(mine);
    const arms = HS.ARMS.filter((arm) => rows.some((r) => r.arm === arm));
    const byPrompt = {};
    for (const r of rows) {
      if (HS.TRAINED.includes(r.arm) && r.seed !== seed) continue;
      (byPrompt[r.p] = byPrompt[r.p] || {})[r.arm] = r;
    }
    const checks = run.checks[preference || ""] || [];
    const controls = el("div", { class: "controls" },
      HS.select(trainedPoints.map((v) => [v, `${v} interactions`]), x, (v) => { HS.remember({ x: v }); HS.answers(box, run, HS.params(), preference, false); }, "evaluation point"),
      run.seeds.length > 1 ? HS.select(run.seeds.map((s) => [s, `seed ${s}`]), seed, (v) => { HS.remember({ seed: v }); HS.answers(box, run, HS.params(), preference, false); }, "seed") : null,
      el("span", { class: "muted" }, "untrained and oracle: before any interaction"));
    const label = (arm) => (arm === "initial" ? "untrained" : arm === "oracle" ? "in-context oracle" : `${arm} (${x})`);
    const table = el("table", { class: "side-by-side" },
      el("thead", {}, el("tr", {}, el("th", {}, "prompt"), arms.map((arm) => el("th", { style: "border-top: 3px solid " + HS.COLOURS[arm] }, label(arm))))),
      el("tbody", {}, Object.keys(byPrompt).sort((a, b) => a - b).map((p) => el("tr", {}, el("th", { class: "prompt" }, run.prompts[p]),
        arms.map((arm) => answerCell(byPrompt[p][arm], checks))))));
    box.replaceChildren(controls, table);
  };
})();
