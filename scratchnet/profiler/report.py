"""What a profile shows: rows of op calls against the machine's roofs, a text table, a Chrome trace.

The roofline, in two lines. An op that does ``F`` FLOPs while moving ``B``
bytes has arithmetic intensity ``I = F / B``. The machine balance
``peak_flops / peak_bandwidth`` is the intensity at which the two roofs
meet: below it the op cannot go faster than memory feeds it (memory-bound,
measured against the copy rate, in GB/s); above it, than the arithmetic
units (compute-bound, against the sgemm rate, in GFLOP/s).

A row can read above 100% of its roof, and the table's legend says why:
a compute-bound op that does fewer operations than its cost formula counts
(Winograd's convolution), a memory-bound op whose bytes stay in the
caches, which are faster than the main-memory copy that measured the roof,
or roofs measured while the machine was busier than when the op ran.
"""
from __future__ import annotations

import json
import os

SORT_KEYS = {
    "total": lambda r: -r["total_ms"],
    "calls": lambda r: -r["calls"],
    "mean": lambda r: -r["mean_ms"],
    "name": lambda r: r["name"],
}
GROUPS = ("op", "layer")


def roofline(flops, nbytes, seconds, peaks):
    """``(gflops, gbs, bound, percent_of_peak)`` of work done in ``seconds`` against ``peaks``.

    ``bound`` is ``"compute"`` when the intensity ``flops / nbytes`` reaches
    the machine balance (the percentage is then of the sgemm rate),
    ``"memory"`` below it (of the copy rate), ``None`` without any work.
    """
    if seconds <= 0 or (not flops and not nbytes):
        return None, None, None, None
    gflops, gbs = flops / seconds / 1e9, nbytes / seconds / 1e9
    balance = peaks["sgemm_gflops"] / peaks["copy_gbs"]
    if nbytes == 0 or flops / nbytes >= balance:
        return gflops, gbs, "compute", 100.0 * gflops / peaks["sgemm_gflops"]
    return gflops, gbs, "memory", 100.0 * gbs / peaks["copy_gbs"]


def row_key(span, group_by):
    """The row a span adds to: ``("conv2d", "backward")`` by op, ``("layer1-conv1", "backward")`` by layer."""
    if span.kind == "region":
        return span.info, "region"
    if group_by == "layer" and span.info.layer:
        return span.info.layer, span.kind
    return span.info.name, span.kind


def rows(spans, wall_s, peaks, sort_by="total", group_by="op"):
    """One dict per (name, forward/backward/region), sorted, then the ``other`` row: see :attr:`profile.rows`."""
    if sort_by not in SORT_KEYS:
        raise ValueError(f"profile: sort_by must be one of {sorted(SORT_KEYS)}, got {sort_by!r}")
    if group_by not in GROUPS:
        raise ValueError(f"profile: group_by must be one of {list(GROUPS)}, got {group_by!r}")
    groups = {}
    for span in spans:
        if span.kind not in ("forward", "backward", "region"):
            continue
        key = row_key(span, group_by)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"calls": 0, "seconds": 0.0, "flops": 0.0, "bytes": 0.0, "ops": set(), "layers": set(),
                               "shapes": [], "dtypes": set(), "backends": set()}
        g["calls"] += 1
        g["seconds"] += span.exclusive_s
        if span.kind != "region":
            info = span.info
            backward = span.kind == "backward"
            g["flops"] += info.cost.backward_flops if backward else info.cost.flops
            g["bytes"] += info.cost.backward_bytes if backward else info.cost.bytes
            g["ops"].add(info.name)
            g["layers"].add(info.layer)
            g["dtypes"].add(info.dtype)
            g["backends"].add(info.backend)
            if info.shapes not in g["shapes"]:
                g["shapes"].append(info.shapes)
    out = []
    for (name, kind), g in groups.items():
        gflops, gbs, bound, pct = roofline(g["flops"], g["bytes"], g["seconds"], peaks)
        out.append({
            "name": name if kind == "region" else f"{name} {kind}", "kind": kind,
            "op": ",".join(sorted(g["ops"])) or None, "layer": ",".join(sorted(x for x in g["layers"] if x)) or None,
            "calls": g["calls"], "total_ms": 1e3 * g["seconds"], "mean_ms": 1e3 * g["seconds"] / g["calls"],
            "percent": 100.0 * g["seconds"] / wall_s if wall_s > 0 else 0.0,
            "flops": g["flops"], "bytes": g["bytes"], "gflops": gflops, "gbs": gbs, "bound": bound,
            "percent_of_peak": pct, "dtype": ",".join(sorted(x for x in g["dtypes"] if x)) or None,
            "backend": ",".join(sorted(g["backends"])) or None, "shapes": g["shapes"],
        })
    out.sort(key=lambda r: (SORT_KEYS[sort_by](r), r["name"]))
    covered = sum(r["total_ms"] for r in out) / 1e3
    other = max(0.0, wall_s - covered)
    out.append({"name": "other", "kind": "other", "op": None, "layer": None, "calls": 0, "total_ms": 1e3 * other,
                "mean_ms": None, "percent": 100.0 * other / wall_s if wall_s > 0 else 0.0, "flops": 0.0, "bytes": 0.0,
                "gflops": None, "gbs": None, "bound": None, "percent_of_peak": None, "dtype": None, "backend": None,
                "shapes": []})
    return out


