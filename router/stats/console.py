"""``router stats``: the report fetched from a gateway or computed from a store, as a table.

The table fits an 80-column terminal. Live (``--url``) it is the gateway's own ``/stats``;
offline (``--store``, ``--config``) the same :func:`router.stats.loader.compute_report` runs
here on the logged outcomes, so ``--alpha`` and ``--metric`` replay the verdict.
"""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FetchError", "exported_report", "fetch_report", "offline_report", "render_report"]

WIDTH = 80
_LABEL = 22  # width of the first column
_COLUMN = 28  # width of each variant's column


class FetchError(Exception):
    """The gateway could not be reached or did not answer with a report."""


def fetch_report(url: str, *, alpha: float | None = None, metric: str | None = None,
                 timeout_s: float = 30.0) -> dict[str, Any]:
    """``GET {url}/stats`` with the overrides as query parameters."""
    query = {k: str(v) for k, v in (("alpha", alpha), ("metric", metric)) if v is not None}
    address = url.rstrip("/") + "/stats" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    if not address.startswith(("http://", "https://")):
        raise FetchError(f"--url must start with http:// or https://, got {url!r}")
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{address}: HTTP {exc.code}: {_error_message(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot reach {address}: {reason}") from None
    try:
        report = json.loads(body)
    except ValueError:
        raise FetchError(f"{address}: the answer is not JSON") from None
    if not isinstance(report, dict) or "variants" not in report:
        raise FetchError(f"{address}: the answer is not a /stats report")
    return report


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200] or "no message"


def offline_report(config_file: str, store_url: str | None, *, alpha: float | None = None,
                   metric: str | None = None) -> dict[str, Any]:
    """The report computed here from a store (the config's own when ``store_url`` is None)."""
    from router.config import load_config
    from router.outcomes import open_store
    from router.serving.registry import ModelRegistry
    from router.serving.snapshot import load_models
    from router.stats.loader import compute_report

    base = Path.cwd()
    config = load_config(config_file, base_dir=base)
    # Opened first: a mistyped store path fails before the models take seconds to load.
    store = open_store(store_url or config.store, base, create=False)
    try:
        models = load_models(config, ModelRegistry())
        return compute_report(store, config, models, alpha=alpha, metric=metric)
    finally:
        store.close()


def exported_report(outcomes: str, *, alpha: float | None = None, metric: str | None = None,
                    mode: str = "ab", challenger_percent: float = 50.0) -> dict[str, Any]:
    """``router stats --outcomes FILE.csv``: :func:`router.stats.analyze` of an exported log,
    the config's analysis defaults where no override is given."""
    from router.stats.offline import analyze

    analysis = {k: v for k, v in (("metric", metric), ("alpha", alpha)) if v is not None}
    return analyze(outcomes, analysis, mode=mode, challenger_percent=challenger_percent)


# -- rendering ---------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if value < 1e-4 else f"{value:.4f}"


def _interval(pair: list[float] | None, signed: bool = False) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "-"
    spec = "+.4f" if signed else ".4f"
    return f"[{pair[0]:{spec}}, {pair[1]:{spec}}]"


def _cells(label: str, *cells: str, width: int = _COLUMN) -> str:
    # A narrower column (several challengers) cuts what does not fit, keeping one space.
    fitted = cells if width == _COLUMN else [c[:width - 1] for c in cells]
    return (label.ljust(_LABEL) + "".join(c.ljust(width) for c in fitted)).rstrip()


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent + "- ",
                         subsequent_indent=indent + "  ") or [indent + "-"]


