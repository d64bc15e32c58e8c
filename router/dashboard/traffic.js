/* The dashboard's traffic cards: the split (configured against observed, with the sample ratio
 * check) and the shadow agreement, for one challenger or several.
 *
 * With several challengers the split has a part per variant, from /stats's srm (one check of
 * every share at once), and in shadow mode a "scored" row and an agreement row per challenger.
 */
(function () {
  "use strict";

  var shared = window.RouterDashboard;
  var $ = shared.$, el = shared.el, clear = shared.clear, isNum = shared.isNum;
  var empty = shared.empty, pct = shared.pct, count = shared.count, pValue = shared.pValue;

  // Drawn by the page's script (dashboard.js), which loads last.
  function bars(box, rows, label) { shared.stackedBars(box, rows, label); }

  function challengers(stats) {
    return shared.roles(stats).filter(function (role) { return role !== "champion"; });
  }

  function srmVerdict(verdict, srm) {
    verdict.appendChild(el("span", { "class": "badge " + (srm.mismatch ? "bad" : "ok"),
                                     text: srm.mismatch ? "sample ratio mismatch" : "no sample ratio mismatch" }));
    verdict.appendChild(document.createTextNode(" χ² p = " + pValue(srm.p_value) + " (mismatch below 0.001)"));
  }

  function renderShadowSplit(stats, c, box, verdict) {
    // Observed from the log (every gateway, across restarts); the mirrors' own counters
    // (this process since it started) say what was dropped.
    var names = challengers(stats);
    var sample = c.shadow ? c.shadow.sample_percent / 100 : null;
    var answered = stats.variants.champion.requests;
    var rows = [
      { label: "answers", parts: [{ cls: "champion", value: 1, text: "champion 100 %" }] },
      { label: "mirrored", parts: [{ cls: shared.roleClass(stats, names[0]), value: sample, text: pct(sample, 0) }] }
    ];
    var dropped = 0, logged = [];
    names.forEach(function (name) {
      var v = stats.variants[name];
      var scored = answered > 0 ? v.requests / answered : null;
      rows.push({ label: names.length > 1 ? "scored " + name : "scored",
                  parts: [{ cls: shared.roleClass(stats, name), value: scored, text: pct(scored, 1) }] });
      dropped += (v.shadow_calls || {}).dropped || 0;
      logged.push(count(v.requests) + (names.length > 1 ? " (" + name + ")" : ""));
    });
    $("split-sub").textContent = "shadow mode: the champion answers; requests are mirrored to " +
      (names.length > 1 ? "each challenger" : "the challenger");
    bars(box, rows, "shadow sampling, configured and observed");
    verdict.appendChild(document.createTextNode(answered > 0
      ? logged.join(", ") + " shadow predictions logged for " + count(answered) + " champion answers" +
        (dropped > 0 ? "; " + count(dropped) + " dropped by this gateway since it started" : "")
      : "no request yet"));
  }

  // Configured and observed parts for each variant: with one challenger from its share, with
  // several from the check of every share at once.
  function parts(stats, c) {
    var srm = stats.srm || (stats.comparison && stats.comparison.srm);
    var configured = [], observed = [];
    if (stats.srm) {
      shared.roles(stats).forEach(function (role) {
        var cls = shared.roleClass(stats, role);
        var expected = (srm.expected_percent || {})[role] / 100;
        configured.push({ cls: cls, value: expected, text: pct(expected) });
        if (srm.observed_percent) {
          var seen = srm.observed_percent[role] / 100;
          observed.push({ cls: cls, value: seen, text: pct(seen) });
        }
      });
      return { srm: srm, configured: configured, observed: observed };
    }
    var share = srm && isNum(srm.expected_percent) ? srm.expected_percent / 100 : c.traffic.challenger_percent / 100;
    var seenShare = srm && isNum(srm.observed_percent) ? srm.observed_percent / 100 : null;
    configured = [{ cls: "champion", value: 1 - share, text: pct(1 - share) },
                  { cls: "challenger", value: share, text: pct(share) }];
    if (isNum(seenShare)) {
      observed = [{ cls: "champion", value: 1 - seenShare, text: pct(1 - seenShare) },
                  { cls: "challenger", value: seenShare, text: pct(seenShare) }];
    }
    return { srm: srm, configured: configured, observed: observed };
  }

  function renderSplit(stats, config) {
    var box = $("split-chart");
    var c = (config && config.config) || {};
    var verdict = clear($("srm-verdict"));
    if (stats.mode === "single") {
      $("split-sub").textContent = "mode single: the champion answers every request";
      bars(box, [{ label: "champion", parts: [{ cls: "champion", value: 1, text: "100 %" }] }], "traffic split");
      return;
    }
    if (stats.mode === "shadow") { renderShadowSplit(stats, c, box, verdict); return; }
    var split = parts(stats, c);
    $("split-sub").textContent = "share of " + ((split.srm && split.srm.unit) || "units") + " per variant, configured against observed";
    bars(box, [{ label: "configured", parts: split.configured }, { label: "observed", parts: split.observed }],
         "traffic split, configured and observed");
    if (!split.srm || !split.observed.length) {
      verdict.appendChild(document.createTextNode("no traffic yet"));
      return;
    }
    srmVerdict(verdict, split.srm);
  }

  // The paired comparisons of shadow mode: one challenger's in full, several side by side.
  function renderShadow(stats) {
    var card = $("shadow-card");
    card.hidden = stats.mode !== "shadow";
    if (card.hidden) return;
    var facts = clear($("shadow-facts"));
    var comparisons = stats.comparisons || { challenger: stats.comparison || {} };
    var names = Object.keys(comparisons).filter(function (name) {
      return comparisons[name].paired && comparisons[name].paired.n;
    });
    var several = !!stats.comparisons;
    if (!names.length) {
      $("shadow-sub").textContent = "both models on the same labelled requests";
      empty($("shadow-chart"), "No labelled pair yet: a pair is a request both models scored, with its label.");
      return;
    }
    $("shadow-sub").textContent = names.map(function (name) {
      return count(comparisons[name].paired.n) + " labelled requests scored by " + (several ? "the champion and " + name : "both models");
    }).join("; ");
    var rows = [];
    function fact(name, value) { facts.appendChild(el("dt", { text: name })); facts.appendChild(el("dd", { text: value })); }
    names.forEach(function (name) {
      var paired = comparisons[name].paired;
      var cls = shared.roleClass(stats, name);
      var suffix = several ? " · " + name : "";
      if (isNum(paired.agreement)) {
        rows.push({ label: several ? "agree " + name : "agreement",
                    parts: [{ cls: "agree", value: paired.agreement, text: pct(paired.agreement) }] });
      }
      var only = (paired.champion_only_correct || 0) + (paired.challenger_only_correct || 0);
      if (only > 0) {
        rows.push({ label: several ? "right " + name : "only right", parts: [
          { cls: "champion", value: paired.champion_only_correct / only, text: "champion " + count(paired.champion_only_correct) },
          { cls: cls, value: paired.challenger_only_correct / only, text: (several ? name : "challenger") + " " + count(paired.challenger_only_correct) }] });
      }
      if (paired.agreement_ci95) fact("agreement, 95 % CI" + suffix, pct(paired.agreement_ci95[0]) + " – " + pct(paired.agreement_ci95[1]));
      if (isNum(paired.champion_only_correct)) fact("only champion right" + suffix, count(paired.champion_only_correct));
      if (isNum(paired.challenger_only_correct)) fact("only " + (several ? name : "challenger") + " right", count(paired.challenger_only_correct));
      if (isNum(paired.mcnemar_p_value)) fact("McNemar exact p" + suffix, pValue(paired.mcnemar_p_value));
      if (isNum(paired.wilcoxon_p_value)) fact("Wilcoxon p" + suffix, pValue(paired.wilcoxon_p_value));
    });
    if (rows.length) bars($("shadow-chart"), rows, "shadow agreement");
    else empty($("shadow-chart"), "Agreement applies to classifiers; see the difference chart.");
  }

  shared.renderSplit = renderSplit;
  shared.renderShadow = renderShadow;
})();
