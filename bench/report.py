"""Turn a result dict into a console summary and the markdown table for README.md."""

from __future__ import annotations


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "-"
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
        for scenario in ("fanout", "fanout-history"):
            fan = scen.get(scenario)
            if fan:
                label = server
                if scenario == "fanout-history":
                    label = f"{server} (history_size {fan.get('history_size')})"
                rows += _fanout_rows(label, fan)
    return rows


def _fanout_rows(label: str, fan: dict) -> list[list]:
    rows = []
    for r in fan["sizes"].values():
        lat = r["latency_ms"]
        rows.append(
            [
                label,
                r["members"],
                _fmt(r["offered_deliveries_per_s"], 0),
                _fmt(r["deliveries_per_s"], 0),
                f"{100 * r['loss']:.2f} %",
                _fmt(lat["p50"], 2),
                _fmt(lat["p99"], 2),
                _fmt(lat["max"], 1),
                _fmt(r["server_cpu_us_per_delivery"], 2),
                _fmt(r["server_cpu_pct"], 0),
                _fmt(r["generator_cpu_us_per_delivery"], 2),
                _fmt(r["generator_cpu_pct"], 0),
                _fmt(r.get("other_cpu_pct"), 0),
            ]
        )
    return rows


def _fanout_cpu(res: dict, server: str, n: str) -> float | None:
    sizes = res.get(server, {}).get("fanout", {}).get("sizes", {})
    return sizes.get(n, {}).get("server_cpu_us_per_delivery")


def lossless_max(ramp: dict) -> int | None:
    """Highest delivered rate of any ramp step with loss <= 0.1 %, whatever its latency."""
    rates = [st["deliveries_per_s"] for st in ramp.get("steps", []) if st["loss"] <= 0.001]
    return max(rates) if rates else None


def ratios(result: dict) -> list[str]:
    """The issue's targets, as measured ratios (no verdicts on noisy machines, just numbers)."""
    res = result["results"]
    lines: list[str] = []
    for rc in ("roomcast-ws", "roomcast-tcp", "roomcast-asgi"):
        if rc not in res:
            continue
        sizes = res[rc].get("fanout", {}).get("sizes", {})
        n = "1000" if "1000" in sizes else (sorted(sizes, key=int)[-1] if sizes else None)
        mine = _fanout_cpu(res, rc, n) if n else None
        # the ASGI path is also compared with the node's own WebSocket server
        own = ("roomcast-ws",) if rc == "roomcast-asgi" else ()
        if mine:
            for peer in ("actionhero", "websockets", "socketio", "floor-tcp", *own):
                theirs = _fanout_cpu(res, peer, n)
                if theirs:
                    lines.append(
                        f"server CPU per delivery, N={n}: {rc} {mine:.2f} µs / {peer} "
                        f"{theirs:.2f} µs = {mine / theirs:.2f}"
                    )
            vals = [v["server_cpu_us_per_delivery"] for v in sizes.values()]
            vals = [v for v in vals if v]
            if len(vals) > 1:
                lines.append(
                    f"{rc} per-delivery CPU across N={','.join(sizes)}: "
                    f"max/min = {max(vals) / min(vals):.2f}"
                )
        ramp = res[rc].get("ramp")
        if ramp:
            mine_r = ramp.get("max_sustainable_deliveries_per_s")
            for peer in ("actionhero", "socketio", "websockets", "floor-tcp"):
                pr = res.get(peer, {}).get("ramp")
                if not pr or not mine_r:
                    continue
                theirs_r = pr.get("max_sustainable_deliveries_per_s")
                if theirs_r:
                    lines.append(
                        f"highest sustainable deliveries/s: {rc} {mine_r:,} / {peer} "
                        f"{theirs_r:,} = {mine_r / theirs_r:.2f}x"
                    )
                else:
                    tried = min(st["offered_deliveries_per_s"] for st in pr["steps"])
                    lines.append(
                        f"highest sustainable deliveries/s: {rc} {mine_r:,}; {peer} sustained "
                        f"none (p99 > 50 ms even at {tried:,}/s); lossless maxima "
                        f"{lossless_max(ramp):,} vs {lossless_max(pr):,}"
                    )
            if ramp.get("stop_reason") == "generator CPU saturated":
                lines.append(
                    f"{rc} ramp stopped by the generator's core, with the server at "
                    f"{ramp.get('server_cpu_pct_at_max')} % of its core"
                )
            q = ramp.get("quarter_rate")
            if q:
                lines.append(
                    f"{rc} p99 at a quarter of its highest rate "
                    f"({q['offered_deliveries_per_s']:,}/s): {q['latency_ms']['p99']} ms"
                )
        conn = res[rc].get("connections")
        if conn:
            lines.append(
                f"{rc} idle connections: {conn['rss_per_connection_kib']} KiB RSS each, "
                f"{conn['connect_join_per_s']:,} connect+join/s"
            )
            us = conn.get("server_cpu_us_per_connect_join")
            gen = conn.get("generator_cpu_pct_while_connecting") or 0
            if us and gen > 90:
                lines.append(
                    f"{rc} connect+join was bound by the generator's core ({gen} %), with the "
                    f"server at {conn.get('server_cpu_pct_while_connecting')} % of its core; "
                    f"at {us} µs/join one server core does {1e6 / us:,.0f}/s"
                )
        st = res[rc].get("stall")
        if st:
            lines.append(
                f"{rc} one stalled member of {st['members']}: others' p99 "
                f"{st['before']['latency_ms']['p99']} → {st['during']['latency_ms']['p99']} ms "
                f"(x{st['p99_ratio']}), RSS +{st['rss_growth_mb']} MiB, stalled client "
                f"{'disconnected' if st['stalled_client_disconnected'] else 'kept'}"
            )
    return lines


