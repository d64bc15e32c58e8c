/* The dashboard's small helpers: building DOM and SVG nodes, and formatting numbers.
 *
 * Loaded before the page's other scripts, which read them from window.RouterDashboard (and
 * add what they draw to it: segments.js its renderSegments, traffic.js the split and shadow
 * cards).
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";

  // -- small helpers ----------------------------------------------------------------------

  function byId(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, children) {
    var node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    });
  }

  function append(node, children) {
    if (children === null || children === undefined) return;
    (Array.isArray(children) ? children : [children]).forEach(function (child) {
      if (child === null || child === undefined || child === false) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function empty(box, message) {
    clear(box).appendChild(el("div", { "class": "empty", text: message }));
  }

  // -- number formats ---------------------------------------------------------------------

  function sig(v, digits) {
    if (!isNum(v)) return "–";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-4) return v.toExponential(2);
    var decimals = Math.max(0, Math.min(6, digits - 1 - Math.floor(Math.log10(a))));
    return v.toFixed(decimals);
  }

  function pct(v, decimals) {
    return isNum(v) ? (v * 100).toFixed(decimals === undefined ? 1 : decimals) + " %" : "–";
  }

  function count(v) { return isNum(v) ? Math.round(v).toLocaleString("en-US") : "–"; }

  function pValue(p) {
    if (!isNum(p)) return "–";
    if (p < 1e-4) return "< 0.0001";
    return p < 0.01 ? p.toFixed(4) : p.toFixed(3);
  }

  function metricFormat(metric) {
    if (metric === "accuracy") return function (v) { return pct(v, 1); };
    return function (v) { return sig(v, 4); };
  }

  // Axis labels with as many decimals as the tick step needs: "80 %", "+2.5 pp", "0.12".
  function decimalsFor(step) {
    if (!(step > 0)) return 0;
    var power = Math.floor(Math.log10(step) + 1e-9);
    var lead = step / Math.pow(10, power);
    return Math.max(0, -power + (Math.abs(lead - 2.5) < 1e-6 ? 1 : 0));
  }

  function tickFormat(metric, signed) {
    var percent = metric === "accuracy";
    return function (t, step) {
      var v = percent ? t * 100 : t;
      var text = v.toFixed(decimalsFor(percent ? step * 100 : step));
      if (Number(text) === 0) text = (0).toFixed(decimalsFor(percent ? step * 100 : step));
      else if (signed && v > 0) text = "+" + text;
      return text + (percent ? (signed ? " pp" : " %") : "");
    };
  }

  function differenceFormat(metric) {
    if (metric === "accuracy") {
      return function (v) { return isNum(v) ? (v > 0 ? "+" : "") + (v * 100).toFixed(2) + " pp" : "–"; };
    }
    return function (v) { return isNum(v) ? (v > 0 ? "+" : "") + sig(v, 3) : "–"; };
  }

  function metricName(metric) {
    return { accuracy: "accuracy", log_loss: "log loss", mae: "mean absolute error",
             rmse: "RMSE" }[metric] || metric;
  }

  function time(iso) {
    if (!iso) return "–";
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  // -- the variants ------------------------------------------------------------------------

  // The report's variants, the champion first, then each challenger.
  function roles(stats) { return Object.keys((stats && stats.variants) || {}); }

  // The class that colours a variant: its role, or with several challengers its place.
  function roleClass(stats, role) {
    if (role === "champion" || role === "challenger") return role;
    var place = ((stats && stats.challengers) || []).indexOf(role);
    return "arm" + (Math.max(place, 0) % 4 + 1);
  }

  // The timeline to draw: with several challengers the one of the challenger chosen in the
  // page (by default the one the decision names, else the first), shaped as one challenger's.
  function chosenTimeline(stats, timeline, chosen) {
    if (!timeline.timelines) return timeline;
    var names = timeline.challengers || Object.keys(timeline.timelines);
    var name = names.indexOf(chosen) >= 0 ? chosen
      : ((stats.decision || {}).challenger || names[0]);
    var one = timeline.timelines[name];
    return { metric: timeline.metric, higher_is_better: timeline.higher_is_better, mode: timeline.mode,
             alpha: one.alpha, labelled: one.labelled, variants: one.variants,
             comparison: one.comparison, challenger: name, challengers: names };
  }

  window.RouterDashboard = {
    roles: roles,
    roleClass: roleClass,
    chosenTimeline: chosenTimeline,
    $: byId,
    el: el,
    svg: svg,
    clear: clear,
    isNum: isNum,
    empty: empty,
    sig: sig,
    pct: pct,
    count: count,
    pValue: pValue,
    metricFormat: metricFormat,
    decimalsFor: decimalsFor,
    tickFormat: tickFormat,
    differenceFormat: differenceFormat,
    metricName: metricName,
    time: time
  };
})();
