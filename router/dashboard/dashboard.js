/* The experiment dashboard: reads the gateway's JSON and draws it as SVG, with no library.
 *
 * Every few seconds it fetches /stats (the report and its decision), /stats/timeline (the same
 * figures at checkpoints as the labels arrived), /config (the configured split and guardrails)
 * and /history (the switches). A failed fetch shows a message on the page and keeps the last
 * figures; nothing is written to the console, so a console error always means a real fault.
 * When a refresh has drawn everything, <body> gets data-state="ready" and data-renders counts
 * the refreshes drawn (a browser test waits on it).
 */
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var last = null;   // the latest payloads, redrawn as they are when the window is resized
  var renders = 0;

  // Shared with the page's other scripts (helpers.js, loaded first).
  var shared = window.RouterDashboard;
  var $ = shared.$, el = shared.el, svg = shared.svg, clear = shared.clear, isNum = shared.isNum;
  var empty = shared.empty, sig = shared.sig, pct = shared.pct, count = shared.count;
  var pValue = shared.pValue, metricFormat = shared.metricFormat, tickFormat = shared.tickFormat;
  var decimalsFor = shared.decimalsFor, roles = shared.roles, roleClass = shared.roleClass;
  var chosenArm = null;  // several challengers: whose timeline the charts show
  var differenceFormat = shared.differenceFormat, metricName = shared.metricName, time = shared.time;

  // -- scales and ticks -------------------------------------------------------------------

  function linear(d0, d1, r0, r1) {
    var span = d1 - d0 || 1;
    return function (v) { return r0 + (v - d0) / span * (r1 - r0); };
  }

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    var raw = (hi - lo) / Math.max(1, n);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (f) { return f * power; })
      .filter(function (s) { return s >= raw; })[0] || raw;
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    }
    return ticks;
  }

  function extent(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    return lo <= hi ? [lo, hi] : null;
  }

  function chartSize(box, tall) {
    var width = Math.max(240, Math.floor(box.clientWidth || 600));
    var height = width < 480 ? 190 : (tall ? 260 : 220);
    return { w: width, h: height };
  }

  // -- line chart with interval bands -----------------------------------------------------
  //
  // spec: x (numbers), series [{cls, name, y, band: [[lo, hi] | null]}], yFormat, xTitle,
  // log (y on a log10 scale), lines [{y, label, cls}], clamp [min, max], tall.

  function lineChart(box, spec) {
    var size = chartSize(box, spec.tall);
    var m = { l: 56, r: 16, t: 14, b: 36 };
    var W = size.w, H = size.h;
    var floor = 1e-12;
    function ty(v) { return spec.log ? Math.log10(Math.max(v, floor)) : v; }

    var ys = [];
    spec.series.forEach(function (s) {
      s.y.forEach(function (v) { if (isNum(v)) ys.push(ty(v)); });
      (s.band || []).forEach(function (b) { if (b) { ys.push(ty(b[0])); ys.push(ty(b[1])); } });
    });
    (spec.lines || []).forEach(function (l) { ys.push(ty(l.y)); });
    var range = extent(ys) || [0, 1];
    if (spec.log) {
      range = [Math.min(Math.floor(range[0]), -2), 0];
    } else {
      var pad = (range[1] - range[0]) * 0.08 || Math.abs(range[0]) * 0.1 || 0.1;
      range = [range[0] - pad, range[1] + pad];
      if (spec.clamp) range = [Math.max(spec.clamp[0], range[0]), Math.min(spec.clamp[1], range[1])];
    }
    var x0 = Math.min(0, spec.x[0]), x1 = spec.x[spec.x.length - 1];
    var sx = linear(x0, x1 > x0 ? x1 : x0 + 1, m.l, W - m.r);
    var syRaw = linear(range[0], range[1], H - m.b, m.t);
    function sy(v) { return syRaw(ty(v)); }

    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H,
                            role: "img", "aria-label": spec.label || "chart", "class": "line-chart" });
    var yTicks = spec.log ? integerRange(range[0], range[1]) : niceTicks(range[0], range[1], 4);
    var yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
    yTicks.forEach(function (t) {
      var y = syRaw(t);
      root.appendChild(svg("line", { "class": "gridline", x1: m.l, x2: W - m.r, y1: y, y2: y }));
      var text = spec.log ? logLabel(t) : (spec.tickFormat || spec.yFormat)(t, yStep);
      root.appendChild(svg("text", { x: m.l - 6, y: y + 3.5, "text-anchor": "end", text: text }));
    });
    niceTicks(x0, x1, W < 480 ? 3 : 6).forEach(function (t) {
      if (t < x0 || t > x1) return;
      root.appendChild(svg("text", { x: sx(t), y: H - m.b + 15, "text-anchor": "middle",
                                     text: count(t) }));
    });
    root.appendChild(svg("text", { "class": "axis-title", x: W - m.r, y: H - 4,
                                   "text-anchor": "end", text: spec.xTitle }));

    (spec.lines || []).forEach(function (l) {
      var y = sy(l.y);
      root.appendChild(svg("line", { "class": l.cls, x1: m.l, x2: W - m.r, y1: y, y2: y }));
      if (l.label) {
        root.appendChild(svg("text", { "class": l.cls + "-label", x: W - m.r - 2, y: y - 5,
                                       "text-anchor": "end", text: l.label }));
      }
    });

    spec.series.forEach(function (s) {
      segments(spec.x.length, function (i) { return s.band && s.band[i]; }).forEach(function (seg) {
        var top = seg.map(function (i) { return pt(sx(spec.x[i]), sy(s.band[i][1])); });
        var bottom = seg.slice().reverse().map(function (i) { return pt(sx(spec.x[i]), sy(s.band[i][0])); });
        root.appendChild(svg("path", { "class": "band " + s.cls, d: "M" + top.concat(bottom).join("L") + "Z" }));
      });
    });
    spec.series.forEach(function (s) {
      segments(spec.x.length, function (i) { return isNum(s.y[i]); }).forEach(function (seg) {
        var d = seg.map(function (i) { return pt(sx(spec.x[i]), sy(s.y[i])); });
        root.appendChild(svg("path", { "class": "line " + s.cls, d: "M" + d.join("L") }));
      });
      var lastIndex = lastNum(s.y);
      if (lastIndex >= 0) {
        root.appendChild(svg("circle", { "class": "dot " + s.cls, r: 3.5,
                                         cx: sx(spec.x[lastIndex]), cy: sy(s.y[lastIndex]) }));
      }
    });

    hover(box, root, spec, sx, sy, { l: m.l, r: W - m.r, t: m.t, b: H - m.b });
    clear(box).appendChild(root);
    return root;
  }

  function integerRange(lo, hi) {
    var out = [];
    var step = hi - lo > 6 ? 2 : 1;
    for (var t = Math.ceil(lo); t <= hi; t += step) out.push(t);
    return out;
  }

  function logLabel(power) {
    if (power === 0) return "1";
    if (power >= -3) return String(Math.pow(10, power).toFixed(-power));
    return "1e" + power;
  }

  function pt(x, y) { return x.toFixed(1) + "," + y.toFixed(1); }

  function lastNum(values) {
    for (var i = values.length - 1; i >= 0; i--) if (isNum(values[i])) return i;
    return -1;
  }

  function segments(n, present) {
    var out = [], current = [];
    for (var i = 0; i < n; i++) {
      if (present(i)) current.push(i);
      else if (current.length) { out.push(current); current = []; }
    }
    if (current.length) out.push(current);
    return out;
  }

  // A cursor and a tooltip with every series' value at the nearest checkpoint.
  function hover(box, root, spec, sx, sy, area) {
    var cursor = svg("line", { "class": "cursor", y1: area.t, y2: area.b, visibility: "hidden" });
    var hit = svg("rect", { "class": "hit", x: area.l, y: area.t, width: Math.max(0, area.r - area.l),
                            height: Math.max(0, area.b - area.t) });
    root.appendChild(cursor);
    root.appendChild(hit);
    var tip = null;
    function hide() {
      cursor.setAttribute("visibility", "hidden");
      if (tip && tip.parentNode) tip.parentNode.removeChild(tip);
      tip = null;
    }
    hit.addEventListener("pointerleave", hide);
    hit.addEventListener("pointermove", function (event) {
      var rect = root.getBoundingClientRect();
      var scale = rect.width ? (Number(root.getAttribute("width")) / rect.width) : 1;
      var x = (event.clientX - rect.left) * scale;
      var best = 0;
      spec.x.forEach(function (v, i) { if (Math.abs(sx(v) - x) < Math.abs(sx(spec.x[best]) - x)) best = i; });
      var cx = sx(spec.x[best]);
      cursor.setAttribute("x1", cx);
      cursor.setAttribute("x2", cx);
      cursor.setAttribute("visibility", "visible");
      if (!tip) { tip = el("div", { "class": "tip" }); box.appendChild(tip); }
      clear(tip);
      tip.appendChild(el("div", null, [el("b", { text: count(spec.x[best]) }), " " + spec.xTitle.split(",")[0]]));
      spec.series.forEach(function (s) {
        var band = s.band && s.band[best];
        var text = s.name + ": " + (spec.tipFormat || spec.yFormat)(s.y[best]) +
          (band ? "  [" + spec.yFormat(band[0]) + ", " + spec.yFormat(band[1]) + "]" : "");
        tip.appendChild(el("div", { "class": s.cls, text: text }));
      });
      var left = cx / scale + 12;
      if (left + 190 > rect.width) left = Math.max(0, cx / scale - 200);
      tip.style.left = left + "px";
      tip.style.top = "8px";
    });
  }

  // -- bar charts -------------------------------------------------------------------------

  // Rows of one 100 % bar split in parts: rows [{label, parts: [{cls, value (0..1), text}]}].
  function stackedBars(box, rows, label) {
    var W = Math.max(240, Math.floor(box.clientWidth || 600));
    var labelW = W < 420 ? 78 : 96, rowH = 30, gap = 12, top = 4;
    var H = top + rows.length * (rowH + gap);
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                            "aria-label": label, "class": "bar-chart" });
    var sx = linear(0, 1, labelW, W - 4);
    rows.forEach(function (row, r) {
      var y = top + r * (rowH + gap);
      root.appendChild(svg("text", { "class": "bar-label", x: 0, y: y + rowH / 2 + 4, text: row.label }));
      root.appendChild(svg("rect", { "class": "bar track", x: labelW, y: y, width: W - 4 - labelW,
                                     height: rowH, rx: 4 }));
      var at = 0;
      row.parts.forEach(function (part) {
        var v = isNum(part.value) ? Math.max(0, Math.min(1, part.value)) : 0;
        var x = sx(at), w = sx(at + v) - x;
        if (w > 0) {
          root.appendChild(svg("rect", { "class": "bar " + part.cls, x: x, y: y, width: w, height: rowH }));
          if (w > 52 && part.text) {
            root.appendChild(svg("text", { "class": "on-bar", x: x + w / 2, y: y + rowH / 2 + 4,
                                           "text-anchor": "middle", text: part.text }));
          }
        }
        at += v;
      });
    });
    clear(box).appendChild(root);
  }

  shared.stackedBars = stackedBars;  // the traffic cards draw with it (traffic.js)

  // Horizontal bars on one scale: rows [{group, cls, value, text}], limit {value, label}.
  // A limit far beyond the bars is named at the right edge instead of squeezing them.
  function barChart(box, rows, opts) {
    var W = Math.max(240, Math.floor(box.clientWidth || 600));
    var labelW = opts.labelWidth || 44, barH = 14, inner = 4, groupGap = 12, right = opts.right || 64;
    var limit = opts.limit && isNum(opts.limit.value) ? opts.limit : null;
    var top = limit ? 20 : 4;
    var groups = [];
    rows.forEach(function (row) { if (groups.indexOf(row.group) < 0) groups.push(row.group); });
    var perGroup = rows.length / Math.max(1, groups.length);
    var groupH = perGroup * barH + (perGroup - 1) * inner;
    var H = top + groups.length * (groupH + groupGap) + 18;
    var most = (extent(rows.map(function (r) { return r.value; })) || [0, 0])[1];
    var offScale = limit && most > 0 && limit.value > 4 * most;
    var max = (limit && !offScale ? Math.max(most, limit.value) : most) ||
      (limit ? limit.value : opts.floor || 1);
    var sx = linear(0, max * 1.08, labelW, W - right);
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                            "aria-label": opts.label, "class": "bar-chart" });
    var ticks = niceTicks(0, max * 1.08, W < 420 ? 3 : 5);
    var step = ticks.length > 1 ? ticks[1] - ticks[0] : max;
    ticks.forEach(function (t) {
      root.appendChild(svg("line", { "class": "gridline", x1: sx(t), x2: sx(t), y1: top, y2: H - 18 }));
      root.appendChild(svg("text", { x: sx(t), y: H - 4, "text-anchor": "middle", text: opts.tick(t, step) }));
    });
    groups.forEach(function (group, g) {
      var y0 = top + g * (groupH + groupGap);
      root.appendChild(svg("text", { "class": "bar-label", x: 0, y: y0 + groupH / 2 + 4, text: group }));
      rows.filter(function (r) { return r.group === group; }).forEach(function (row, k) {
        var y = y0 + k * (barH + inner);
        var w = isNum(row.value) ? Math.max(1, sx(row.value) - labelW) : 0;
        root.appendChild(svg("rect", { "class": "bar " + row.cls, x: labelW, y: y, width: w, height: barH, rx: 2 }));
        root.appendChild(svg("text", { x: labelW + w + 5, y: y + barH - 3,
                                       text: isNum(row.value) ? (row.text || opts.format(row.value)) : "no data" }));
      });
    });
    if (limit && offScale) {
      root.appendChild(svg("text", { "class": "limit-label", x: W - 2, y: 12, "text-anchor": "end",
                                     text: limit.label + " →" }));
    } else if (limit) {
      var lx = sx(limit.value);
      root.appendChild(svg("line", { "class": "limit", x1: lx, x2: lx, y1: top - 4, y2: H - 18 }));
      root.appendChild(svg("text", { "class": "limit-label", x: lx, y: 12,
                                     "text-anchor": lx + 60 > W ? "end" : lx - 60 < labelW ? "start" : "middle",
                                     text: limit.label }));
    }
    clear(box).appendChild(root);
  }

  // -- sections ---------------------------------------------------------------------------

  function renderHeader(stats, config) {
    var c = (config && config.config) || {};
    $("experiment").textContent = stats.experiment || c.experiment || "experiment";
    document.body.setAttribute("data-mode", stats.mode);
    var meta = clear($("meta"));
    meta.appendChild(el("span", { "class": "tag", text: "mode " + stats.mode }));
    meta.appendChild(el("span", { "class": "tag", text: "revision " + (stats.config_revision || "–") }));
    meta.appendChild(el("span", { "class": "tag", text: metricName(stats.metric) }));
    var since = stats.phase && stats.phase.since;
    meta.appendChild(document.createTextNode("phase since " + time(since)));
  }

  function renderDecision(stats, config, history) {
    if (stats.mode === "single") { renderServing(stats, config, history); return; }
    $("decision-title").textContent = "Recommendation";
    var decision = stats.decision || {};
    var action = decision.action || "unknown";
    $("decision").setAttribute("data-action", action);
    $("decision-action").textContent = action;
    var list = clear($("decision-reasons"));
    (decision.reasons || []).forEach(function (reason) { list.appendChild(el("li", { text: reason })); });
  }

  // Mode single is no experiment to judge (after a promotion, a rollback, or by design): the
  // banner says what serves and how it got there, not a recommendation to "continue".
  function renderServing(stats, config, history) {
    var c = (config && config.config) || {};
    var champion = stats.variants && stats.variants.champion;
    var name = (c.champion && c.champion.name) || (champion && champion.model) || "the champion";
    $("decision").setAttribute("data-action", "single");
    $("decision-title").textContent = "Serving";
    $("decision-action").textContent = name;
    var list = clear($("decision-reasons"));
    list.appendChild(el("li", { text: "No experiment running: " + name +
      (champion && champion.version ? " (version " + champion.version + ")" : "") +
      " answers every request." }));
    var entries = (history && history.history) || [];
    var last = null;
    entries.forEach(function (e) { if (e.action === "promote" || e.action === "rollback") last = e; });
    if (last) {
      list.appendChild(el("li", { text: (last.action === "promote" ? "Promoted " : "Rolled back ") +
        last.from + " → " + last.to + " on " + new Date(last.ts * 1000).toLocaleString() +
        ": " + last.reason }));
    }
    if (c.previous) {
      list.appendChild(el("li", { text: c.previous.name + " stays loaded as previous: a rollback " +
        "restores it at once." }));
    }
    if (c.challenger) {
      list.appendChild(el("li", { text: c.challenger.name + " stays loaded as challenger, " +
        "serving nothing: set mode ab or shadow to test it again." }));
    }
  }

  function kpi(cls, label, value, note, tone) {
    return el("div", { "class": "kpi " + cls }, [
      el("div", { "class": "kpi-label", text: label }),
      el("div", { "class": "kpi-value" + (tone ? " " + tone : ""), text: value }),
      el("div", { "class": "kpi-note", text: note })
    ]);
  }

  function renderKpis(stats) {
    var box = clear($("kpis"));
    var fmt = metricFormat(stats.metric);
    roles(stats).forEach(function (role) {
      var v = stats.variants[role];
      var ci = v.metric_ci95 ? "95 % CI " + fmt(v.metric_ci95[0]) + " – " + fmt(v.metric_ci95[1]) : "no interval yet";
      box.appendChild(kpi(roleClass(stats, role), role + " · " + v.model + " v" + v.version + (v.shadow ? " (shadow)" : ""),
                          fmt(v.metric), ci + " · " + count(v.labelled) + " labelled of " + count(v.requests)));
    });
    // One challenger's comparison, or each of several (their p-values Holm-adjusted too).
    var compared = stats.comparisons || (stats.comparison ? { challenger: stats.comparison } : {});
    Object.keys(compared).forEach(function (name) { comparisonKpis(box, name, compared[name]); });
  }

  function comparisonKpis(box, name, c) {
    var dfmt = differenceFormat(c.metric);
    // The side of zero the always-valid confidence sequence lies on decides, never the estimate.
    var cs = c.difference_cs;
    var above = cs && isNum(cs[0]) && cs[0] > 0;
    var better = above === (c.metric === "accuracy");
    var tone = c.significant ? (better ? "good" : "bad") : "";
    var dci = (cs ? "always-valid " + dfmt(cs[0]) + " – " + dfmt(cs[1]) : "no confidence sequence yet") +
      (c.difference_ci95 ? " · 95 % CI " + dfmt(c.difference_ci95[0]) + " – " + dfmt(c.difference_ci95[1]) : "");
    box.appendChild(kpi("difference", "difference · " + name + " − champion", dfmt(c.difference), dci, tone));
    box.appendChild(kpi("pvalue", "sequential p-value (" + c.sequential_test + ")" + (name === "challenger" ? "" : " · " + name),
                        pValue(c.sequential_p_value), (c.significant ? "significant" : "not significant") + " at α = " +
                        c.alpha + " · fixed-horizon p " + pValue(c.p_value) +
                        (isNum(c.adjusted_p_value) ? " · Holm " + pValue(c.adjusted_p_value) : ""), tone));
  }

  function legend(box, entries) {
    clear(box);
    entries.forEach(function (e) {
      box.appendChild(el("span", { "class": "key" }, [el("span", { "class": "swatch " + e.cls }), e.text]));
    });
  }

  // Several challengers: a choice of whose comparison the three charts draw.
  function armPicker(timeline) {
    var picker = $("timeline-arm");
    picker.hidden = !timeline.challengers;
    if (picker.hidden) return;
    clear(picker);
    timeline.challengers.forEach(function (name) {
      picker.appendChild(el("option", { value: name, text: name, selected: name === timeline.challenger }));
    });
    picker.onchange = function () { chosenArm = picker.value; if (last) draw(last); };
  }

  function renderTimeline(stats, full) {
    var timeline = shared.chosenTimeline(stats, full, chosenArm);
    armPicker(timeline);
    var shown = Object.keys(timeline.variants);
    var fmt = metricFormat(timeline.metric);
    var noLabels = "No labelled outcomes yet: the charts appear once ground truth arrives at POST /feedback.";
    var x = timeline.labelled;
    $("metric-sub").textContent = metricName(timeline.metric) + " of each variant with its 95 % interval, " +
      "as the labels arrived" + (timeline.higher_is_better ? " (higher is better)" : " (lower is better)");
    legend($("metric-legend"), shown.filter(function (r) { return stats.variants[r]; }).map(function (r) {
      return { cls: roleClass(stats, r), text: r + " · " + stats.variants[r].model };
    }).concat([{ cls: "band", text: "95 % interval" }]));
    if (!x.length) {
      empty($("metric-chart"), noLabels);
    } else {
      lineChart($("metric-chart"), {
        x: x, tall: true, yFormat: fmt, tickFormat: tickFormat(timeline.metric, false), xTitle: "labelled outcomes, in order of arrival",
        label: "metric of each variant over labelled outcomes",
        clamp: timeline.metric === "accuracy" ? [0, 1] : [0, Infinity],
        series: shown.map(function (r) {
          return { cls: roleClass(stats, r), name: r, y: timeline.variants[r].metric, band: timeline.variants[r].ci95 };
        })
      });
    }

    var c = timeline.comparison;
    var single = "Mode single: there is no challenger to compare.";
    if (!c) {
      empty($("difference-chart"), single);
      empty($("pvalue-chart"), single);
      $("difference-sub").textContent = "";
      $("pvalue-sub").textContent = "";
      return;
    }
    var dfmt = differenceFormat(timeline.metric);
    $("difference-sub").textContent = (timeline.higher_is_better ? "above zero" : "below zero") +
      " favours " + (timeline.challenger || "the challenger") + (timeline.mode === "shadow" ? "; paired, on the requests both scored" : "");
    $("pvalue-sub").textContent = "always valid (mSPRT): looking often does not inflate errors; " +
      "significant once below α = " + timeline.alpha;
    if (!x.length) {
      empty($("difference-chart"), noLabels);
      empty($("pvalue-chart"), noLabels);
      return;
    }
    lineChart($("difference-chart"), {
      x: x, yFormat: dfmt, tickFormat: tickFormat(timeline.metric, true), xTitle: "labelled outcomes", label: "difference over labelled outcomes",
      lines: [{ y: 0, cls: "zero" }],
      series: [{ cls: "difference", name: "difference", y: c.difference, band: c.difference_cs }]
    });
    lineChart($("pvalue-chart"), {
      x: x, log: true, yFormat: pValue, xTitle: "labelled outcomes", label: "sequential p-value over labelled outcomes",
      lines: [{ y: timeline.alpha, cls: "limit", label: "α = " + timeline.alpha }],
      series: [{ cls: "pvalue", name: "p", y: c.sequential_p_value }]
    });
  }

  function guardrails(config) {
    var analysis = config && config.config && config.config.analysis;
    return (analysis && analysis.guardrails) || {};
  }

  function renderLatency(stats, config) {
    var limit = guardrails(config).p99_latency_ms;
    var rows = [];
    ["p50", "p95", "p99"].forEach(function (p) {
      roles(stats).forEach(function (r) {
        rows.push({ group: p, cls: roleClass(stats, r), value: stats.variants[r].latency_ms[p] });
      });
    });
    $("latency-sub").textContent = "per variant, every answered row" +
      (isNum(limit) ? "; the challenger's p99 guardrail is " + limit + " ms" : "; no latency guardrail");
    if (!rows.some(function (r) { return isNum(r.value); })) { empty($("latency-chart"), "No requests yet."); return; }
    barChart($("latency-chart"), rows, {
      label: "latency percentiles per variant", format: function (v) { return sig(v, 3) + " ms"; },
      tick: function (t, step) { return t.toFixed(decimalsFor(step)) + " ms"; },
      limit: isNum(limit) ? { value: limit, label: "guardrail " + limit + " ms" } : null
    });
  }

  function renderErrors(stats, config) {
    var limit = guardrails(config).error_rate;
    var rows = roles(stats).map(function (r) {
      return { group: r, cls: roleClass(stats, r), value: stats.variants[r].error_rate };
    });
    var counts = roles(stats).map(function (r) {
      var v = stats.variants[r];
      return r + " " + count(v.errors) + " of " + count(v.requests);
    });
    var fallbacks = roles(stats).reduce(function (sum, r) { return sum + (stats.variants[r].fallbacks || 0); }, 0);
    $("errors-sub").textContent = "model calls that failed (" + counts.join(", ") + ")" +
      (isNum(limit) ? "; the challenger's guardrail is " + pct(limit, 2) : "; no error-rate guardrail") +
      (isNum(fallbacks) && fallbacks > 0 ? "; " + count(fallbacks) + " answered by the champion instead" : "");
    if (!rows.some(function (r) { return isNum(r.value); })) { empty($("errors-chart"), "No requests yet."); return; }
    barChart($("errors-chart"), rows, {
      label: "error rate per variant", labelWidth: 74, floor: 0.01, format: function (v) { return pct(v, 2); },
      tick: function (t, step) { return (t * 100).toFixed(decimalsFor(step * 100)) + " %"; },
      limit: isNum(limit) ? { value: limit, label: "guardrail " + pct(limit, 2) } : null
    });
  }

  var DRIFT_ROWS = 8;     // features shown before "show all", the most drifted first
  var driftAll = false;

  // A long feature name may wrap after its underscores, never inside a word.
  function breakable(name) {
    var parts = [];
    String(name).split("_").forEach(function (piece, i) {
      if (i) { parts.push("_"); parts.push(el("wbr")); }
      parts.push(piece);
    });
    return parts;
  }

  function renderDrift(stats) {
    var drift = stats.drift || {};
    var features = drift.features || {};
    var predictions = drift.predictions || {};
    var names = Object.keys(features).sort(function (a, b) {
      return (features[b].psi || 0) - (features[a].psi || 0);
    });
    var box = clear($("drift-table"));
    var flagged = names.filter(function (n) { return features[n].status && features[n].status !== "stable"; });
    $("drift-sub").textContent = "live inputs (latest " + count(drift.rows) + " requests) against " +
      (drift.reference || "the champion") + "'s training data; a feature drifts when its PSI is ≥ 0.1 " +
      "(moderate) or ≥ 0.25 (major) and more than noise (adjusted p < " + ((drift.thresholds || {}).alpha || 0.01) + ")" +
      (names.length ? " · " + flagged.length + " of " + names.length + " features drifted" : "");
    if (!names.length && !isNum(drift.prediction_psi)) { empty(box, "No requests yet."); return; }
    var scale = Math.max(0.3, Math.max.apply(null, names.map(function (n) { return features[n].psi || 0; })));
    function row(name, f) {
      var status = f.status;
      var bar = el("span", { "class": "psi-bar " + (status || "") });
      bar.style.width = (isNum(f.psi) ? Math.max(2, Math.round(48 * Math.min(f.psi, scale) / scale)) : 0) + "px";
      return el("tr", null, [
        el("td", { "class": "name" }, breakable(name)),
        el("td", { "class": "num" }, [sig(f.psi, 2), bar]),
        el("td", { "class": "num", text: isNum(f.expected_psi) ? sig(f.expected_psi, 2) : "–" }),
        el("td", { "class": "num", text: isNum(f.adjusted_p_value) ? pValue(f.adjusted_p_value) : "–" }),
        el("td", null, status ? el("span", { "class": "badge " + status, text: status }) : "–")
      ]);
    }
    var body = el("tbody");
    var shown = driftAll ? names : names.slice(0, DRIFT_ROWS);
    shown.forEach(function (n) { body.appendChild(row(n, features[n])); });
    roles(stats).forEach(function (role) {
      if (predictions[role]) body.appendChild(row("predictions (" + role + ")", predictions[role]));
    });
    box.appendChild(el("table", null, [
      el("thead", null, el("tr", null, [el("th", { text: "feature" }), el("th", { "class": "num", text: "PSI" }),
                                         el("th", { "class": "num", text: "noise", title: "the PSI expected from sampling noise alone at these sizes" }),
                                         el("th", { "class": "num", text: "adj. p" }), el("th", { text: "status" })])),
      body
    ]));
    if (names.length > DRIFT_ROWS) {
      var toggle = el("button", { type: "button", "class": "more",
                                  text: driftAll ? "Show the " + DRIFT_ROWS + " most drifted" : "Show all " + names.length + " features" });
      toggle.addEventListener("click", function () { driftAll = !driftAll; renderDrift(stats); });
      box.appendChild(toggle);
    }
  }

  // Each variant's latest labelled outcomes (quality) and latest predictions (outputs): the
  // layers of monitoring that read the outputs, next to the level recorded with the model.
  function renderMonitoring(stats) {
    var rolling = (stats.rolling || {}).variants || {};
    var outputs = (stats.outputs || {}).variants || {};
    var shown = roles(stats).filter(function (r) { return rolling[r] || outputs[r]; });
    var box = clear($("monitoring-table"));
    $("monitoring-sub").textContent = "quality over each variant's latest " + count((stats.rolling || {}).window) +
      " labels, outputs over its latest " + count((stats.outputs || {}).window) + " predictions, against its training data";
    if (!shown.length) { empty(box, "No requests yet."); return; }
    var classifier = shown.some(function (r) { return rolling[r] && "accuracy" in rolling[r]; });
    var head = classifier
      ? ["variant", "labelled", "accuracy", "recorded", "macro F1", "lowest recall", "top class", "training share", "outputs"]
      : ["variant", "labelled", "MAE", "RMSE", "mean error", "output mean", "training mean", "outputs"];
    var body = el("tbody");
    shown.forEach(function (role) {
      var q = rolling[role] || {}, o = outputs[role] || {};
      var recorded = q.recorded || {};
      var flag = o.constant_output ? el("span", { "class": "badge major", text: "constant" })
        : el("span", { "class": "badge stable", text: isNum(o.predictions) && o.predictions ? "mixed" : "–" });
      var cells;
      if (classifier) {
        var classes = q.classes || {};
        var lowest = null, lowestName = "";
        Object.keys(classes).forEach(function (c) {
          if (classes[c].support > 0 && (lowest === null || classes[c].recall < lowest)) { lowest = classes[c].recall; lowestName = c; }
        });
        cells = [count(q.labelled), pct(q.accuracy), pct(recorded.accuracy), sig(q.macro_f1, 3),
                 lowest === null ? "–" : pct(lowest) + " (" + lowestName + ")",
                 o.top_class ? o.top_class + " " + pct(o.top_share) : "–",
                 o.top_class && o.reference_shares ? pct(o.reference_shares[o.top_class]) : "–"];
      } else {
        cells = [count(q.labelled), sig(q.mae, 3), sig(q.rmse, 3), sig(q.mean_error, 3), sig(o.mean, 3),
                 o.reference ? sig(o.reference.mean, 3) : "–"];
      }
      body.appendChild(el("tr", null, [el("td", { "class": "name", text: role })].concat(
        cells.map(function (text) { return el("td", { "class": "num", text: text }); }),
        [el("td", null, flag)])));
    });
    box.appendChild(el("table", null, [
      el("thead", null, el("tr", null, head.map(function (h, i) {
        return el("th", { "class": i === 0 || i === head.length - 1 ? "" : "num", text: h });
      }))),
      body
    ]));
  }

  function renderHistory(history) {
    var box = clear($("history-list"));
    var entries = (history && history.history) || [];
    $("history-sub").textContent = "promotions, rollbacks and rollout steps recorded in the store, newest first";
    if (!entries.length) { empty(box, "No switch recorded yet."); return; }
    var list = el("ol", { "class": "history" });
    entries.slice().reverse().forEach(function (e) {
      var kind = e.action === "promote" ? "promote" : e.action === "rollback" ? "rollback" : "step";
      list.appendChild(el("li", null, [
        el("div", { "class": "when", text: new Date(e.ts * 1000).toLocaleString() }),
        el("div", { "class": "what" }, [
          el("span", { "class": "badge " + kind, text: e.action }), " ",
          el("b", { text: e.from }), " → ", el("b", { text: e.to }),
          el("div", { "class": "why", text: e.reason + (e.actor ? " · " + e.actor : "") })
        ])
      ]));
    });
    box.appendChild(list);
  }

  // -- refresh loop -----------------------------------------------------------------------

  function getJSON(path) {
    return fetch(path, { cache: "no-store", headers: { Accept: "application/json" } }).then(function (response) {
      return response.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!response.ok) {
          var message = body && body.message ? body.message : "HTTP " + response.status;
          throw new Error("/" + path + ": " + message);
        }
        if (body === null) throw new Error("/" + path + ": the answer is not JSON");
        return body;
      });
    }, function () {
      throw new Error("/" + path + ": the gateway did not answer");
    });
  }

  function settle(promise) {
    return promise.then(function (value) { return { ok: true, value: value }; },
                        function (error) { return { ok: false, error: error }; });
  }

  function section(name, draw, problems) {
    try { draw(); } catch (e) { problems.push(name + ": " + (e && e.message ? e.message : e)); }
  }

  function draw(data) {
    var problems = data.problems.slice();
    var stats = data.stats, timeline = data.timeline, config = data.config, history = data.history;
    if (stats) {
      section("header", function () { renderHeader(stats, config); }, problems);
      section("decision", function () { renderDecision(stats, config, history); }, problems);
      section("key figures", function () { renderKpis(stats); }, problems);
      section("split", function () { shared.renderSplit(stats, config); }, problems);
      section("latency", function () { renderLatency(stats, config); }, problems);
      section("errors", function () { renderErrors(stats, config); }, problems);
      section("shadow", function () { shared.renderShadow(stats); }, problems);
      section("drift", function () { renderDrift(stats); }, problems);
      section("monitoring", function () { renderMonitoring(stats); }, problems);
      section("segments", function () { shared.renderSegments(stats); }, problems);
      if (timeline) section("charts", function () { renderTimeline(stats, timeline); }, problems);
    }
    if (history) section("history", function () { renderHistory(history); }, problems);
    var alert = $("alert");
    alert.hidden = problems.length === 0;
    alert.textContent = problems.length ? "Could not refresh everything (showing the last figures): " +
      problems.join("; ") + ". Retrying in " + Math.round(delayMs / 1000) + " s." : "";
    return problems.length === 0;
  }

  // The gateway computes these figures from the whole phase's log: over a large log that takes
  // a while, and a page left open should not keep a core busy. The next refresh waits ten
  // times as long as this one took, and never less than REFRESH_MS.
  var delayMs = REFRESH_MS;

  function refresh() {
    var started = Date.now();
    Promise.all(["stats", "stats/timeline", "config", "history"].map(function (p) { return settle(getJSON(p)); }))
      .then(function (results) {
        var data = { stats: null, timeline: null, config: null, history: null, problems: [] };
        ["stats", "timeline", "config", "history"].forEach(function (key, i) {
          if (results[i].ok) data[key] = results[i].value;
          else {
            data.problems.push(results[i].error.message);
            data[key] = last ? last[key] : null;
          }
        });
        last = data;
        delayMs = Math.max(REFRESH_MS, 10 * (Date.now() - started));
        var ok = draw(data);
        renders += 1;
        document.body.setAttribute("data-renders", String(renders));
        document.body.setAttribute("data-state", ok ? "ready" : "error");
        $("updated").textContent = (ok ? "updated " : "last tried ") + new Date().toLocaleTimeString();
      })
      .then(schedule, schedule);
  }

  function schedule() { window.setTimeout(refresh, delayMs); }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () { if (last) draw(last); }, 150);
  });

  refresh();
})();