def markdown(result: dict) -> str:
    m = result["machine"]
    parts = [
        f"Run {result['started']}: `{result['command']}` — {m['nproc']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; load average "
        f"{result.get('loadavg_start', ['?'])[0]} at start, "
        f"{result.get('loadavg_end', ['?'])[0]} at end.",
        "",
    ]
    parts.append(
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v) + "."
    )
    parts.append("")
    rows = fanout_rows(result)
    if rows:
        parts += [
            "**fanout** (one room, {} senders, ~{}-byte messages, fixed offered rate)".format(
                result["settings"]["senders"], result["settings"]["message_size"]
            ),
            "",
            _table(
                [
                    "server",
                    "members",
                    "offered deliv/s",
                    "deliv/s",
                    "loss",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "server µs/deliv",
                    "server CPU %",
                    "gen µs/deliv",
                    "gen CPU %",
                    "other CPU %",
                ],
                rows,
            ),
            "",
        ]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("ramp")
        if r:
            q = r.get("quarter_rate") or {}
            rows.append(
                [
                    server,
                    r["members"],
                    _fmt(r["max_sustainable_deliveries_per_s"], 0),
                    _fmt(r.get("server_cpu_pct_at_max"), 0),
                    _fmt(r.get("generator_cpu_pct_at_max"), 0),
                    _fmt(lossless_max(r), 0),
                    r.get("stop_reason", ""),
                    _fmt(q.get("latency_ms", {}).get("p99"), 2),
                ]
            )
    if rows:
        parts += [
            "**ramp** (highest offered rate with p99 ≤ 50 ms and loss ≤ 0.1 %)",
            "",
            _table(
                [
                    "server",
                    "members",
                    "max deliv/s",
                    "server CPU %",
                    "gen CPU %",
                    "max lossless deliv/s (any p99)",
                    "stopped by",
                    "p99 ms at ¼ rate",
                ],
                rows,
            ),
            "",
        ]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("connections")
        if r:
            rows.append(
                [
                    server,
                    f"{r['joined']:,}/{r['connections']:,}",
                    _fmt(r["connect_join_per_s"], 0),
                    _fmt(r.get("server_cpu_pct_while_connecting"), 0),
                    _fmt(r.get("generator_cpu_pct_while_connecting"), 0),
                    _fmt(1e6 / r["server_cpu_us_per_connect_join"], 0)
                    if r.get("server_cpu_us_per_connect_join")
                    else "-",
                    _fmt(r["server_cpu_us_per_connect_join"], 0),
                    _fmt(r["rss_per_connection_kib"], 2),
                    _fmt(r["rss_after_mb"], 1),
                ]
            )
    if rows:
        parts += [
            "**connections** (idle, each joined to the room)",
            "",
            _table(
                [
                    "server",
                    "joined",
                    "connect+join/s",
                    "server CPU %",
                    "gen CPU %",
                    "server capacity/s",
                    "server µs/join",
                    "RSS KiB/conn",
                    "RSS MiB total",
                ],
                rows,
            ),
            "",
        ]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("stall")
        if r:
            rows.append(
                [
                    server,
                    r["members"],
                    _fmt(r["before"]["latency_ms"]["p99"], 2),
                    _fmt(r["during"]["latency_ms"]["p99"], 2),
                    _fmt(r["p99_ratio"], 2),
                    f"{100 * (r['during'].get('loss_among_others') or 0):.2f} %",
                    _fmt(r["rss_growth_mb"], 1),
                    _fmt(r["bytes_owed_to_stalled_client_mb"], 1),
                    "yes" if r["stalled_client_disconnected"] else "no",
                ]
            )
    if rows:
        parts += [
            "**stall** (one member stops reading; 16 KiB messages; roomcast's send limit "
            "lowered to 256 KiB for this run)",
            "",
            _table(
                [
                    "server",
                    "members",
                    "others' p99 before ms",
                    "during ms",
                    "ratio",
                    "loss among others",
                    "RSS growth MiB",
                    "MiB owed to the stalled one",
                    "stalled one dropped",
                ],
                rows,
            ),
            "",
        ]
    rows = []
    for server, scen in result["results"].items():
        r = scen.get("cluster")
        if r and "skipped" not in r:
            lat = r["latency_ms"]
            rows.append(
                [
                    server,
                    r["members"],
                    _fmt(r["deliveries_per_s"], 0),
                    f"{100 * r['loss']:.2f} %",
                    _fmt(lat["p50"], 2),
                    _fmt(lat["p99"], 2),
                    _fmt(r["server_cpu_us_per_delivery"], 2),
                    _fmt(r.get("redis_cpu_us_per_delivery"), 3),
                ]
            )
    if rows:
        parts += [
            "**cluster** (two nodes on one Redis, members split, senders on both)",
            "",
            _table(
                [
                    "server",
                    "members",
                    "deliv/s",
                    "loss",
                    "p50 ms",
                    "p99 ms",
                    "server µs/deliv (both nodes)",
                    "redis µs/deliv",
                ],
                rows,
            ),
            "",
        ]
    parts += scaling_markdown(result)
    parts += rooms_markdown(result)
    parts += churn_markdown(result)
    lines = ratios(result)
    if lines:
        parts += ["**ratios**", ""] + [f"- {line}" for line in lines] + [""]
    for key in ("skipped", "errors"):
        if result.get(key):
            parts += (
                [f"**{key}**", ""]
                + [f"- {k}: {v.splitlines()[0] if v else v}" for k, v in result[key].items()]
                + [""]
            )
    return "\n".join(parts)


