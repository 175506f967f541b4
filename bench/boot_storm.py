"""Boot storm: N QEMU guests power on at once; time until all have called back, ours vs the classic stack.

Run on purpose, as root: `.venv/bin/python bench/boot_storm.py [--sizes 4,8,16] [--firmware mix]`
(the tests run `--smoke`: one guest per stack).
Everything happens in network namespaces made here (tests/e2e/harness.Lab), deleted at the end.

For each N, twice, each in a fresh namespace with the same bridge, MACs and files:
1. ours: `netboot-reconcile run` serving DHCP (full), TFTP and HTTP from a git repo of N nodes;
2. classic: dnsmasq (DHCP + TFTP, with the `dnsmasq.conf` the daemon rendered for that commit)
   and nginx (HTTP: `/boot.ipxe`, `/ipxe?mac=` via a map to `ipxe/<node>.ipxe`, the pinned
   `/r/<sha>/assets/` and `/r/<sha>/cloud-init/` trees, `/report/` answering 200), serving the
   daemon's `generations/<sha>/` directory from step 1. dnsmasq also sends iPXE's no-pxedhcp
   (175.176 = 1) as our server does, unless `--classic-as-rendered`: without it iPXE waits ~3 s
   for ProxyDHCP offers, which would flatter us.
Guests alternate SeaBIOS+iPXE ROM and OVMF PXE (`--firmware mix`), or all one kind.
A guest has "called back" when its serial console shows the report it is about to POST
(`E2E-REPORT-END`): the same moment for both stacks, whatever /report answers.
Prints per-N wall times (the last guest's callback; median over `--repeat` storms) and the ratio
ours / classic (target <= 1.0). Under TCG the guests'
CPU dominates, so expect ratios near 1.0; the bench shows we are not the bottleneck.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.assets import build_assets, install_into
from tests.e2e.harness import Lab, Vm, serial_report, tail
from tests.e2e.site import DaemonProcess, NodeSpec, SiteRepo, node_specs, site_files

DONE = "E2E-REPORT-END"


def storm(lab: Lab, nodes: list[NodeSpec], firmware: str, timeout: float) -> list[float]:
    """Power on one guest per node at once; seconds until each printed its report."""
    kinds = ["bios", "uefi"] if firmware == "mix" else [firmware]
    vms = [Vm(lab, n.name, n.mac, kinds[i % len(kinds)]) for i, n in enumerate(nodes)]
    for vm in vms:
        vm.tap = lab.add_tap()
    start = time.monotonic()
    for vm in vms:
        vm.start()
    done: dict[str, float] = {}
    deadline = start + timeout
    while len(done) < len(vms) and time.monotonic() < deadline:
        for vm in vms:
            if vm.name in done:
                continue
            text = vm.serial()
            if DONE in text:
                done[vm.name] = time.monotonic() - start
                report = serial_report(text)
                if report is None or report["status"] != "success":
                    print(f"  {vm.name} ({vm.firmware}) reported {report}", file=sys.stderr)
            elif not vm.running():
                raise RuntimeError(f"{vm.name} ({vm.firmware}) stopped without a report:\n{tail(text)}")
        time.sleep(0.2)
    missing = [vm for vm in vms if vm.name not in done]
    for vm in vms:
        vm.kill()
    if missing:
        raise RuntimeError(f"{len(missing)} guest(s) did not call back in {timeout:.0f} s, e.g. {missing[0].name}:\n"
                           + tail(missing[0].serial()))
    return [done[vm.name] for vm in vms]


def run_ours(work: Path, assets_dir: Path, n: int, firmware: str, timeout: float) -> tuple[list[float], Path, str]:
    lab = Lab(workdir=work / "ours")
    try:
        nodes = node_specs(n, first_ip=160)
        repo = SiteRepo(work / "repo")
        sha = repo.commit(site_files(lab.server_ip, lab.bridge, nodes), f"{n} nodes")
        daemon = DaemonProcess(lab, repo.path, work / "state", assets_dir)
        daemon.start()
        daemon.wait_status(lambda s: s.get("last_applied_revision") == sha)
        times = storm(lab, nodes, firmware, timeout)
        return times, work / "state" / "generations" / sha, sha
    finally:
        lab.close()


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx.error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  default_type text/plain;
  map $arg_mac $node {{
    default "";
{map}
  }}
  server {{
    listen {ip}:80;
    root {gen};
    location = /boot.ipxe {{ }}
    location = /ipxe {{ try_files /ipxe/$node.ipxe =404; }}
    location /r/{sha}/assets/ {{ alias {assets}/; }}
    location /r/{sha}/cloud-init/ {{ alias {gen}/cloud-init/; }}
    location /report/ {{ return 200 "ok\\n"; }}
  }}
}}
"""


