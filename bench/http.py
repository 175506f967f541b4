"""HTTP benchmark: netboot-reconcile's boot server against nginx, same files, same run, as ratios.

Run on purpose: `.venv/bin/python bench/http.py [--seconds 5] [--repeat 3]` (the tests run `--smoke`).
Needs wrk, curl and nginx (Debian nginx-light). Everything listens on 127.0.0.1 only; nginx
runs as a child process with its own temporary config (`-g 'daemon off;'`).

Three servers, each a child process:
- ours: the example repo rendered and served by `HttpServer` + `make_boot_app` with the daemon's
  own event sink (`ResultsRecorder` over a `ResultsStore` in a temporary state dir: Prometheus
  counter, SQLite writer thread) and its `installed` lookup, as `commands/run.py` wires them;
- trivial: a WSGI app returning a constant body of the script's size, on the same `HttpServer`
  (same waitress settings, threads, channel): the ceiling of any app on CPython + waitress;
- nginx serving the same files statically (sendfile on).

Measures (each `--repeat` times, servers interleaved; medians, with min-max):
1. iPXE script requests/s at 64 connections (wrk -t2 -c64) with the query iPXE really sends
   (`/ipxe?uuid=..&mac=..&...`): ours / trivial-waitress / nginx(static). Target >= 0.5x nginx;
   ours/trivial shows what is left to our app, trivial/nginx what CPython + waitress cost. Server
   CPU per request (from /proc, user+sys) is printed too: it moves less than req/s when other
   processes take the CPU.
2. Aggregate throughput of 32 parallel downloads of a 256 MiB (sparse) file. Target >= 0.8x.
3. Time to first byte of a small request (the iPXE script; nginx: the same script as a file)
   while those downloads run: median, p95, max over every probe of every round. Target < 50 ms.
Load averages (1/5/15 min) are printed before and after each part: the ratios are only as good
as the machine is quiet. Other load only ever lowers a round's req/s, so part 1 also prints the
ratios of the best rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and `bench/http.py` would shadow
# the standard library's `http` package (which werkzeug imports; nothing above imports it): take the directory off.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAC = "52-54-00-aa-bb-01"
# What the bootstrap's `chain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&...` makes iPXE request.
SCRIPT_PATH = (
    f"/ipxe?uuid=6c2a1c3e-7f1d-4b9e-9f5e-0a1b2c3d4e5f&mac={MAC}&domain=lab.example&hostname="
    "&serial=PF2XK4LQ&arch=x86_64"
)
STATIC_SCRIPT = "/assets/script.ipxe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


# -- our server, in a child process ----------------------------------------------------------------


def serve(port: int, assets: Path, threads: int, turn_kib: int = 128) -> None:
    """Child process: the example repo rendered, served on 127.0.0.1:port with the daemon's event sink."""
    import logging

    from prometheus_client import CollectorRegistry

    from reconciler.adapters.dirsource import read_directory
    from reconciler.adapters.store import ResultsStore
    from reconciler.core.render import render_generation
    from reconciler.core.validate import validate
    from reconciler.generation import Generation, GenerationHolder
    from reconciler.servers.http import HttpServer, make_boot_app
    from reconciler.servers.http_results import ResultsRecorder

    logging.basicConfig(level=logging.WARNING)
    state = validate(read_directory(ROOT / "example-repo")).state
    assert state is not None
    state = dataclasses.replace(state, revision="b" * 40)
    holder = GenerationHolder()
    holder.swap(Generation(state.revision, state, render_generation(state)))
    store = ResultsStore(Path(tempfile.mkdtemp(prefix="bench-http-state-")) / "results.sqlite")
    recorder = ResultsRecorder(store, CollectorRegistry())
    # The bench client fetches node scripts from 127.0.0.1, not from each node's reserved address.
    app = make_boot_app(
        holder,
        recorder,
        assets,
        installed=lambda node: store.is_installed(node.name, node.mac, node.reinstall),
        trust_any_client=True,
    )
    server = HttpServer(("127.0.0.1", port), app, threads=threads, turn_bytes=turn_kib << 10)
    server.start()
    threading.Event().wait()