def _scaling_runs(result: dict) -> list[tuple[str, dict]]:
    return [
        (server, run)
        for server, scen in result["results"].items()
        for run in scen.get("cluster-scaling", {}).get("runs", [])
        if "skipped" not in run
    ]


def scaling_markdown(result: dict) -> list[str]:
    """The cluster-scaling table, and its two targets as ratios."""
    runs = _scaling_runs(result)
    if not runs:
        return []
    rows = [
        [
            server,
            run["redis"],
            run["nodes"],
            run["member_nodes"],
            run["members"],
            _fmt(run["deliveries_per_s"], 0),
            f"{100 * run['loss']:.2f} %",
            _fmt(run["latency_ms"]["p50"], 2),
            _fmt(run["latency_ms"]["p99"], 2),
            _fmt(run["server_cpu_us_per_delivery"], 2),
            _fmt(run.get("redis_cpu_us_per_delivery"), 3),
            _fmt(run.get("redis_cpu_us_per_delivery_above_idle"), 3),
            _fmt(run.get("redis_idle_cpu_pct"), 2),
            _fmt(run.get("redis_output_bytes_per_message"), 0),
            _fmt(run.get("other_cpu_pct"), 0),
        ]
        for server, run in runs
    ]
    parts = [
        "**cluster-scaling** (one room, members split over the nodes that have members, "
        "a sender on each of them; one Redis, or a Redis Cluster of 3 masters + 3 replicas)",
        "",
        _table(
            [
                "server",
                "redis",
                "nodes",
                "nodes with members",
                "members",
                "deliv/s",
                "loss",
                "p50 ms",
                "p99 ms",
                "server µs/deliv (all nodes)",
                "redis µs/deliv (all redis-servers)",
                "redis µs/deliv above idle",
                "redis idle CPU %",
                "redis bytes out per message",
                "other CPU %",
            ],
            rows,
        ),
        "",
    ]
    lines = []
    for server in sorted({server for server, _ in runs}):
        mine = {
            (run["redis"], run["nodes"], run["member_nodes"]): run for s, run in runs if s == server
        }
        one = mine.get(("redis", 1, 1))
        three = mine.get(("redis-cluster", 3, 3))
        if one and three and one["server_cpu_us_per_delivery"]:
            ratio = three["server_cpu_us_per_delivery"] / one["server_cpu_us_per_delivery"]
            lines.append(
                f"{server}: 3 nodes on the Redis Cluster {three['server_cpu_us_per_delivery']:.2f}"
                f" µs / 1 node on one Redis {one['server_cpu_us_per_delivery']:.2f} µs per "
                f"delivery = {ratio:.2f}"
            )
        for redis in ("redis", "redis-cluster"):
            idle = [mine[key] for key in sorted(mine) if key[0] == redis and key[2] == 1]
            if len(idle) > 1:
                shown = ", ".join(
                    f"{run['nodes']} nodes {_fmt(run.get('redis_cpu_us_per_delivery'), 3)}"
                    f" ({_fmt(run.get('redis_cpu_us_per_delivery_above_idle'), 3)} above idle)"
                    for run in idle
                )
                lines.append(
                    f"{server} on {redis}, members on one node only: redis µs/delivery with {shown}"
                )
    if lines:
        parts += [f"- {line}" for line in lines] + [""]
    return parts


