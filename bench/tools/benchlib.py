#!/usr/bin/env python3
"""Helpers for bench/run.sh: config generation, output parsing, the idle-connection client
and the summary table. Standard library only (python3 is all a fresh Debian needs).

Subcommands (all print to stdout):
  nginx-origin DIR PORT              nginx.conf for the loopback origin
  nginx-proxy DIR SCENARIO ...       nginx.conf for the proxy under test
  portico-config SCENARIO ...        Portico YAML for the proxy under test
  parse-wrk OUT                      JSON from wrk's output (bench/wrk/bench.lua prints it)
  parse-h2load OUT LOG               JSON from h2load's output and its per-request log
  h2-settings NGHTTP_OUT             JSON of the SETTINGS (and connection WINDOW_UPDATE) a
                                     server sent, from `nghttp -nv`
  facts PROXY ..., facts-line, facts-merge FACTS.jsonl CIPHER
                                     run.sh's start-up record of each proxy (cipher, h2)
  idle HOST PORT COUNT               open COUNT keep-alive connections, one request each,
                                     print "ready N", hold them until stdin closes
  summarize RUNS.jsonl [OUT.json [FACTS.json]]
                                     per operating point: medians per scenario/proxy, the
                                     ratios (median of the per-round ratios), the markdown
                                     tables; FACTS (the negotiated ciphers, the proxies' h2
                                     settings) printed below them

Environment read by the config generators: BENCH_UPSTREAM_IDLE (idle upstream connections kept,
Portico's pool and NGINX's `keepalive`, default 64), BENCH_TLS_CIPHER (NGINX's TLS 1.3 suite,
default: OpenSSL's), BENCH_PORTICO_CIPHER (Portico's `tls.cipher_suites`, default: not set).
"""

import json
import os
import socket
import statistics
import sys

ROUTES = 1000  # scenario (c)
ORIGIN_BODY = "hello from origin\n"
# The TLS 1.3 suites both proxies implement (OpenSSL and rustls with ring), by IANA name.
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")


def upstream_idle():
    return int(os.environ.get("BENCH_UPSTREAM_IDLE", "64"))


# --------------------------------------------------------------------------- configs

def nginx_common(prefix, worker_connections):
    """The top of every nginx.conf: one worker (BENCH_PROXY_WORKERS for the two-worker
    scenario), no daemon, everything under `prefix`."""
    workers = int(os.environ.get("BENCH_PROXY_WORKERS", "1"))
    return f"""daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {worker_connections}; }}
"""


