/* The dashboard's segment table: /stats's segments, one table per segment key (and per
 * challenger, when there are several).
 *
 * Each row is a value of the key: per variant its labelled outcomes and metric, then the
 * challenger's difference with its 95 % interval, the p-value Holm-adjusted across the key's
 * values, and a badge where that is significant (worse, better). The card stays hidden while
 * no segment key is configured.
 */
(function () {
  "use strict";

  var shared = window.RouterDashboard;
  var $ = shared.$, el = shared.el, isNum = shared.isNum;

  function verdict(comparison, metric, alpha) {
    var p = comparison.adjusted_p_value, d = comparison.difference;
    if (!isNum(p) || !isNum(d) || d === 0 || p >= alpha) return null;
    return (d > 0) === (metric === "accuracy") ? "better" : "worse";
  }

  function cell(text, numeric) {
    return el("td", { "class": numeric ? "num" : "name", text: text });
  }

  function table(key, values, challenger, stats) {
    var metric = stats.metric || "accuracy";
    var alpha = (stats.comparison || {}).alpha || 0.05;
    var format = shared.metricFormat(metric), difference = shared.differenceFormat(metric);
    var roles = challenger ? ["champion", challenger] : ["champion"];
    var compared = roles.length > 1;
    var head = [key];
    roles.forEach(function (role) { head.push(role + " n", role); });
    if (compared) head.push("difference", "95 % interval", "adj. p", "");
    var body = el("tbody");
    Object.keys(values).forEach(function (value) {
      var segment = values[value];
      var comparison = ("comparison" in segment ? segment.comparison
                        : (segment.comparisons || {})[challenger]) || {};
      var cells = [cell(value, false)];
      roles.forEach(function (role) {
        var arm = segment.variants[role] || {};
        cells.push(cell(shared.count(arm.labelled), true), cell(format(arm.metric), true));
      });
      if (compared) {
        var interval = comparison.difference_ci95;
        var judged = verdict(comparison, metric, alpha);
        cells.push(cell(difference(comparison.difference), true),
                   cell(interval ? difference(interval[0]) + " … " + difference(interval[1]) : "–", true),
                   cell(shared.pValue(comparison.adjusted_p_value), true),
                   el("td", null, judged ? el("span", {
                     "class": "badge " + (judged === "worse" ? "major" : "stable"), text: judged }) : "–"));
      }
      body.appendChild(el("tr", { "data-value": value }, cells));
    });
    return el("table", { "data-key": key, "data-challenger": challenger }, [
      el("thead", null, el("tr", null, head.map(function (text, i) {
        return el("th", { "class": i === 0 || i === head.length - 1 ? "" : "num", text: text });
      }))),
      body
    ]);
  }

  function renderSegments(stats) {
    var segments = stats.segments || {};
    var keys = Object.keys(segments);
    $("segments-card").hidden = keys.length === 0;
    if (!keys.length) return;
    // Several challengers: each one's tables; one: "challenger"; mode single: none.
    var challengers = stats.challengers || (stats.variants.challenger ? ["challenger"] : [null]);
    $("segments-sub").textContent = shared.metricName(stats.metric || "accuracy") +
      " per value of each key, the challenger against the champion within it; p-values " +
      "Holm-adjusted across a key's values; the 50 most frequent values, the rest as other";
    var box = shared.clear($("segments-table"));
    keys.forEach(function (key) {
      if (!Object.keys(segments[key]).length) {
        box.appendChild(el("div", { "class": "empty", text: key + ": no request carried a value yet." }));
      } else {
        challengers.forEach(function (name) { box.appendChild(table(key, segments[key], name, stats)); });
      }
    });
  }

  shared.renderSegments = renderSegments;
})();