def _median(values: list) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def scaling_median_markdown(results: list[dict]) -> str:
    """The cluster-scaling table over several runs: each row's median, and the targets."""
    rows_by_key: dict[tuple, list[dict]] = {}
    for result in results:
        for server, run in _scaling_runs(result):
            key = (server, run["redis"], run["nodes"], run["member_nodes"])
            rows_by_key.setdefault(key, []).append(run)

    def med(runs: list[dict], *path: str) -> float | None:
        values = []
        for run in runs:
            value = run
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            values.append(value)
        return _median(values)

    rows = [
        [
            server,
            redis,
            nodes,
            member_nodes,
            len(runs),
            _fmt(med(runs, "latency_ms", "p50"), 2),
            _fmt(med(runs, "latency_ms", "p99"), 2),
            _fmt(med(runs, "server_cpu_us_per_delivery"), 2),
            _fmt(med(runs, "redis_cpu_us_per_delivery"), 3),
            _fmt(med(runs, "redis_cpu_us_per_delivery_above_idle"), 3),
            _fmt(med(runs, "redis_output_bytes_per_message"), 0),
            _fmt(med(runs, "other_cpu_pct"), 0),
            f"{100 * max(run['loss'] for run in runs):.2f} %",
        ]
        for (server, redis, nodes, member_nodes), runs in rows_by_key.items()
    ]
    parts = [
        f"**cluster-scaling, median of {len(results)} runs** (1,000 members, 20,000 "
        "deliveries/s offered)",
        "",
        _table(
            [
                "server",
                "redis",
                "nodes",
                "nodes with members",
                "runs",
                "p50 ms",
                "p99 ms",
                "server µs/deliv (all nodes)",
                "redis µs/deliv (all redis-servers)",
                "redis µs/deliv above idle",
                "redis bytes out per message",
                "other CPU %",
                "worst loss",
            ],
            rows,
        ),
        "",
    ]
    for server in sorted({key[0] for key in rows_by_key}):
        one = rows_by_key.get((server, "redis", 1, 1))
        three = rows_by_key.get((server, "redis-cluster", 3, 3))
        three_single = rows_by_key.get((server, "redis", 3, 3))
        base = med(one, "server_cpu_us_per_delivery") if one else None
        if base and three:
            cluster3 = med(three, "server_cpu_us_per_delivery") or 0.0
            line = (
                f"- {server}: 3 nodes on the Redis Cluster / 1 node on one Redis = "
                f"{cluster3:.2f} / {base:.2f} µs = {cluster3 / base:.2f}"
            )
            if three_single:
                single3 = med(three_single, "server_cpu_us_per_delivery") or 0.0
                line += f"; 3 nodes on one Redis / 1 node = {single3 / base:.2f}"
            parts.append(line)
    return "\n".join(parts)


def print_summary(result: dict, log) -> None:
    log("")
    log(markdown(result))


