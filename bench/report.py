"""Turn a result dict into a console summary and the markdown table for README.md."""

from __future__ import annotations


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fanout_rows(result: dict) -> list[list]:
    rows = []
    for server, scen in result["results"].items():
        fan = scen.get("fanout")
        if not fan:
            continue
        for n, r in fan["sizes"].items():
            lat = r["latency_ms"]
            rows.append([server, r["members"], _fmt(r["offered_deliveries_per_s"], 0),
                         _fmt(r["deliveries_per_s"], 0), f"{100 * r['loss']:.2f} %",
                         _fmt(lat["p50"], 2), _fmt(lat["p99"], 2), _fmt(lat["max"], 1),
                         _fmt(r["server_cpu_us_per_delivery"], 2), _fmt(r["server_cpu_pct"], 0),
                         _fmt(r["generator_cpu_us_per_delivery"], 2), _fmt(r["generator_cpu_pct"], 0)])
    return rows


def ratios(result: dict) -> list[str]:
    """The issue's targets, as measured ratios (no verdicts on noisy machines, just numbers)."""
    res = result["results"]
    lines = []

    def cpu(server: str, n: str | None = None):
        sizes = res.get(server, {}).get("fanout", {}).get("sizes", {})
        if not sizes:
            return None, None
        key = n if n in sizes else sorted(sizes, key=int)[-1 if n is None else 0]
        if n is not None and n not in sizes:
            # nearest size to the one asked for
            key = min(sizes, key=lambda k: abs(int(k) - int(n)))
        return sizes[key]["server_cpu_us_per_delivery"], key

    for rc in ("roomcast-ws", "roomcast-tcp"):
        mine, n = cpu(rc, "1000")
        if mine is None:
            continue
        for peer in ("actionhero", "websockets", "socketio"):
            theirs, pn = cpu(peer, n)
            if theirs and pn == n:
                lines.append(f"server CPU per delivery, N={n}: {rc} {mine:.2f} us / {peer} {theirs:.2f} us "
                             f"= {mine / theirs:.2f}")
        sizes = res[rc]["fanout"]["sizes"]
        vals = [v["server_cpu_us_per_delivery"] for v in sizes.values() if v["server_cpu_us_per_delivery"]]
        if len(vals) > 1:
            lines.append(f"{rc} per-delivery CPU across N={','.join(sizes)}: max/min = {max(vals) / min(vals):.2f}")
    for rc in ("roomcast-ws", "roomcast-tcp"):
        ramp = res.get(rc, {}).get("ramp")
        if not ramp:
            continue
        mine = ramp.get("max_sustainable_deliveries_per_s")
        for peer in ("actionhero", "socketio", "websockets"):
            theirs = res.get(peer, {}).get("ramp", {}).get("max_sustainable_deliveries_per_s")
            if mine and theirs:
                lines.append(f"highest sustainable deliveries/s: {rc} {mine:,} / {peer} {theirs:,} = {mine / theirs:.2f}x")
        q = ramp.get("quarter_rate")
        if q:
            lines.append(f"{rc} p99 at a quarter of its highest rate ({q['offered_deliveries_per_s']:,}/s): "
                         f"{q['latency_ms']['p99']} ms")
    return lines


def markdown(result: dict) -> str:
    m = result["machine"]
    parts = [f"Run {result['started']}: `{result['command']}` — {m['nproc']} cores ({m['cpu_model']}), "
             f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}.", ""]
    parts.append("Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v) + ".")
    parts.append("")
    rows = fanout_rows(result)
    if rows:
        parts += ["**fanout** (one room, {} senders, ~{}-byte messages, fixed offered rate)".format(
            result["settings"]["senders"], result["settings"]["message_size"]), "",
            _table(["server", "members", "offered deliv/s", "deliv/s", "loss", "p50 ms", "p99 ms", "max ms",
                    "server µs/deliv", "server CPU %", "gen µs/deliv", "gen CPU %"], rows), ""]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("ramp")
        if r:
            q = r.get("quarter_rate") or {}
            rows.append([server, r["members"], _fmt(r["max_sustainable_deliveries_per_s"], 0),
                         _fmt(r.get("server_cpu_pct_at_max"), 0), _fmt(r.get("generator_cpu_pct_at_max"), 0),
                         r.get("stop_reason", ""), _fmt(q.get("latency_ms", {}).get("p99"), 2)])
    if rows:
        parts += ["**ramp** (highest offered rate with p99 ≤ 50 ms and loss ≤ 0.1 %)", "",
                  _table(["server", "members", "max deliv/s", "server CPU %", "gen CPU %", "stopped by",
                          "p99 ms at ¼ rate"], rows), ""]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("connections")
        if r:
            rows.append([server, f"{r['joined']:,}/{r['connections']:,}", _fmt(r["connect_join_per_s"], 0),
                         _fmt(r["server_cpu_us_per_connect_join"], 0), _fmt(r["rss_per_connection_kib"], 2),
                         _fmt(r["rss_after_mb"], 1)])
    if rows:
        parts += ["**connections** (idle, each joined to the room)", "",
                  _table(["server", "joined", "connect+join/s", "server µs/join", "RSS KiB/conn",
                          "RSS MiB total"], rows), ""]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("cluster")
        if r and "skipped" not in r:
            lat = r["latency_ms"]
            rows.append([server, r["members"], _fmt(r["deliveries_per_s"], 0), f"{100 * r['loss']:.2f} %",
                         _fmt(lat["p50"], 2), _fmt(lat["p99"], 2), _fmt(r["server_cpu_us_per_delivery"], 2),
                         _fmt(r.get("redis_cpu_us_per_delivery"), 3)])
    if rows:
        parts += ["**cluster** (two nodes on one Redis, members split, senders on both)", "",
                  _table(["server", "members", "deliv/s", "loss", "p50 ms", "p99 ms",
                          "server µs/deliv (both nodes)", "redis µs/deliv"], rows), ""]
    lines = ratios(result)
    if lines:
        parts += ["**ratios**", ""] + [f"- {line}" for line in lines] + [""]
    for key in ("skipped", "errors"):
        if result.get(key):
            parts += [f"**{key}**", ""] + [f"- {k}: {v.splitlines()[0] if v else v}" for k, v in result[key].items()] + [""]
    return "\n".join(parts)


def print_summary(result: dict, log) -> None:
    log("")
    log(markdown(result))