def nginx_temp_paths(prefix):
    return "\n".join(
        f"  {kind}_temp_path {prefix}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_origin(prefix, port):
    """The fast origin: a fixed small body from `return 200`, keep-alive without limit; the
    same answer over h2c (prior knowledge) on port + 6, for scenario a-h2up."""
    h2c_port = int(port) + 6
    h2c_listen = (f"listen 127.0.0.1:{h2c_port} backlog=4096;\n    http2 on;"
                  if nginx_version_tuple() >= (1, 25, 1)
                  else f"listen 127.0.0.1:{h2c_port} http2 backlog=4096;")
    return nginx_common(prefix, 4096) + f"""http {{
  access_log off;
{nginx_temp_paths(prefix)}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  default_type text/plain;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.2:{port} backlog=4096;
    listen 127.0.0.3:{port} backlog=4096;
    location / {{ return 200 "{ORIGIN_BODY.strip()}\\n"; }}
    # Accepted connections: run.sh counts the upstream connections a proxy opens.
    location = /bench-status {{ stub_status; }}
  }}
  server {{
    {h2c_listen}
    http2_max_concurrent_streams 1024;
    location / {{ return 200 "{ORIGIN_BODY.strip()}\n"; }}
  }}
}}
"""


def nginx_version_tuple():
    out = os.popen("nginx -v 2>&1").read()
    ver = out.strip().split("/")[-1].split()[0]
    return tuple(int(x) for x in ver.split(".")[:3])


def nginx_proxy(prefix, scenario, origin_port, h1_port, h2c_port, tls_port, cert, key, fwd):
    """The proxy under test. One worker, access log off, keep-alive to the origin."""
    new_h2 = nginx_version_tuple() >= (1, 25, 1)
    forward = """
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Request-Id $request_id;
    add_header X-Request-Id $request_id;""" if fwd else ""
    proxy = f"""proxy_pass http://origin;
    proxy_http_version 1.1;
    proxy_set_header Connection "";{forward}"""
    if scenario == "c":
        # 1000 prefix locations; the request matches the last one. proxy_* settings at
        # server level are inherited by every location.
        locations = "\n".join(
            f"    location /svc{i:04d}/ {{ proxy_pass http://origin; }}" for i in range(ROUTES)
        )
        server_body = f"""    proxy_http_version 1.1;
    proxy_set_header Connection "";{forward}
{locations}"""
    else:
        server_body = f"""    location / {{
    {proxy}
    }}"""
    # h2c with prior knowledge: nginx < 1.25.1 speaks it on a `listen ... http2` port
    # (that port then speaks only HTTP/2); >= 1.25.1 uses `http2 on;` and keeps HTTP/1.1.
    servers = [f"""  server {{
    listen 127.0.0.1:{h1_port} backlog=4096;
{server_body}
  }}"""]
    if new_h2:
        servers.append(f"""  server {{
    listen 127.0.0.1:{h2c_port} backlog=4096;
    http2 on;
{server_body}
  }}""")
    else:
        servers.append(f"""  server {{
    listen 127.0.0.1:{h2c_port} http2 backlog=4096;
{server_body}
  }}""")
    if cert:
        listen = (f"listen 127.0.0.1:{tls_port} ssl backlog=4096;\n    http2 on;" if new_h2
                  else f"listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;")
        # One TLS 1.3 suite (BENCH_TLS_CIPHER), the server's choice: `ssl_conf_command`
        # (nginx >= 1.19.4) sets OpenSSL's TLS 1.3 list, which `ssl_ciphers` does not touch.
        cipher = os.environ.get("BENCH_TLS_CIPHER", "")
        suites = ""
        if cipher and nginx_version_tuple() >= (1, 19, 4):
            suites = (f"\n    ssl_conf_command Ciphersuites {cipher};"
                      "\n    ssl_prefer_server_ciphers on;")
        servers.append(f"""  server {{
    {listen}
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;{suites}
{server_body}
  }}""")
    return nginx_common(prefix, 4096) + f"""http {{
  access_log off;
{nginx_temp_paths(prefix)}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream origin {{
    server 127.0.0.1:{origin_port};
    keepalive {upstream_idle()};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
{chr(10).join(servers)}
}}
"""


def portico_config(scenario, origin_port, port, tls_port, cert, key):
    """Portico's config for the proxy under test: one worker, access log off, no admin
    listener, no file watching (a stat every 2 s is not what we measure)."""
    tls = ""
    if cert:
        tls = f"""
  - name: tls
    address: 127.0.0.1:{tls_port}
    limits: {{ idle_timeout: 300s, max_connections: 20000 }}
    tls:
      certificates:
        - cert: {cert}
          key: {key}"""
        cipher = os.environ.get("BENCH_PORTICO_CIPHER", "")
        if cipher:
            tls += f"\n      cipher_suites: [{cipher}]"
    if scenario == "c":
        routes = "\n".join(
            f"  - name: svc{i:04d}\n    match: {{ path_prefix: /svc{i:04d} }}\n    cluster: origin"
            for i in range(ROUTES)
        )
    else:
        routes = "  - name: all\n    cluster: origin"
        # Route policies to measure (bench/instructions.sh's BENCH_ROUTE_KEYS): YAML lines
        # of route keys, added to the one route.
        for line in os.environ.get("BENCH_ROUTE_KEYS", "").splitlines():
            if line.strip():
                routes += f"\n    {line.strip()}"
    # BENCH_ENDPOINTS=3: the origin's three loopback addresses as three endpoints;
    # BENCH_LB: the cluster's `load_balancing` (a YAML flow mapping), to compare policies.
    endpoints = ", ".join(
        f"127.0.0.{i + 1}:{origin_port}" for i in range(int(os.environ.get("BENCH_ENDPOINTS", "1")))
    )
    lb = os.environ.get("BENCH_LB", "")
    lb = f"\n    load_balancing: {lb}" if lb else ""
    if scenario == "a-h2up":
        # The origin's h2c port: every request multiplexed on one upstream connection.
        endpoints = f"127.0.0.1:{int(origin_port) + 6}"
        lb += "\n    protocol: http2"
    return f"""# generated by bench/tools/benchlib.py (scenario {scenario})
runtime:
  workers: 1
  watch_interval: 0s
  drain_timeout: 0s
access_log:
  enabled: false
listeners:
  - name: plain
    address: 127.0.0.1:{port}
    limits: {{ idle_timeout: 300s, max_connections: 20000 }}{tls}
clusters:
  - name: origin
    endpoints: [{endpoints}]{lb}
    pool:
      max_idle_per_endpoint: {upstream_idle()}
      idle_timeout: 300s
routes:
{routes}
"""


# --------------------------------------------------------------------------- parsing

def parse_wrk(path):
    """bench/wrk/bench.lua's done() prints one line `BENCH_JSON {...}`."""
    with open(path) as f:
        for line in f:
            if line.startswith("BENCH_JSON "):
                d = json.loads(line[len("BENCH_JSON "):])
                dur_s = d["duration_us"] / 1e6
                errors = sum(d["errors"].values())
                return {
                    "requests": d["requests"],
                    "ok": d["requests"] - d["errors"]["status"],
                    "rps": d["requests"] / dur_s if dur_s else 0.0,
                    "p50_us": d["p50_us"],
                    "p99_us": d["p99_us"],
                    "errors": errors,
                    "error_detail": d["errors"],
                }
    raise SystemExit(f"{path}: no BENCH_JSON line (wrk failed?)")


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def parse_h2load(path, log_path):
    """h2load prints totals; per-request latencies come from its --log-file
    (start µs, status, µs until end of response). `path` may hold the concatenated output of
    several h2load processes (the fixed-rate run): the totals are summed."""
    rps = 0.0
    requests = ok = failed = errored = timeout = 0
    tls_cipher = alpn = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("Cipher:"):
                tls_cipher = line.split(":", 1)[1].strip()
            elif line.startswith("Application protocol:"):
                alpn = line.split(":", 1)[1].strip()
            elif line.startswith("finished in"):
                # finished in 10.00s, 51234.50 req/s, 1.23MB/s
                rps += float(line.split(",")[1].split()[0])
            elif line.startswith("requests:"):
                parts = line[len("requests:"):].split(",")
                vals = {p.split()[1]: int(p.split()[0]) for p in parts}
                requests += vals.get("done", 0)
                failed += vals.get("failed", 0)
                errored += vals.get("errored", 0)
                timeout += vals.get("timeout", 0)
            elif line.startswith("status codes:"):
                parts = line[len("status codes:"):].split(",")
                vals = {p.split()[1]: int(p.split()[0]) for p in parts}
                ok += vals.get("2xx", 0)
    lat = []
    bad_status = 0
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) >= 3:
                    if not cols[1].startswith("2"):
                        bad_status += 1
                    lat.append(int(cols[2]))
    lat.sort()
    return {
        "requests": requests,
        "ok": ok,
        "rps": rps,
        "p50_us": percentile(lat, 50),
        "p99_us": percentile(lat, 99),
        "errors": failed + errored + timeout + max(0, requests - ok),
        "error_detail": {"failed": failed, "errored": errored, "timeout": timeout,
                         "non2xx": max(0, requests - ok), "non2xx_in_log": bad_status},
        "tls_cipher": tls_cipher,
        "alpn": alpn,
    }


