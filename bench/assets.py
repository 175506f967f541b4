"""Asset sync benchmark: `netboot-reconcile assets sync` against the seed's manual way, same ISO, same run.

Run on purpose: `.venv/bin/python -m bench.assets [--size-mib 1024] [--rounds 3]` (the tests run
`--smoke`: an 8 MiB ISO, one round). Needs nginx (nginx-light), curl, xorriso. Everything listens
on 127.0.0.1.

An ISO of --size-mib (xorriso, Rock Ridge + Joliet) holding casper/vmlinuz, casper/initrd and
filler is served by nginx on loopback. Each round, into empty directories:
- peer: `curl -o` the ISO, `sha256sum` it (compared with the published digest), then
  `xorriso -osirrox on -extract` casper/vmlinuz and casper/initrd: one after the other, as the
  seed did by hand (wget, sha256sum, mount + cp);
- ours: `netboot-reconcile assets sync` of an assets.yaml naming the ISO (url + sha256) and both
  files (from + file): download hashed while streaming, fsync, rename into the store, extract
  with pycdlib (hashed on the way), link the served paths.
Printed: median seconds of each and the ratio ours/peer (target <= 1.0x).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import asset_lab, repo_builder
from tests.support import free_port, patterned_bytes

ISO_NAME = "ubuntu-22.04.5-live-server-amd64.iso"


def build_iso(directory: Path, size_mib: int) -> tuple[Path, str]:
    kernel_mib, initrd_mib = (1, 2) if size_mib < 64 else (12, 60)
    filler = max(size_mib - kernel_mib - initrd_mib, 1)
    iso = asset_lab.make_iso(
        directory / ISO_NAME,
        {"casper/vmlinuz": patterned_bytes(kernel_mib << 20, seed=1)},
        big={"casper/initrd": initrd_mib << 20, "casper/filesystem.squashfs": filler << 20},
    )
    return iso, asset_lab.sha256_of(iso)


def peer(url: str, sha: str, work: Path) -> float:
    work.mkdir()
    iso = work / ISO_NAME
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", str(iso), url], check=True)
    digest = subprocess.run(["sha256sum", str(iso)], check=True, capture_output=True, text=True).stdout.split()[0]
    if digest != sha:
        raise SystemExit(f"peer: sha256 {digest} != {sha}")
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/casper/vmlinuz",
                    str(work / "vmlinuz"), "-extract", "/casper/initrd", str(work / "initrd")],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def ours(repo: Path, work: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reconciler", "assets", "sync", str(repo), "--assets-dir",
                           str(work)], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ours: exit {proc.returncode}\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="ISO size (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="an 8 MiB ISO, one round: does the bench still run")
    args = parser.parse_args()
    if args.smoke:
        args.size_mib, args.rounds = 8, 1
    for tool, package in (("curl", "curl"), ("xorriso", "xorriso"), ("nginx", "nginx-light")):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            sys.exit(f"{tool} not found: apt-get install {package}")

    with tempfile.TemporaryDirectory(prefix="bench-assets-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)
        upstream = tmp / "upstream"
        upstream.mkdir()
        t0 = time.perf_counter()
        iso, sha = build_iso(upstream, args.size_mib)
        print(f"ISO {iso.stat().st_size / 2**20:.0f} MiB built in {time.perf_counter() - t0:.1f} s")
        (tmp / "nginx").mkdir()
        nginx = asset_lab.Nginx(tmp / "nginx", upstream, free_port())
        try:
            url = nginx.url("/" + ISO_NAME)
            manifest = (f"assets:\n  - path: /assets/{ISO_NAME}\n    url: {url}\n    sha256: {sha}\n"
                        f"  - path: /assets/vmlinuz\n    from: /assets/{ISO_NAME}\n    file: casper/vmlinuz\n"
                        f"  - path: /assets/initrd\n    from: /assets/{ISO_NAME}\n    file: casper/initrd\n")
            repo = repo_builder.write(tmp / "repo", {"assets.yaml": manifest})
            times: dict[str, list[float]] = {"peer": [], "ours": []}
            for i in range(args.rounds):
                # alternate who goes first, so neither always meets a warmer page cache
                order = ("peer", "ours") if i % 2 == 0 else ("ours", "peer")
                for who in order:
                    work = tmp / f"{who}-{i}"
                    times[who].append(peer(url, sha, work) if who == "peer" else ours(repo, work))
                    shutil.rmtree(work)
        finally:
            nginx.stop()
    p, o = statistics.median(times["peer"]), statistics.median(times["ours"])
    print(f"{'':<8}{'median s':>10}  rounds")
    print(f"{'peer':<8}{p:>10.2f}  " + " ".join(f"{t:.2f}" for t in times["peer"]) + "   curl + sha256sum + xorriso")
    print(f"{'ours':<8}{o:>10.2f}  " + " ".join(f"{t:.2f}" for t in times["ours"]) + "   netboot-reconcile assets sync")
    print(f"ours/peer: {o / p:.2f}x (target <= 1.0x)")


if __name__ == "__main__":
    main()
