#!/usr/bin/env python3
"""Helpers for bench/routes_memory.sh: Portico's memory and start-up/reload time with many
routes. Standard library only; the routes come from reloadlib.py's generator (templates and
prefixes with hosts, five routes per host), so the figures match bench/reload.sh's configs.

Subcommands:
  run OUT_DIR BINARY PORT_BASE RELOADS N [N...]
        for each N: start BINARY on a generated N-route config, measure, stop it; one JSON
        line per N in OUT_DIR/runs.jsonl, progress on stderr
  table RUNS.jsonl
        the markdown table

What one measurement does (every wait is bounded; a failure names what did not happen):
  1. config: reloadlib's N routes plus one probe route (host memprobe.example.com) whose
     response header x-config-generation says which version of the file is live;
  2. start `BINARY run -c FILE --workers 1` and time until the last route answers the
     origin's body through the listener (start → ready);
  3. VmRSS once ready; 20 GETs to the last route; VmRSS and VmHWM (peak) after them;
  4. RELOADS reloads: write the next version of the file (a comment and the probe's header
     value change), SIGHUP, and time until the probe route answers with the new generation
     (signal → new config live); Portico's log gives the reload's own duration
     ("SIGHUP received" → "configuration reloaded");
  5. VmRSS once it has stopped moving for 1 s after the last reload (the replaced runtime is
     freed on the background thread just after the swap), and VmHWM.

Memory figures are steady on a busy machine; times are indicative there.
"""

import http.client
import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reloadlib  # noqa: E402  (same directory)

ORIGIN_BODY = b"hello from origin\n"
PROBE_HOST = "memprobe.example.com"
REQUESTS = 20
WAIT_S = 120.0  # start-up and reloads of 20,000 routes on a loaded machine stay well below


