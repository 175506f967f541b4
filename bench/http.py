"""HTTP benchmark: netboot-reconcile's boot server against nginx, same files, same run, as ratios.

Run on purpose (not in the tests): `.venv/bin/python bench/http.py [--seconds 5] [--big-mib 256]`.
Needs wrk, curl and nginx (Debian nginx-light). Everything listens on 127.0.0.1 only; nginx
runs as a child process with its own temporary config (`-g 'daemon off;'`).

Measures:
1. iPXE script requests/s at 64 connections (wrk): our `/ipxe?mac=...` (selection + render
   lookup + boot event) against nginx serving the same script as a static file. Target >= 0.5x.
2. Aggregate throughput of 32 parallel downloads of a 256 MiB (sparse) file. Target >= 0.8x.
3. Time to first byte of a small request (the iPXE script) while those downloads run. Target < 50 ms.
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
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and `bench/http.py` would shadow
# the standard library's `http` package (which werkzeug imports; nothing above imports it): take the directory off.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAC = "52-54-00-aa-bb-01"
SCRIPT_PATH = f"/ipxe?mac={MAC}"


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


def serve(port: int, assets: Path, threads: int, turn_kib: int = 1024) -> None:
    """Child process: the example repo rendered, served by HttpServer on 127.0.0.1:port."""
    import logging

    from reconciler.adapters.dirsource import read_directory
    from reconciler.core.render import render_generation
    from reconciler.core.validate import validate
    from reconciler.generation import Generation, GenerationHolder
    from reconciler.servers.http import HttpServer, make_boot_app

    logging.basicConfig(level=logging.WARNING)
    state = validate(read_directory(ROOT / "example-repo")).state
    assert state is not None
    state = dataclasses.replace(state, revision="b" * 40)
    holder = GenerationHolder()
    holder.swap(Generation(state.revision, state, render_generation(state)))

    class Batched:
        """An EventSink shaped like the store's: append to a list, a thread drains it in batches."""

        def __init__(self) -> None:
            self.pending: list[object] = []
            self.count = 0

        def record(self, event: object) -> None:
            self.pending.append(event)  # list.append is atomic under the GIL: non-blocking

        def drain(self) -> None:
            while True:
                time.sleep(0.5)
                batch, self.pending = self.pending, []
                self.count += len(batch)

    sink = Batched()
    threading.Thread(target=sink.drain, daemon=True).start()
    server = HttpServer(
        ("127.0.0.1", port), make_boot_app(holder, sink, assets), threads=threads, turn_bytes=turn_kib << 10
    )
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


def wrk_rps(port: int, path: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t4", "-c64", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw errors on {path}:\n{out}")
    assert match, out
    return float(match.group(1))


def storm(port: int, n: int, big: str, probes: int) -> tuple[float, list[float]]:
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
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_starttransfer}", f"http://127.0.0.1:{port}{SCRIPT_PATH}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        ttfb.append(float(out))
        time.sleep(0.05)
    total = 0
    for proc in downloads:
        out, _ = proc.communicate()
        total += int(out)
    elapsed = time.monotonic() - start
    return total / elapsed, ttfb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--downloads", type=int, default=32)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--turn-kib", type=int, default=128)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "ASSETS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.threads, args.turn_kib)
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
        ours_port, nginx_port = free_port(), free_port()
        ours = subprocess.Popen(
            [sys.executable, __file__, "--threads", str(args.threads), "--serve", str(ours_port), str(assets)]
        )
        nginx: subprocess.Popen[bytes] | None = None
        try:
            wait_port(ours_port)
            script = assets / "script.ipxe"
            script.write_bytes(
                subprocess.run(
                    ["curl", "-sSf", f"http://127.0.0.1:{ours_port}{SCRIPT_PATH}"], check=True, capture_output=True
                ).stdout
            )
            nginx = start_nginx(tmp, nginx_port, assets)

            print(
                f"script: {len(script.read_bytes())} bytes; big file: {args.big_mib} MiB sparse; cpus: {os.cpu_count()}"
            )
            rps_ours = wrk_rps(ours_port, SCRIPT_PATH, args.seconds)
            rps_nginx = wrk_rps(nginx_port, "/assets/script.ipxe", args.seconds)
            print(
                f"1. iPXE script req/s @64 conns: ours {rps_ours:,.0f}  nginx(static) {rps_nginx:,.0f}  "
                f"ratio {rps_ours / rps_nginx:.2f}x (target >= 0.5x)"
            )

            tp_ours, ttfb_ours = storm(ours_port, args.downloads, "/assets/big.img", 20)
            tp_nginx, ttfb_nginx = storm(nginx_port, args.downloads, "/assets/big.img", 20)
            print(
                f"2. {args.downloads} x {args.big_mib} MiB downloads: ours {tp_ours / 2**30:.2f} GiB/s  "
                f"nginx {tp_nginx / 2**30:.2f} GiB/s  ratio {tp_ours / tp_nginx:.2f}x (target >= 0.8x)"
            )
            for name, values in (("ours", ttfb_ours), ("nginx", ttfb_nginx)):
                print(
                    f"3. small-request TTFB during the downloads, {name}: "
                    f"median {statistics.median(values) * 1000:.1f} ms  "
                    f"max {max(values) * 1000:.1f} ms (target < 50 ms)"
                )
        finally:
            ours.terminate()
            ours.wait(10)
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)


if __name__ == "__main__":
    main()
