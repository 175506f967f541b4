"""Benchmark: reconciler.servers.tftp against tftpd-hpa, same files, same client, one run.

Run on purpose (`.venv/bin/python bench/tftp.py`), not in the test suite. It serves a 14 MB
kernel-sized file and Debian's `ipxe.efi` from one temporary root with both servers on
127.0.0.1, fetches them with the real `atftp` client (Debian atftp 0.8, which speaks RFC 7440
`--option "windowsize N"`) at blksize 1468 and windowsize 1, 4, 16, then runs a storm of 200
concurrent `ipxe.efi` transfers, and prints times and ratios (tftpd-hpa time / our time, so
> 1 means we are faster).

tftpd-hpa 5.2 does not implement windowsize: it leaves the option out of its OACK and atftp
falls back to one block per ACK, so for windowsize 4 and 16 the comparison is windowed
transfer vs. tftpd-hpa's lockstep, which is what a firmware asking for a window gets from it.
atftpd is not measured: in Debian it conflicts with tftpd-hpa, which must be installed.
"""

from __future__ import annotations

import argparse
import functools
import os
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.core.events import CollectEvents
from reconciler.generation import GenerationHolder
from reconciler.servers.tftp import TftpServer

KERNEL_SIZE = 14 * 1024 * 1024


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(tool: str, package: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        sys.exit(f"{tool} not found: apt-get install {package}")
    return path


def atftp_args(port: int, name: str, out: Path, windowsize: int) -> list[str]:
    args = ["atftp", "-g", "-r", name, "-l", str(out), "--option", "blksize 1468"]
    if windowsize > 1:
        args += ["--option", f"windowsize {windowsize}"]
    return [*args, "127.0.0.1", str(port)]


def fetch_once(port: int, name: str, out: Path, windowsize: int, want: bytes) -> float:
    start = time.perf_counter()
    subprocess.run(atftp_args(port, name, out, windowsize), check=True, capture_output=True, timeout=300)
    elapsed = time.perf_counter() - start
    if out.read_bytes() != want:
        sys.exit(f"{name} arrived corrupted from port {port}")
    return elapsed


def storm(port: int, name: str, outdir: Path, count: int, windowsize: int, want: bytes) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            atftp_args(port, name, outdir / f"{i}", windowsize),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]
    codes = [proc.wait(timeout=600) for proc in procs]
    elapsed = time.perf_counter() - start
    good = sum(1 for i, code in enumerate(codes) if code == 0 and (outdir / f"{i}").read_bytes() == want)
    if good != count:
        print(f"  warning: {count - good} of {count} storm transfers failed on port {port}")
    for i in range(count):
        (outdir / f"{i}").unlink(missing_ok=True)
    return elapsed


def best_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per single transfer (median)")
    parser.add_argument("--storm", type=int, default=200, help="concurrent transfers in the storm")
    args = parser.parse_args()
    need("atftp", "atftp")
    tftpd = need("in.tftpd", "tftpd-hpa")
    ipxe = Path("/usr/lib/ipxe/ipxe.efi")
    if not ipxe.exists():
        sys.exit("ipxe.efi not found: apt-get install ipxe")

    work = Path(tempfile.mkdtemp(prefix="tftp-bench-"))
    os.chmod(work, 0o755)
    root = work / "root"
    root.mkdir()
    os.chmod(root, 0o755)
    (root / "vmlinuz").write_bytes(os.urandom(KERNEL_SIZE))
    shutil.copyfile(ipxe.resolve(), root / "ipxe.efi")
    for path in root.iterdir():
        path.chmod(0o644)
    files = {name: (root / name).read_bytes() for name in ("vmlinuz", "ipxe.efi")}
    out = work / "out"
    out.mkdir()

    hpa_port = free_udp_port()
    user = ["-u", "tftp"] if os.geteuid() == 0 else []
    hpa = subprocess.Popen(
        [tftpd, "-L", "-s", str(root), "-a", f"127.0.0.1:{hpa_port}", *user],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ours = TftpServer(
        ("127.0.0.1", 0),
        root,
        GenerationHolder(),
        CollectEvents(),
        max_transfers=1024,
        max_per_client=1024,  # every bench client is 127.0.0.1
    )
    ours.start()
    our_port = ours.address[1]
    time.sleep(0.3)  # let tftpd-hpa bind
    if hpa.poll() is not None:
        sys.exit("in.tftpd did not start")

    print("TFTP benchmark: netboot-reconcile vs tftpd-hpa 5.2 (atftpd not measured: it conflicts with")
    print("tftpd-hpa in Debian). Client: atftp 0.8 (real, RFC 7440 windowsize), blksize 1468, loopback.")
    print("tftpd-hpa ignores windowsize (no RFC 7440), so it runs lockstep in every row.")
    print(f"Single transfers: median of {args.runs}. ratio = tftpd-hpa time / our time (>1: we are faster)")
    print(f"python threads in our process before: {threading.active_count()}")
    print()
    print(f"{'case':36} {'tftpd-hpa s':>12} {'ours s':>10} {'ratio':>8}")
    try:
        for name in ("vmlinuz", "ipxe.efi"):
            for windowsize in (1, 4, 16):
                want = files[name]
                theirs = best_of(args.runs, functools.partial(fetch_once, hpa_port, name, out / "h", windowsize, want))
                mine = best_of(args.runs, functools.partial(fetch_once, our_port, name, out / "o", windowsize, want))
                label = f"{name} ({len(want) // 1024} KiB) windowsize {windowsize}"
                print(f"{label:36} {theirs:12.3f} {mine:10.3f} {theirs / mine:8.2f}")
        peak = [0]

        def watch(stop: threading.Event) -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], ours.active_transfers)
                time.sleep(0.01)

        for windowsize in (1, 16):
            want = files["ipxe.efi"]
            theirs = storm(hpa_port, "ipxe.efi", out, args.storm, windowsize, want)
            stop = threading.Event()
            watcher = threading.Thread(target=watch, args=(stop,))
            watcher.start()
            threads_during = threading.active_count()
            mine = storm(our_port, "ipxe.efi", out, args.storm, windowsize, want)
            stop.set()
            watcher.join()
            label = f"storm {args.storm}x ipxe.efi windowsize {windowsize}"
            print(f"{label:36} {theirs:12.3f} {mine:10.3f} {theirs / mine:8.2f}")
        print()
        print(
            f"our server: peak {peak[0]} concurrent transfers, python threads while serving: "
            f"{threads_during - 1} (excluding the bench's own watcher); one event loop thread."
        )
        print("targets: windowsize 1 ratio >= 1.0, windowsize 16 ratio >= 3.0, storm ratio >= 1.0")
    finally:
        ours.stop(5.0)
        hpa.terminate()
        hpa.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