def _variants(report: Mapping[str, Any], metric: str) -> list[str]:
    variants = report["variants"]
    roles = list(variants)  # the champion, then each challenger
    v = [variants[r] for r in roles]
    # Several challengers share the 58 columns right of the labels.
    width = min(_COLUMN, (WIDTH - _LABEL) // max(len(roles), 1))

    def row(label: str, *cells: str) -> str:
        return _cells(label, *cells, width=width)

    def latency(x: Mapping[str, Any]) -> str:
        ms = x["latency_ms"]
        if ms["p50"] is None:
            return "-"
        return "/".join(f"{ms[k]:.2f}" for k in ("p50", "p95", "p99")) + " ms"

    def errors(x: Mapping[str, Any]) -> str:
        rate = x["error_rate"]
        return f"{x['errors']:,}" + ("" if rate is None else f" ({rate * 100:.2f}%)")

    lines = [
        row("", *[r.upper() + (" (shadow)" if x.get("shadow") else "") for r, x in
                   zip(roles, v, strict=True)]),
        row("model", *[x["model"] if x["version"] is None else f"{x['model']}:{x['version']}"
                         for x in v]),
        row("requests", *[_fmt(x["requests"]) for x in v]),
        row("errors", *[errors(x) for x in v]),
        row("latency p50/p95/p99", *[latency(x) for x in v]),
        row("labelled", *[_fmt(x["labelled"]) for x in v]),
        row(metric, *[_fmt(x["metric"]) for x in v]),
        row("  95% interval", *[_interval(x["metric_ci95"]) for x in v]),
    ]
    if any("fallbacks" in x for x in v[1:]):
        lines.append(row("answered by champion", "", *[
            f"{x.get('fallbacks', 0):,} (fallbacks)" for x in v[1:]]))
    if any(x.get("forced") for x in v):
        lines.append(row("forced (not analysed)", *[_fmt(x.get("forced", 0)) for x in v]))
    calls = [x.get("shadow_calls") or {} for x in v[1:]]
    if any(calls):
        lines.append(row("shadow calls", "", *[f"{c.get('done', 0):,} done, "
                                                 f"{c.get('dropped', 0):,} dropped"
                                                 for c in calls]))
        lines.append(row("", "", *[f"{c.get('failed', 0):,} failed, "
                                     f"{c.get('timed_out', 0):,} timed out" for c in calls]))
    names = list(dict.fromkeys(k for x in v for k in x["prediction_distribution"]))
    for i, name in enumerate(names[:8]):
        lines.append(row("predictions" if i == 0 else "", *[
            f"{name[:14]} {_share(x['prediction_distribution'].get(name), name)}" for x in v]))
    if len(names) > 8:
        lines.append(row("", f"(+{len(names) - 8} more)"))
    return lines


def _share(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    # Regression summaries (mean, p50, ...) are values, class shares are percentages.
    if name in ("mean", "std", "p5", "p50", "p95"):
        return f"{value:.4g}"
    return f"{value * 100:.1f}%"


def _comparison(c: Mapping[str, Any], name: str = "challenger") -> list[str]:
    title = "COMPARISON" if name == "challenger" else f"COMPARISON {name}"
    lines = [
        f"{title}  {c['metric']}, {c['test']} (alpha {c['alpha']:g})",
        f"  difference ({name} - champion)  {_fmt_signed(c['difference'])}"
        f"  95% {_interval(c['difference_ci95'], signed=True)}",
        f"  always-valid {_interval(c.get('difference_cs'), signed=True)}"
        f"   sequential p-value {_p(c['sequential_p_value'])}",
        f"  significant: {_fmt(c['significant'])}   fixed-horizon p-value {_p(c['p_value'])}"
        + ("" if "adjusted_p_value" not in c else f", Holm {_p(c['adjusted_p_value'])}"),
        f"  samples needed per variant: {_fmt(c['samples_needed_per_variant'])}"
        f" (min effect {c['min_effect']:g}, tau2 {c['tau2']:.3g})",
    ]
    srm = c.get("srm")
    if srm:
        lines += _srm(srm)
    paired = c.get("paired")
    if paired:
        agreement = "-" if paired["agreement"] is None else f"{paired['agreement'] * 100:.1f}%"
        lines.append(f"  paired: {paired['n']:,} requests, agreement {agreement}")
        if paired["mcnemar_p_value"] is not None:
            lines.append(f"    only champion right {paired['champion_only_correct']:,}, "
                         f"only challenger right {paired['challenger_only_correct']:,}, "
                         f"McNemar p {_p(paired['mcnemar_p_value'])}")
        if paired["wilcoxon_p_value"] is not None:
            lines.append(f"    Wilcoxon signed-rank p {_p(paired['wilcoxon_p_value'])}")
    return lines


def _srm(srm: Mapping[str, Any]) -> list[str]:
    """The sample ratio line: the challenger's share, or with several every arm's."""
    verdict = "MISMATCH" if srm["mismatch"] else "ok"
    expected, observed = srm["expected_percent"], srm["observed_percent"]
    if isinstance(expected, Mapping):
        seen = observed or {}
        shares = ", ".join(f"{name} {share:.2f}%/"
                           + ("-" if name not in seen else f"{seen[name]:.2f}%")
                           for name, share in expected.items())
        return [f"SAMPLE RATIO ({srm['unit']}, expected/observed): p {_p(srm['p_value'])}: "
                f"{verdict}", *_wrap(shares)]
    seen_share = "-" if observed is None else f"{observed:.2f}%"
    return [f"  sample ratio ({srm['unit']}): expected {expected:.2f}%"
            f", observed {seen_share}, p {_p(srm['p_value'])}: {verdict}"]


def _guardrails(guardrails: Mapping[str, Any], whose: str = "the challenger's") -> list[str]:
    lines = [f"GUARDRAILS  (always-valid one-sided tests on {whose} requests)"]
    for name, g in guardrails.items():
        rate = g.get("estimate", g.get("share_slower"))
        seen = "-" if rate is None else f"{rate * 100:.2f}%"
        what = "error rate" if name == "error_rate" else (
            f"share slower than {g.get('limit_ms'):g} ms")
        lines.append(f"  {what} {seen} (limit {g['limit'] * 100:g}%, at least "
                     f"{g['bound'] * 100:.2f}%): {g['state']}")
    return lines


def _fmt_signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _drift(d: Mapping[str, Any]) -> list[str]:
    lines = [f"DRIFT  latest {d['rows']:,} requests against {d['reference']}'s training data",
             f"  {'feature':<26}{'PSI':>9}{'noise':>9}{'adj. p':>12}  status"]

    def line(name: str, f: Mapping[str, Any]) -> str:
        psi = "-" if f.get("psi") is None else f"{f['psi']:.4f}"
        noise = "-" if f.get("expected_psi") is None else f"{f['expected_psi']:.4f}"
        return (f"  {name[:26]:<26}{psi:>9}{noise:>9}{_p(f.get('adjusted_p_value')):>12}  "
                f"{f.get('status') or '-'}")

    lines += [line(name, f) for name, f in d["features"].items()]
    for role, f in (d.get("predictions") or {}).items():
        if f.get("psi") is not None:
            lines.append(line(f"predictions ({role})", f))
    return lines


def _monitoring(rolling: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
    """Each variant's quality over its latest labels and its outputs over its latest answers."""
    quality, answers = rolling.get("variants") or {}, outputs.get("variants") or {}
    classifier = any("accuracy" in q for q in quality.values())
    columns = ("accuracy", "recorded", "macro F1") if classifier else ("MAE", "RMSE", "bias")
    lines = [f"MONITORING  latest {rolling.get('window', 0):,} labels and predictions per "
             "variant",
             f"  {'variant':<11}{'labelled':>9}" + "".join(f"{c:>10}" for c in columns)
             + f"  {'top output':<17}outputs"]
    for role in dict.fromkeys([*quality, *answers]):
        q, o = quality.get(role) or {}, answers.get(role) or {}
        if classifier:
            values = (q.get("accuracy"), (q.get("recorded") or {}).get("accuracy"),
                      q.get("macro_f1"))
            top = "-" if not o.get("top_class") else \
                f"{str(o['top_class'])[:10]} {100 * o['top_share']:.1f} %"
        else:
            values = (q.get("mae"), q.get("rmse"), q.get("mean_error"))
            top = "-" if o.get("mean") is None else f"mean {o['mean']:.4g}"
        cells = "".join("         -" if not isinstance(v, int | float) else f"{v:>10.4f}"
                        for v in values)
        flag = "CONSTANT" if o.get("constant_output") else ("mixed" if o.get("predictions")
                                                            else "-")
        lines.append(f"  {role:<11}{q.get('labelled', 0):>9,}{cells}  {top:<17}{flag}")
    return lines


def _segments(segments: Mapping[str, Mapping[str, Any]], metric: str) -> list[str]:
    """Per key (and challenger, when there are several), each value's labelled outcomes and
    metric per variant, the difference and the Holm-adjusted p-value."""
    lines = [f"SEGMENTS  {metric} per value; p-values Holm-adjusted across each key's values"]
    for key, values in segments.items():
        first: Mapping[str, Any] = next(iter(values.values()), {})
        challengers = list(first.get("comparisons") or {}) or ["challenger"]
        for challenger in challengers:
            title = key if "comparison" in first else f"{key} ({challenger})"
            lines.append(f"  {title[:16]:<16}{'champion':>16}{challenger[:16]:>18}"
                         f"{'difference':>12}{'adj. p':>10}")
            for value, segment in values.items():
                cells = ""
                for role in ("champion", challenger):
                    arm = segment["variants"].get(role)
                    cells += " " * 18 if arm is None else \
                        f"{arm['labelled']:>10,}{_fmt(arm['metric']):>8}"
                comparison = (segment.get("comparison") if "comparison" in segment
                              else segment["comparisons"].get(challenger)) or {}
                lines.append(f"  {value[:16]:<16}{cells[2:]}"
                             f"{_fmt_signed(comparison.get('difference')):>12}"
                             f"{_p(comparison.get('adjusted_p_value')):>10}".rstrip())
    return lines


def render_report(report: Mapping[str, Any]) -> str:
    """The report as lines of at most 80 characters."""
    phase = report.get("phase") or {}
    revisions = phase.get("revisions")
    head = (f"{report['experiment']}  mode {report['mode']}  revision "
            f"{_fmt(report['config_revision'])}  unit {report.get('analysis_unit', 'request')}")
    lines = [head]
    if revisions:
        lines.append(f"phase: revisions {revisions[0]}-{revisions[-1]} since {phase['since']} "
                     "(earlier splits are left out)")
    metric = report.get("metric") or (report.get("comparison") or {}).get("metric", "metric")
    lines += ["", *_variants(report, metric)]
    if report.get("comparison"):
        lines += ["", *_comparison(report["comparison"])]
    for name, comparison in (report.get("comparisons") or {}).items():
        lines += ["", *_comparison(comparison, name)]
    if report.get("srm"):
        lines += ["", *_srm(report["srm"])]
    if report.get("guardrails") and report.get("challengers"):
        for name in report["challengers"]:
            if report["guardrails"].get(name):
                lines += ["", *_guardrails(report["guardrails"][name], f"{name}'s")]
    elif report.get("guardrails"):
        lines += ["", *_guardrails(report["guardrails"])]
    if report.get("rolling") and report.get("outputs"):
        lines += ["", *_monitoring(report["rolling"], report["outputs"])]
    if (report.get("drift") or {}).get("features"):
        lines += ["", *_drift(report["drift"])]
    if report.get("segments"):
        lines += ["", *_segments(report["segments"], metric)]
    if report.get("unknown_feedback_ids"):
        lines += ["", f"feedback for {report['unknown_feedback_ids']:,} unknown request ids"]
    decision = report["decision"]
    named = f" {decision['challenger']}" if decision.get("challenger") else ""
    lines += ["", f"DECISION  {decision['action'].upper()}{named}"]
    for reason in decision["reasons"]:
        lines += _wrap(reason)
    return "\n".join(line[:WIDTH] for line in lines)