def log(msg):
    print(f"[routes_memory {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- origin

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("content-length", str(len(ORIGIN_BODY)))
        self.end_headers()
        self.wfile.write(ORIGIN_BODY)

    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_origin(port):
    server = ThreadingServer(("127.0.0.1", port), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------- config

def config_text(routes, origin_port, port, admin_port, generation):
    """reloadlib's config (variant toggling on the generation's parity) plus the probe route."""
    base = reloadlib.portico_config(routes, origin_port, port, admin_port, generation % 2)
    probe = f"""  - name: memprobe
    match: {{ host: {PROBE_HOST}, path_prefix: / }}
    cluster: origin
    response_headers: {{ set: {{ x-config-generation: "{generation}" }} }}
"""
    return base + probe


def write_config(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # Portico never reads a half-written file


# --------------------------------------------------------------------------- probes

def get(port, host, path, timeout=5.0):
    """(status, headers dict, body) or None when the connection fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    except OSError:
        return None
    finally:
        conn.close()


def wait_for(what, check, proc, limit=WAIT_S, pause=0.005):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Portico exited (status {proc.returncode}) while waiting for {what}")
        if check():
            return
        time.sleep(pause)
    raise RuntimeError(f"no {what} after {limit:.0f} s")


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def settled_rss(pid, proc):
    """VmRSS once it has stayed within 64 KB for 1 s (samples 200 ms apart; at most 15 s).
    The replaced runtime is freed on Portico's low-priority background thread, which a busy
    machine may run late."""
    prev = status_kb(pid, "VmRSS")
    steady = 0
    for _ in range(75):
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError("Portico exited after the reloads")
        cur = status_kb(pid, "VmRSS")
        steady = steady + 1 if abs(cur - prev) <= 64 else 0
        prev = cur
        if steady >= 5:
            break
    return prev


def reload_log_ms(stderr_path, since_line):
    """Durations of the reloads logged after line `since_line`: SIGHUP received → reloaded."""
    with open(stderr_path, errors="replace") as f:
        lines = f.readlines()[since_line:]
    out, start = [], None
    for line in lines:
        t = reloadlib.log_time(line)
        if t is None:
            continue
        if "SIGHUP received: reloading configuration" in line:
            start = t
        elif "configuration reloaded" in line and start is not None:
            out.append(round((t - start) * 1e3, 1))
            start = None
        elif "configuration reload refused" in line:
            raise RuntimeError(f"a reload was refused: {line.strip()}")
    return out


def count_lines(path):
    with open(path, errors="replace") as f:
        return sum(1 for _ in f)


# --------------------------------------------------------------------------- one measurement

def measure(out_dir, binary, origin_port, port, admin_port, routes, reloads):
    work = os.path.join(out_dir, f"routes-{routes}")
    os.makedirs(work, exist_ok=True)
    cfg = os.path.join(work, "portico.yaml")
    write_config(cfg, config_text(routes, origin_port, port, admin_port, 0))
    host, path, route_name = reloadlib.target(routes)
    stderr_path = os.path.join(work, "stderr.log")
    with open(os.path.join(work, "stdout.log"), "w") as out, open(stderr_path, "w") as err:
        started = time.monotonic()
        proc = subprocess.Popen([binary, "run", "-c", cfg, "--workers", "1"],
                                stdout=out, stderr=err)
    try:
        def target_ok():
            got = get(port, host, path, timeout=2.0)
            return got is not None and got[0] == 200 and got[2] == ORIGIN_BODY
        wait_for(f"200 with the origin's body from {host}{path}", target_ok, proc)
        ready_s = time.monotonic() - started
        rss_start = status_kb(proc.pid, "VmRSS")
        for _ in range(REQUESTS):
            got = get(port, host, path)
            if got is None or got[0] != 200 or got[2] != ORIGIN_BODY:
                raise RuntimeError(f"the last route ({route_name}) answered {got!r}")
        rss_requests = status_kb(proc.pid, "VmRSS")
        hwm_start = status_kb(proc.pid, "VmHWM")
        log(f"{routes} routes: ready in {ready_s:.2f} s, VmRSS {rss_start / 1024:.1f} MB, "
            f"after {REQUESTS} requests {rss_requests / 1024:.1f} MB, peak {hwm_start / 1024:.1f} MB")

        live_ms = []
        mark = count_lines(stderr_path)
        for generation in range(1, reloads + 1):
            write_config(cfg, config_text(routes, origin_port, port, admin_port, generation))
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGHUP)
            want = str(generation)

            def live():
                got = get(port, PROBE_HOST, "/", timeout=2.0)
                return got is not None and got[1].get("x-config-generation") == want
            wait_for(f"generation {generation} live after SIGHUP", live, proc)
            live_ms.append(round((time.monotonic() - sent) * 1e3, 1))
        rss_reloads = settled_rss(proc.pid, proc)
        hwm_end = status_kb(proc.pid, "VmHWM")
        build_ms = reload_log_ms(stderr_path, mark)
        log(f"{routes} routes: {reloads} reloads live in {live_ms} ms (logged {build_ms} ms); "
            f"VmRSS after them {rss_reloads / 1024:.1f} MB, peak {hwm_end / 1024:.1f} MB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "routes": routes, "config_bytes": os.path.getsize(cfg),
        "ready_s": round(ready_s, 3),
        "rss_start_kb": rss_start, "rss_after_requests_kb": rss_requests,
        "hwm_start_kb": hwm_start,
        "reloads": reloads, "reload_live_ms": live_ms, "reload_logged_ms": build_ms,
        "rss_after_reloads_kb": rss_reloads, "hwm_end_kb": hwm_end,
    }


def run(out_dir, binary, port_base, reloads, route_counts):
    origin_port, port, admin_port = port_base, port_base + 1, port_base + 2
    origin = start_origin(origin_port)
    runs = os.path.join(out_dir, "runs.jsonl")
    failed = 0
    try:
        for routes in route_counts:
            try:
                rec = measure(out_dir, binary, origin_port, port, admin_port, routes, reloads)
            except RuntimeError as e:
                log(f"{routes} routes: not measured: {e}")
                failed += 1
                continue
            with open(runs, "a") as f:
                f.write(json.dumps(rec) + "\n")
    finally:
        origin.shutdown()
    return failed


# --------------------------------------------------------------------------- table

def mb(kb):
    return f"{kb / 1024:.1f}"


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def table(runs_path):
    rows = [json.loads(line) for line in open(runs_path) if line.strip()]
    out = ["| routes | RSS after start (MB) | after 20 requests | peak (VmHWM) | "
           "after reloads | peak after reloads | KB/route* | start → ready (s) | "
           "reload, signal → live (ms, median) | reload, logged (ms, median) |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_route = r["rss_after_requests_kb"] / r["routes"]
        out.append(
            f"| {r['routes']:,} | {mb(r['rss_start_kb'])} | {mb(r['rss_after_requests_kb'])} | "
            f"{mb(r['hwm_start_kb'])} | {mb(r['rss_after_reloads_kb'])} | {mb(r['hwm_end_kb'])} | "
            f"{per_route:.1f} | {r['ready_s']:.2f} | {median(r['reload_live_ms'])} | "
            f"{median(r['reload_logged_ms'])} |")
    out.append("")
    out.append("*RSS after the requests ÷ routes (includes the fixed part of the process). "
               "Reloads: " + ", ".join(str(r["reloads"]) for r in rows[:1]) + " per route count.")
    return "\n".join(out) + "\n"


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "run":
        out_dir, binary, port_base, reloads = argv[2], argv[3], int(argv[4]), int(argv[5])
        counts = [int(n) for n in argv[6:]]
        sys.exit(1 if run(out_dir, binary, port_base, reloads, counts) else 0)
    elif cmd == "table":
        print(table(argv[2]), end="")
    else:
        raise SystemExit(f"unknown command {cmd!r} (run, table)")


if __name__ == "__main__":
    main(sys.argv)