def _num(value, spec):
    return "-" if value is None else format(value, spec)


#: Why a row can read above 100% of its roof: ``(bound, op or None)`` -> the reason.
OVER_THE_ROOF = {
    ("compute", "conv2d"): "computed with fewer operations than its cost formula counts (Winograd's convolution "
                           "does 6.25 times fewer multiplications than the direct sum the formula counts)",
    ("compute", None): "ran faster than the sgemm roof, which was measured while the machine was busier; measure "
                       "the roofs again on a quiet machine (sn.profile.calibrate(force=True))",
    ("memory", None): "its bytes stayed in the caches, which are faster than the main-memory copy (64 MiB) that "
                      "measured the copy roof",
}


def over_the_roof(row):
    """Why ``row`` (a :func:`rows` dict) reads above 100% of its roof, or None when it does not."""
    if not (row["percent_of_peak"] or 0) > 100:
        return None
    op = "conv2d" if row["bound"] == "compute" and "conv2d" in (row.get("op") or "").split(",") else None
    return OVER_THE_ROOF[row["bound"], op]


def legend(rows_):
    """The lines under the table: what ``% peak`` is of, and why each row above 100% is (marked ``*``)."""
    lines = ["% peak: a compute-bound row's GFLOP/s against the sgemm roof, a memory-bound row's GB/s against "
             "the copy roof."]
    reasons = {}
    for r in rows_:
        reason = over_the_roof(r)
        if reason:
            reasons.setdefault(reason, []).append(r["name"])
    lines += [f"* over 100%: {', '.join(names)}: {reason}." for reason, names in reasons.items()]
    return lines


def table(rows_, wall_s, peaks, title):
    """The rows as aligned text, with the machine's roofs above and the wall time and a legend below."""
    headers = ["name", "calls", "total ms", "mean ms", "% wall", "GFLOP/s", "GB/s", "bound", "% peak"]
    cells = [[r["name"], str(r["calls"]) if r["kind"] != "other" else "", _num(r["total_ms"], ".2f"),
              _num(r["mean_ms"], ".3f"), _num(r["percent"], ".1f"), _num(r["gflops"], ".1f"), _num(r["gbs"], ".1f"),
              r["bound"] or "-", _num(r["percent_of_peak"], ".1f") + ("*" if over_the_roof(r) else "")]
             for r in rows_]
    total = ["total (wall)", str(sum(r["calls"] for r in rows_)), f"{1e3 * wall_s:.2f}", "", "100.0", "", "", "", ""]
    widths = [max(len(c[i]) for c in [headers, *cells, total]) for i in range(len(headers))]

    def line(c):
        return "  ".join(c[0].ljust(widths[0]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(c))).rstrip()

    rule = "-" * len(line(headers))
    roofs = (f"roofs: sgemm {peaks['sgemm_gflops']:.1f} GFLOP/s, copy {peaks['copy_gbs']:.1f} GB/s "
             f"(balance {peaks['sgemm_gflops'] / peaks['copy_gbs']:.1f} FLOP/byte)"
             + (f"; {peaks['key']}" if peaks.get("key") else ""))
    return "\n".join([title, roofs, rule, line(headers), rule, *(line(c) for c in cells), rule, line(total),
                      *legend(rows_)])


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return repr(value)


def trace_events(spans, pid, tid, backend):
    """Chrome-trace complete events (``"ph": "X"``, times in microseconds), one per span."""
    events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": f"scratchnet ({backend})"}}]
    for span in spans:
        event = {"name": span.info if isinstance(span.info, str) else f"{span.info.name} {span.kind}",
                 "cat": span.kind, "ph": "X", "ts": 1e6 * span.begin, "dur": 1e6 * (span.end - span.begin),
                 "pid": pid, "tid": tid, "args": {}}
        if span.kind in ("forward", "backward"):
            info = span.info
            backward = span.kind == "backward"
            event["args"] = {
                "op": info.name, "backend": info.backend, "dtype": info.dtype, "layer": info.layer, "scope": info.scope,
                "shapes": {k: list(v) for k, v in info.shapes}, "params": {k: _jsonable(v) for k, v in info.params},
                "flops": info.cost.backward_flops if backward else info.cost.flops,
                "bytes": info.cost.backward_bytes if backward else info.cost.bytes,
            }
        events.append(event)
    return events


def write_trace(path, events):
    """Write ``{"traceEvents": events}`` to ``path`` (Perfetto and chrome://tracing open it)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    return path