def rooms_markdown(result: dict) -> list[str]:
    """The rooms scenario: one row per server, node count and shape."""
    rows = []
    for server, scen in result["results"].items():
        for r in scen.get("rooms", {}).get("runs", []):
            if "skipped" in r:
                continue
            lat = r["latency_ms"]
            rows.append(
                [
                    server,
                    r["nodes"],
                    f"{r['rooms']:,} x {r['members_per_room']}",
                    f"{r['connections']:,}",
                    _fmt(r["offered_msgs_per_s"], 0),
                    f"{100 * r['loss']:.2f} %",
                    _fmt(lat["p50"], 2),
                    _fmt(lat["p99"], 2),
                    _fmt(r["server_cpu_us_per_message"], 1),
                    _fmt(r["server_cpu_us_per_message_above_idle"], 1),
                    _fmt(r["server_cpu_us_per_delivery"], 1),
                    _fmt(r["server_idle_cpu_pct"], 1),
                    _fmt(r.get("redis_cpu_us_per_message"), 1),
                    _fmt(r["server_rss_mb"], 1),
                    _fmt(r.get("other_cpu_pct"), 0),
                ]
            )
    if not rows:
        return []
    return [
        "**rooms** (R rooms x M members, random senders, fixed total message rate)",
        "",
        _table(
            [
                "server",
                "nodes",
                "rooms x members",
                "connections",
                "msgs/s",
                "loss",
                "p50 ms",
                "p99 ms",
                "server µs/msg",
                "µs/msg above idle",
                "server µs/deliv",
                "idle CPU %",
                "redis µs/msg",
                "RSS MB",
                "other CPU %",
            ],
            rows,
        ),
        "",
    ]


def churn_markdown(result: dict) -> list[str]:
    """The churn scenario: every step of every server and node count."""
    rows = []
    summary = []
    for server, scen in result["results"].items():
        for run in scen.get("churn", {}).get("runs", []):
            if "skipped" in run:
                continue
            hset = run.get("hset", {})
            summary.append(
                [
                    server,
                    run["nodes"],
                    _fmt(run.get("sustained_ops_per_s_per_node"), 0),
                    _fmt(hset.get("redis_us_per_hset_pipeline_1"), 2),
                    _fmt(hset.get("redis_us_per_hset_pipeline_16"), 2),
                    _fmt(
                        max(
                            (s.get("subscribed", 0) for s in run.get("subscriptions", [])),
                            default=None,
                        ),
                        0,
                    ),
                    _fmt(_last_count(run.get("subscriptions", [])), 0),
                ]
            )
            for step in run["steps"]:
                top = ", ".join(
                    f"{k} {v:.2f}" for k, v in list(step["redis_calls_per_join"].items())[:6]
                )
                rows.append(
                    [
                        server,
                        run["nodes"],
                        _fmt(step["offered_ops_per_s_per_node"], 0),
                        _fmt(step["ops_per_s_per_node"], 0),
                        _fmt(step["join_ms"]["p50"], 2),
                        _fmt(step["join_ms"]["p99"], 2),
                        _fmt(step["server_cpu_us_per_join"], 0),
                        _fmt(2e6 / step["server_cpu_us_per_join"], 0)
                        if step["server_cpu_us_per_join"]
                        else "-",
                        _fmt(step["server_cpu_pct"], 0),
                        _fmt(step["redis_cpu_us_per_join"], 1),
                        _fmt(step["redis_commands_per_join"], 2),
                        top,
                        _fmt(step["generator_cpu_pct"], 0),
                        _fmt(step["other_cpu_pct"], 0),
                        "yes" if step["ok"] else "no",
                    ]
                )
    if not rows:
        return []
    return [
        "**churn** (join a random room, say once, leave; a join is one such cycle)",
        "",
        _table(
            [
                "server",
                "nodes",
                "offered ops/s/node",
                "done ops/s/node",
                "roomAdd p50 ms",
                "roomAdd p99 ms",
                "server µs/join",
                "ops/s/node on one core",
                "server CPU %",
                "redis µs/join",
                "redis cmds/join",
                "redis calls per join",
                "gen CPU %",
                "other CPU %",
                "ok",
            ],
            rows,
        ),
        "",
        _table(
            [
                "server",
                "nodes",
                "sustained ops/s/node",
                "redis µs/HSET (-P 1)",
                "redis µs/HSET (-P 16)",
                "most channels subscribed",
                "channels subscribed at the end",
            ],
            summary,
        ),
        "",
    ]


def _last_count(samples: list[dict]) -> int | None:
    counted = [s["subscribed"] for s in samples if "subscribed" in s]
    return counted[-1] if counted else None