def h2_settings(path):
    """The SETTINGS values a server sent first, and its first connection-level WINDOW_UPDATE,
    from `nghttp -nv` output: what a client of that proxy can use (streams per connection,
    windows, frame size)."""
    settings = {}
    window_update = None
    in_settings = False
    for line in open(path, errors="replace"):
        text = line.strip()
        if "recv SETTINGS frame" in text:
            in_settings = not settings and "flags=0x01" not in text   # not the ACK
            continue
        if "recv WINDOW_UPDATE frame" in text and "stream_id=0" in text and window_update is None:
            in_settings = "window"
            continue
        if in_settings == "window" and text.startswith("(window_size_increment="):
            window_update = int(text.split("=")[1].rstrip(")"))
            in_settings = False
            continue
        if in_settings is True and text.startswith("[SETTINGS_"):
            name, _, value = text.strip("[]").partition(":")
            settings[name.split("(")[0]] = int(value)
        elif in_settings is True and text.startswith("["):
            in_settings = False
    return {"settings": settings, "connection_window_update": window_update}


# --------------------------------------------------------------------------- idle client

def read_response(sock):
    """Read one HTTP/1.1 response with a Content-Length body; return the status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ConnectionError("chunked response not expected from the origin")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    return status


def idle(host, port, count, requests=1):
    """`requests` = 0 only connects (the cost of an accepted connection before any request)."""
    socks = []
    failures = 0
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        for _ in range(requests):
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            try:
                if read_response(s) != 200:
                    failures += 1
            except (ConnectionError, OSError):
                failures += 1
        socks.append(s)
    print(f"ready {len(socks) - failures} {failures}", flush=True)
    sys.stdin.read()  # hold until run.sh closes our stdin (or kills us)
    # Check the connections are still open (the proxy must not have closed them).
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(1)
            alive += 0 if data == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print(f"alive {alive}", flush=True)


# --------------------------------------------------------------------------- summary

SCENARIOS = [
    ("a", "(a) GET, HTTP/1.1 keep-alive"),
    ("a-h2up", "(a) GET, Portico to an h2c origin (NGINX: HTTP/1.1, it has no HTTP/2 upstream)"),
    ("b", "(b) POST 1 KiB body"),
    ("c", "(c) 1000 routes, last matches"),
    ("d", "(d) HTTPS (TLS 1.3) keep-alive, HTTP/1.1"),
    ("d-h2", "(d-h2) HTTP/2 over TLS (h2load)"),
    ("e", "(e) h2c prior knowledge (h2load)"),
    ("rate", "fixed offered load, GET (50 × h2load --h1 -c1 --rps)"),
    ("w2", "two workers each, fixed offered load, GET (50 × h2load --h1 -c1 --rps)"),
]
# Scenarios run at one fixed offered load rather than at operating points.
FIXED_LOAD = ("rate", "w2")
# portico-base: a second Portico build (run.sh --baseline), measured right after portico.
PROXY_ORDER = ["portico", "portico-base", "nginx", "nginx-fwd"]
TARGET_RATIO = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.75, "d-h2": 0.75, "e": 0.75}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def fmt_us(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def per_round_ratio(load, key, num, den):
    """num's CPU µs/req over den's within each round of scenario `key` (the two proxies
    measured in the same round, one after the other), in round order. `load` holds the runs
    of one operating point."""
    by_round = {r["round"]: r["cpu_us_per_req"] for r in load
                if r["scenario"] == key and r["proxy"] == den}
    return [r["cpu_us_per_req"] / by_round[r["round"]] for r in load
            if r["scenario"] == key and r["proxy"] == num
            and r["cpu_us_per_req"] and by_round.get(r["round"])]


def op_of(run):
    """The operating point a run belongs to (1-based); runs of older harnesses have one."""
    return run.get("op", 1)


def op_title(load, op):
    """`HTTP/1.1: 64 connections; HTTP/2: 8 × 8 connections × streams`, from the runs."""
    h1 = sorted({r["point"] for r in load if op_of(r) == op and r.get("point")
                 and r["scenario"] in ("a", "a-h2up", "b", "c", "d")})
    h2 = sorted({r["point"] for r in load if op_of(r) == op and r.get("point")
                 and r["scenario"] in ("d-h2", "e")})
    parts = []
    if h1:
        parts.append("HTTP/1.1 (wrk): " + ", ".join(h1))
    if h2:
        parts.append("HTTP/2 (h2load): " + ", ".join(h2))
    return "; ".join(parts) or "single point"


def scenario_table(load, out):
    """The markdown table of one operating point's runs; returns {scenario: {proxy: row}}."""
    summary = {}
    out.append("| Scenario | Proxy | req/s | p50 | p99 | CPU µs/req | Portico/NGINX CPU | "
               "proxy core busy | irq µs/req | wake-ups/req | upstream opens | "
               "others on proxy core | peak RSS | errors | rounds |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, title in SCENARIOS:
        rows = {}
        for proxy in PROXY_ORDER:
            rs = [r for r in load if r["scenario"] == key and r["proxy"] == proxy]
            if not rs:
                continue
            rows[proxy] = {
                "rps": med([r["rps"] for r in rs]),
                "p50_us": med([r["p50_us"] for r in rs]),
                "p99_us": med([r["p99_us"] for r in rs]),
                "cpu_us_per_req": med([r["cpu_us_per_req"] for r in rs]),
                "cpu_util": med([r["cpu_util"] for r in rs]),
                "irq_us_per_req": med([r.get("irq_us_per_req") for r in rs]),
                "wakeups_per_req": med([r.get("ctx_switches_per_req") for r in rs]),
                "upstream_opens": med([r.get("upstream_opens") for r in rs]),
                "others_max": max(r.get("proxy_cpu_other", 0) for r in rs),
                "peak_rss_kib": med([r["peak_rss_kib"] for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                "rounds": len(rs),
                "cpu_all": [round(r["cpu_us_per_req"], 2) if r["cpu_us_per_req"] else None
                            for r in rs],
                "p99_all": [r["p99_us"] for r in rs],
                "offered_rps": rs[0].get("offered_rps"),
                "point": rs[0].get("point"),
                "tls_ciphers": sorted({r["tls_cipher"] for r in rs if r.get("tls_cipher")}),
            }
        if not rows:
            continue
        summary[key] = rows
        for proxy, row in rows.items():
            ratio = ""
            if proxy != "nginx" and rows.get("nginx", {}).get("cpu_us_per_req"):
                # The ratio within each round (both measured in the same round, back to
                # back) and its median: steadier than a ratio of medians.
                per_round = per_round_ratio(load, key, proxy, "nginx")
                if per_round:
                    row["ratio"] = statistics.median(per_round)
                    row["ratio_per_round"] = [round(x, 3) for x in per_round]
                    if proxy == "nginx-fwd":
                        ratio = f"({row['ratio']:.2f}× nginx)"
                    else:
                        ratio = f"**{row['ratio']:.2f}×**"
                    if len(per_round) > 1:
                        ratio += " (rounds: " + ", ".join(f"{x:.2f}" for x in per_round) + ")"
            label = title if key not in FIXED_LOAD else f"{title} = {fmt(row['offered_rps'], 0)} req/s"
            if row["point"] and key not in FIXED_LOAD:
                label += f" — {row['point']}"
            out.append(
                f"| {label} | {proxy} | {fmt(row['rps'], 0)} | {fmt_us(row['p50_us'])} | "
                f"{fmt_us(row['p99_us'])} | {fmt(row['cpu_us_per_req'], 2)} | {ratio} | "
                f"{fmt(row['cpu_util'] * 100, 0)} % | {fmt(row['irq_us_per_req'], 2)} | "
                f"{fmt(row['wakeups_per_req'], 3)} | {fmt(row['upstream_opens'], 0)} | "
                f"≤ {fmt(row['others_max'] * 100, 0)} % | {fmt(row['peak_rss_kib'] / 1024, 1)} MiB | "
                f"{row['errors']} | {row['rounds']} |")
    return summary


def pair_table(load, summary):
    """Before/after (run.sh --baseline): portico / portico-base within each round, median."""
    pairs = []
    for key, title in SCENARIOS:
        rows = summary.get(key, {})
        if "portico" not in rows or "portico-base" not in rows:
            continue
        per_round = per_round_ratio(load, key, "portico", "portico-base")
        if not per_round:
            continue
        mid = statistics.median(per_round)
        rows["portico"]["vs_base"] = mid
        rows["portico"]["vs_base_per_round"] = [round(x, 3) for x in per_round]
        label = title if key not in FIXED_LOAD else f"{title} = {fmt(rows['portico']['offered_rps'], 0)} req/s"
        pairs.append(
            f"| {label} | {fmt(rows['portico']['cpu_us_per_req'], 2)} | "
            f"{fmt(rows['portico-base']['cpu_us_per_req'], 2)} | **{mid:.3f}×** ({(mid - 1) * 100:+.1f} %) | "
            + ", ".join(f"{x:.3f}" for x in per_round) + " |")
    if not pairs:
        return []
    return ["| Scenario | portico CPU µs/req | portico-base CPU µs/req | "
            "portico / portico-base | per round |",
            "|---|---:|---:|---:|---|"] + pairs


def facts_text(facts):
    """What was checked at start-up: the cipher each proxy negotiated, its h2 settings."""
    if not facts:
        return []
    out = ["", "TLS and HTTP/2 as checked at start-up:", ""]
    want = facts.get("tls_cipher")
    if want:
        out.append(f"- cipher asked for (BENCH_TLS_CIPHER): {want}; the load generators offer "
                   "only it (h2load `--tls13-ciphers`, wrk through an OpenSSL config file)")
    for proxy, info in sorted(facts.get("proxies", {}).items()):
        if info.get("note"):
            out.append(f"- {proxy}: {info['note']}")
        if info.get("cipher_offering_all") or info.get("cipher_as_loaded"):
            out.append(f"- {proxy} negotiated: {info.get('cipher_as_loaded') or '–'} with the "
                       f"load generators' offer; {info.get('cipher_offering_all') or '–'} with a "
                       "client offering every suite, AES-256 first (the server's own choice)")
        for kind in ("h2_tls", "h2c"):
            h2 = info.get(kind)
            if h2:
                settings = ", ".join(f"{k.replace('SETTINGS_', '')}={v}"
                                     for k, v in h2.get("settings", {}).items()) or "none sent"
                out.append(f"- {proxy} {kind.replace('_', ' over ')} SETTINGS: {settings}; "
                           f"connection WINDOW_UPDATE: {h2.get('connection_window_update') or 'none'}")
    return out


def streams_in_use(load, facts):
    """h2load's -m per connection, capped by each proxy's SETTINGS_MAX_CONCURRENT_STREAMS:
    the streams per connection each proxy actually had in flight at each HTTP/2 point."""
    if not facts:
        return []
    out = []
    points = sorted({(op_of(r), r["point"]) for r in load
                     if r["scenario"] in ("d-h2", "e") and r.get("point")})
    for op, point in points:
        conns, _, streams = point.partition("x")
        used = []
        for proxy, info in sorted(facts.get("proxies", {}).items()):
            caps = [info[kind]["settings"].get("SETTINGS_MAX_CONCURRENT_STREAMS")
                    for kind in ("h2_tls", "h2c") if kind in info]
            caps = [c for c in caps if c]
            cap = min(caps) if caps else None
            n = min(int(streams), cap) if cap else int(streams)
            used.append(f"{proxy} {n}" + (f" (its limit {cap})" if cap else ""))
        out.append(f"- point {op} ({point}): {conns} connections, streams per connection in "
                   f"flight: " + ", ".join(used))
    return out


def summarize(path, facts=None):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    load = [r for r in runs if r["scenario"] != "idle"]
    idle_runs = [r for r in runs if r["scenario"] == "idle"]
    ops = sorted({op_of(r) for r in load}) or [1]
    summary = {"points": {}}
    out = []
    pair_out = []
    for op in ops:
        runs_here = [r for r in load if op_of(r) == op]
        title = op_title(load, op)
        out.append(f"\n### Operating point {op}: {title}\n")
        tables = scenario_table(runs_here, out)
        summary["points"][str(op)] = {"title": title, "scenarios": tables}
        pairs = pair_table(runs_here, tables)
        if pairs:
            if not pair_out:
                pair_out.append("\n\nBefore/after: portico / portico-base CPU per request "
                                "(median of the per-round ratios; each round's pair measured "
                                "back to back; below 1 = portico is cheaper):")
            pair_out.append(f"\nOperating point {op}: {title}\n")
            pair_out.extend(pairs)
    # Idle connections
    idle_out = []
    if idle_runs:
        idle_out.append("| Proxy | connections | requests each | RSS before | RSS with the "
                        "connections | bytes per connection | rounds |")
        idle_out.append("|---|---:|---:|---:|---:|---:|---:|")
        summary["idle"] = {}
        summary["idle-unused"] = {}
        for reqs in (1, 0):
            for proxy in PROXY_ORDER:
                rs = [r for r in idle_runs if r["proxy"] == proxy
                      and r.get("requests_per_conn", 1) == reqs]
                if not rs:
                    continue
                row = {
                    "conns": med([r["conns"] for r in rs]),
                    "rss_before_kib": med([r["rss_before_kib"] for r in rs]),
                    "rss_after_kib": med([r["rss_after_kib"] for r in rs]),
                    "bytes_per_conn": med([r["bytes_per_conn"] for r in rs]),
                    "rounds": len(rs),
                    "failures": sum(r["failures"] for r in rs),
                    "alive_all": [r.get("alive") for r in rs],
                }
                summary["idle" if reqs == 1 else "idle-unused"][proxy] = row
                idle_out.append(
                    f"| {proxy} | {fmt(row['conns'], 0)} | {reqs} | "
                    f"{fmt(row['rss_before_kib'] / 1024, 1)} MiB | "
                    f"{fmt(row['rss_after_kib'] / 1024, 1)} MiB | {fmt(row['bytes_per_conn'], 0)} | "
                    f"{row['rounds']} |")
    # Targets: a ratio target holds only if it holds at every operating point.
    heads = " | ".join(f"point {op}" for op in ops)
    tgt = [f"| Target | {heads} | Result |", "|---|" + "---|" * len(ops) + "---|"]
    for key, limit in TARGET_RATIO.items():
        figures = []
        for op in ops:
            row = summary["points"][str(op)]["scenarios"].get(key, {}).get("portico")
            figures.append(row.get("ratio") if row else None)
        measured = [f for f in figures if f is not None]
        if not measured:
            result = "not measured"
        elif len(measured) < len(figures):
            result = "met where measured" if all(f <= limit for f in measured) else "NOT met"
        else:
            result = "met at every point" if all(f <= limit for f in measured) else "NOT met"
        cells = " | ".join("–" if f is None else f"{f:.2f}×" for f in figures)
        tgt.append(f"| ({key}) CPU/request ≤ {limit:.2f}× NGINX | {cells} | {result} |")
    fwd = []
    for op in ops:
        row = summary["points"][str(op)]["scenarios"].get("a", {}).get("nginx-fwd")
        fwd.append(f"{row['ratio']:.2f}×" if row and "ratio" in row else "–")
    if any(f != "–" for f in fwd):
        tgt.append(f"| (a) nginx-fwd / nginx (reference, no target) | {' | '.join(fwd)} | – |")
    blank = " | ".join("" for _ in ops[1:])
    blank = f" {blank} |" if len(ops) > 1 else ""
    rate = {}
    for op in ops:
        rate.update(summary["points"][str(op)]["scenarios"].get("rate", {}))
    if "portico" in rate and "nginx" in rate:
        p, n = rate["portico"]["p99_us"], rate["nginx"]["p99_us"]
        offered = rate["portico"].get("offered_rps") or 0
        short = [proxy for proxy in ("portico", "nginx")
                 if offered and rate[proxy]["rps"] < 0.97 * offered]
        verdict = "met" if p <= n else "NOT met"
        if short:
            verdict = (f"inconclusive: {', '.join(short)} did not reach the offered "
                       f"{offered:,} req/s (load generator short of CPU?)")
        tgt.append(f"| p99 at the same offered load ≤ NGINX | {fmt_us(p)} vs {fmt_us(n)} |"
                   f"{blank} {verdict} |")
    idle_sum = summary.get("idle", {})
    if "portico" in idle_sum and "nginx" in idle_sum:
        p, n = idle_sum["portico"]["bytes_per_conn"], idle_sum["nginx"]["bytes_per_conn"]
        tgt.append(f"| memory per idle keep-alive conn ≤ NGINX | {p:,.0f} B vs {n:,.0f} B |"
                   f"{blank} {'met' if p <= n else 'NOT met'} |")
    disturbed = [f"{key} {proxy} at point {op} ({row['others_max'] * 100:.0f} %)"
                 for op, point in summary["points"].items()
                 for key, rows in point["scenarios"].items()
                 for proxy, row in rows.items()
                 # w2's proxies share every CPU with the load generator by design.
                 if key != "w2" and row.get("others_max", 0) > 0.10]
    if disturbed:
        out.append("\nDisturbed: other processes used more than 10 % of the proxy core in a "
                   "round of: " + ", ".join(disturbed) + ". Rerun those when the machine is "
                   "quieter (`--only`).")
    if facts:
        summary["facts"] = facts
    text = "\n".join(out) + "\n".join(pair_out) + "\n\nIdle keep-alive connections:\n\n" + \
        "\n".join(idle_out) + "\n\nTargets (ratios: the median of the per-round ratios):\n\n" + \
        "\n".join(tgt) + "\n" + "\n".join(facts_text(facts) + streams_in_use(load, facts)) + "\n"
    return text, summary


def main(argv):
    cmd = argv[1]
    if cmd == "nginx-origin":
        print(nginx_origin(argv[2], int(argv[3])))
    elif cmd == "nginx-proxy":
        # DIR SCENARIO ORIGIN H1 H2C TLS CERT KEY FWD
        print(nginx_proxy(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7],
                          argv[8] or None, argv[9] or None, argv[10] == "1"))
    elif cmd == "portico-config":
        # SCENARIO ORIGIN PORT TLS CERT KEY
        print(portico_config(argv[2], argv[3], argv[4], argv[5], argv[6] or None,
                             argv[7] or None))
    elif cmd == "parse-wrk":
        print(json.dumps(parse_wrk(argv[2])))
    elif cmd == "parse-h2load":
        print(json.dumps(parse_h2load(argv[2], argv[3])))
    elif cmd == "syscalls":
        # perf stat -x, CSV of syscalls:sys_enter_* and the load generator's output of the
        # same window (wrk's, or h2load's with its --log-file beside it as OUT.log).
        with open(argv[3]) as f:
            from_wrk = "BENCH_JSON " in f.read()
        requests = (parse_wrk(argv[3]) if from_wrk else parse_h2load(argv[3], argv[3] + ".log"))["ok"]
        counts = {}
        for line in open(argv[2]):
            cols = line.strip().split(",")
            if len(cols) > 2 and cols[2].startswith("syscalls:sys_enter_"):
                try:
                    n = int(cols[0])
                except ValueError:
                    continue
                if n:
                    counts[cols[2][len("syscalls:sys_enter_"):]] = n
        total = sum(counts.values())
        print(f"{total / requests:.2f} syscalls per request ({requests} requests)")
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            if n / requests >= 0.001:
                print(f"  {name:<16} {n / requests:7.3f}")
    elif cmd == "line":
        # One run's record (stdin) as a progress line.
        d = json.loads(sys.stdin.read())
        us = lambda v: "-" if v is None else f"{v:.0f}"
        point = f" [{d['point']}]" if d.get("point") else ""
        extra = ""
        if d.get("ctx_switches_per_req") is not None:
            extra += f"  wake-ups {d['ctx_switches_per_req']:.3f}/req"
        if d.get("upstream_opens") is not None:
            extra += f"  upstream opens {d['upstream_opens']}"
        if d.get("threads"):
            extra += f"  threads {d['threads']}"
        if d.get("tls_cipher"):
            extra += f"  {d['tls_cipher']}"
        print(f"[bench] {d['scenario']:<5}{point} {d['proxy']:<9} r{d['round']}: {d['rps']:7.0f} req/s"
              f"  p50 {us(d['p50_us']):>5} µs  p99 {us(d['p99_us']):>6} µs"
              f"  CPU {d['cpu_us_per_req'] or 0:6.2f} µs/req ({d['cpu_util'] * 100:3.0f} % of CPU {argv[2]};"
              f" others there {d['proxy_cpu_other'] * 100:2.0f} %, irq {d['proxy_cpu_irq'] * 100:2.0f} %;"
              f" load CPU busy {d['load_cpu_busy'] * 100:3.0f} %)"
              f"  peak RSS {d['peak_rss_kib'] / 1024:5.1f} MiB  errors {d['errors']}{extra}")
    elif cmd == "idle":
        idle(argv[2], int(argv[3]), int(argv[4]), int(argv[5]) if len(argv) > 5 else 1)
    elif cmd == "h2-settings":
        print(json.dumps(h2_settings(argv[2])))
    elif cmd == "facts":
        # PROXY TLS(1|0) CIPHER_AS_LOADED CIPHER_OFFERING_ALL NOTE NGHTTP_TLS NGHTTP_H2C
        proxy, tls, loaded, offering_all, note, tls_out, h2c_out = argv[2:9]
        info = {"cipher_as_loaded": loaded or None, "cipher_offering_all": offering_all or None,
                "note": note or None}
        if tls == "1" and os.path.exists(tls_out):
            info["h2_tls"] = h2_settings(tls_out)
        if os.path.exists(h2c_out):
            info["h2c"] = h2_settings(h2c_out)
        print(json.dumps({"proxy": proxy, "info": info}))
    elif cmd == "facts-line":
        info = json.loads(sys.stdin.read())["info"]
        print("; ".join(f"{kind}: " + (", ".join(
            f"{k.replace('SETTINGS_', '')}={v}" for k, v in info[kind]["settings"].items())
            or "none") + f", connection WINDOW_UPDATE {info[kind]['connection_window_update']}"
            for kind in ("h2_tls", "h2c") if kind in info) or "none")
    elif cmd == "facts-merge":
        proxies = {}
        for line in open(argv[2]):
            if line.strip():
                d = json.loads(line)
                proxies[d["proxy"]] = d["info"]
        print(json.dumps({"tls_cipher": argv[3], "proxies": proxies}, indent=1))
    elif cmd == "summarize":
        facts = None
        if len(argv) > 4 and os.path.exists(argv[4]):
            with open(argv[4]) as f:
                facts = json.load(f)
        text, summary = summarize(argv[2], facts)
        if len(argv) > 3:
            with open(argv[3], "w") as f:
                json.dump(summary, f, indent=1)
        print(text)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