def run_classic(work: Path, assets_dir: Path, gen: Path, sha: str, n: int, firmware: str,
                timeout: float, tuned: bool = True) -> list[float]:
    lab = Lab(workdir=work / "classic")
    try:
        nodes = node_specs(n, first_ip=160)
        nginx_work = lab.workdir / "nginx"
        nginx_work.mkdir()
        mapping = "\n".join(f'    "{nd.mac.replace(":", "-")}" "{nd.name}";' for nd in nodes)
        conf = nginx_work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=nginx_work, map=mapping, ip=lab.server_ip, gen=gen, sha=sha,
                                          assets=assets_dir))
        lab.popen(["nginx", "-c", str(conf)], stdout=(nginx_work / "out.log").open("w"), stderr=subprocess.STDOUT)
        # tuned: iPXE's no-pxedhcp (175.176 = 1, as our DHCP server sends), else iPXE waits for ProxyDHCP
        tuning = ["--dhcp-option=encap:175,176,1b"] if tuned else []
        lab.popen(["dnsmasq", "--no-daemon", "--port=0", "--conf-file=" + str(gen / "dnsmasq.conf"), *tuning,
                   "--bind-interfaces", "--enable-tftp", "--tftp-root=/usr/lib/ipxe",
                   f"--dhcp-leasefile={lab.workdir / 'dnsmasq.leases'}", f"--pid-file={lab.workdir / 'dnsmasq.pid'}"],
                  stdout=(lab.workdir / "dnsmasq.log").open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while lab.http_get(f"http://{lab.server_ip}/boot.ipxe", timeout=5)[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not serve /boot.ipxe; see {nginx_work}")
            time.sleep(0.3)
        return storm(lab, nodes, firmware, timeout)
    finally:
        lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8", help="comma-separated guest counts (default 4,8)")
    parser.add_argument("--firmware", choices=("bios", "uefi", "mix"), default="mix")
    parser.add_argument("--repeat", type=int, default=1, help="storms per N and stack; medians are compared")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed for one storm")
    parser.add_argument("--classic-as-rendered", action="store_true",
                        help="dnsmasq with the rendered dnsmasq.conf only (no 175.176=1 for iPXE)")
    parser.add_argument("--workdir", type=Path, help="where logs and guests' files go (default: a new temporary "
                        "directory, kept)")
    parser.add_argument("--smoke", action="store_true",
                        help="one SeaBIOS guest per stack: does the bench still run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.firmware, args.repeat, args.timeout = "1", "bios", 1, 600.0
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="boot-storm-"))
        args.workdir.chmod(0o755)  # nginx's workers (nobody) read the generation under it
    assets = build_assets()
    args.workdir.mkdir(parents=True, exist_ok=True)
    assets_dir = args.workdir / "assets"
    install_into(assets, assets_dir)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        ours_runs: list[float] = []
        classic_runs: list[float] = []
        for r in range(args.repeat):
            work = args.workdir / f"n{n}-r{r}"
            ours, gen, sha = run_ours(work, assets_dir, n, args.firmware, args.timeout)
            classic = run_classic(work, assets_dir, gen, sha, n, args.firmware, args.timeout,
                                  tuned=not args.classic_as_rendered)
            ours_runs.append(max(ours))
            classic_runs.append(max(classic))
            print(f"N={n:3d} run {r + 1}: ours {max(ours):7.1f} s (median guest {statistics.median(ours):.1f})  "
                  f"classic {max(classic):7.1f} s (median guest {statistics.median(classic):.1f})  "
                  f"ratio {max(ours) / max(classic):.2f}", flush=True)
        rows.append((n, statistics.median(ours_runs), statistics.median(classic_runs)))
    print("\nN    ours(s)  dnsmasq+nginx(s)  ratio (target <= 1.0; medians over --repeat runs)")
    for n, o, c in rows:
        print(f"{n:<4d} {o:8.1f}  {c:16.1f}  {o / c:5.2f}")
    print(f"logs: {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