def serve_trivial(port: int, threads: int, size: int) -> None:
    """Child process: a constant body of `size` bytes from the same HttpServer: the waitress ceiling."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from reconciler.servers.http import HttpServer

    body = b"#" * size
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(size))]

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        start_response("200 OK", headers)
        return [body]

    server = HttpServer(("127.0.0.1", port), app, threads=threads)
    server.start()
    threading.Event().wait()


# -- nginx ---------------------------------------------------------------------------------------


def start_nginx(tmp: Path, port: int, assets: Path) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
worker_processes auto;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location /assets/ {{ alias {assets}/; }}
    }}
}}
"""
    )
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"])
    wait_port(port)
    return proc


# -- measurements ----------------------------------------------------------------------------------


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_seconds(pid: int) -> float:
    """user + sys CPU of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Rate:
    rps: float
    cpu_us: float | None  # server CPU per request


def wrk_rps(port: int, path: str, seconds: int, pid: int | None = None) -> Rate:
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk saw errors on {path}:\n{out}")
    assert match and total, out
    cpu = (cpu_seconds(pid) - before) / int(total.group(1)) * 1e6 if pid else None
    return Rate(float(match.group(1)), cpu)


def storm(port: int, n: int, big: str, small: str, probes: int) -> tuple[float, list[float]]:
    """n parallel curl downloads of `big`; meanwhile `probes` small requests. -> (bytes/s, TTFBs in s)."""
    url = f"http://127.0.0.1:{port}{big}"
    start = time.monotonic()
    downloads = [
        subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url], stdout=subprocess.PIPE)
        for _ in range(n)
    ]
    time.sleep(0.3)  # let every download get going
    ttfb: list[float] = []
    for _ in range(probes):
        out = subprocess.run(
            ["curl", "-sSf", "-o", "/dev/null", "-w", "%{time_starttransfer}", f"http://127.0.0.1:{port}{small}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        ttfb.append(float(out))
        time.sleep(0.05)
    total = 0
    for proc in downloads:
        size, _ = proc.communicate()
        total += int(size)
    elapsed = time.monotonic() - start
    return total / elapsed, ttfb


def spread(values: list[float], scale: float = 1.0, fmt: str = ",.0f") -> str:
    med = statistics.median(values) * scale
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values) * scale, fmt)}-{format(max(values) * scale, fmt)})"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_child(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--downloads", type=int, default=32)
    parser.add_argument("--probes", type=int, default=20, help="small requests per storm")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--turn-kib", type=int, default=128, help="HttpServer turn_bytes, in KiB")
    parser.add_argument("--only", choices=("rps", "storm"), help="run one part only")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "ASSETS"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-trivial", nargs=2, metavar=("PORT", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true",
                        help="1 s, 1 round, 2 downloads of 1 MiB: does the bench still run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.repeat, args.big_mib, args.downloads, args.probes = 1, 1, 1, 2, 2
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.threads, args.turn_kib)
        return
    if args.serve_trivial:
        serve_trivial(int(args.serve_trivial[0]), args.threads, int(args.serve_trivial[1]))
        return
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install {tool}")

    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # nginx workers (user nobody/www-data when started as root) must read the files
        assets = tmp / "assets"
        assets.mkdir()
        with (assets / "big.img").open("wb") as f:
            f.truncate(args.big_mib << 20)
        ours_port, trivial_port, nginx_port = free_port(), free_port(), free_port()
        common = ["--threads", str(args.threads), "--turn-kib", str(args.turn_kib)]
        ours = start_child(*common, "--serve", str(ours_port), str(assets))
        children: list[subprocess.Popen[bytes]] = [ours]
        try:
            wait_port(ours_port)
            script = assets / "script.ipxe"
            script.write_bytes(
                subprocess.run(
                    ["curl", "-sSf", f"http://127.0.0.1:{ours_port}{SCRIPT_PATH}"], check=True, capture_output=True
                ).stdout
            )
            size = len(script.read_bytes())
            trivial = start_child(*common, "--serve-trivial", str(trivial_port), str(size))
            children.append(trivial)
            children.append(start_nginx(tmp, nginx_port, assets))
            wait_port(trivial_port)

            print(
                f"cpus {os.cpu_count()}; waitress threads {args.threads}, turn {args.turn_kib} KiB; "
                f"script {size} bytes; big file {args.big_mib} MiB sparse; {args.repeat} round(s); {loadavg()}"
            )
            print(f"   ours: GET {SCRIPT_PATH}")
            if args.only in (None, "rps"):
                rates: dict[str, list[Rate]] = {"ours": [], "trivial": [], "nginx": []}
                targets = {
                    "ours": (ours_port, SCRIPT_PATH, ours.pid),
                    "trivial": (trivial_port, "/", trivial.pid),
                    "nginx": (nginx_port, STATIC_SCRIPT, None),
                }
                names = list(targets)
                for round_ in range(args.repeat):
                    for name in names[round_ % 3 :] + names[: round_ % 3]:  # rotate who goes first
                        port, path, pid = targets[name]
                        rates[name].append(wrk_rps(port, path, args.seconds, pid))
                med = {name: statistics.median(r.rps for r in rs) for name, rs in rates.items()}
                print(f"1. script req/s @64 conns (median (min-max)); {loadavg()}")
                for name in names:
                    cpu = [r.cpu_us for r in rates[name] if r.cpu_us is not None]
                    cpu_text = f"  server CPU {spread(cpu)} us/req" if cpu else ""
                    print(f"   {name:8s} {spread([r.rps for r in rates[name]]):>28s}{cpu_text}")
                best = {name: max(r.rps for r in rs) for name, rs in rates.items()}
                for label, v in (("medians", med), ("best rounds (least disturbed by other load)", best)):
                    print(
                        f"   {label}: ours/nginx {v['ours'] / v['nginx']:.3f}x (target >= 0.5x)   "
                        f"ours/trivial-waitress {v['ours'] / v['trivial']:.2f}x   "
                        f"trivial-waitress/nginx {v['trivial'] / v['nginx']:.3f}x (the ceiling for any app here)"
                    )

            if args.only in (None, "storm"):
                tps: dict[str, list[float]] = {"ours": [], "nginx": []}
                ttfbs: dict[str, list[float]] = {"ours": [], "nginx": []}
                small = {"ours": (ours_port, SCRIPT_PATH), "nginx": (nginx_port, STATIC_SCRIPT)}
                for round_ in range(args.repeat):
                    for name in ["ours", "nginx"] if round_ % 2 == 0 else ["nginx", "ours"]:
                        port, path = small[name]
                        tp, ttfb = storm(port, args.downloads, "/assets/big.img", path, args.probes)
                        tps[name].append(tp)
                        ttfbs[name].extend(ttfb)
                print(f"2. {args.downloads} x {args.big_mib} MiB downloads, GiB/s (median (min-max)); {loadavg()}")
                for name, values in tps.items():
                    print(f"   {name:8s} {spread(values, 1 / 2**30, '.2f')}")
                ratio = statistics.median(tps["ours"]) / statistics.median(tps["nginx"])
                print(f"   ours/nginx {ratio:.2f}x (target >= 0.8x)")
                print(f"3. small-request TTFB during the downloads, {len(ttfbs['ours'])} probes each (target < 50 ms)")
                for name, values in ttfbs.items():
                    print(
                        f"   {name:8s} median {statistics.median(values) * 1000:.1f} ms  "
                        f"p95 {pct(values, 0.95) * 1000:.1f} ms  max {max(values) * 1000:.1f} ms"
                    )
            print(f"done; {loadavg()}")
        finally:
            for child in children:
                child.terminate()
                child.wait(10)


if __name__ == "__main__":
    main()
