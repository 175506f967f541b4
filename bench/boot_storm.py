"""Boot storm: N QEMU guests power on at once; time until all have called back, ours vs the classic stack.

Run on purpose, as root: `.venv/bin/python bench/boot_storm.py [--sizes 4,8,16] [--firmware mix]
[--image busybox|live]` (the tests run `--smoke`: one busybox guest per stack).
Everything happens in network namespaces made here (tests/e2e/harness.Lab), deleted at the end.

For each N, twice, each in a fresh namespace with the same bridge, MACs and files:
1. ours: `netboot-reconcile run` serving DHCP (full), TFTP and HTTP from a git repo of N nodes;
2. classic: dnsmasq (DHCP + TFTP, with the `dnsmasq.conf` the daemon rendered for that commit)
   and nginx (HTTP: `/boot.ipxe`, `/ipxe?mac=` via a map to `ipxe/<node>.ipxe`, the pinned
   `/r/<sha>/assets/` and `/r/<sha>/cloud-init/` trees, `/assets/`, `/report/` answering 200 and
   logging the time of each request), serving the daemon's `generations/<sha>/` directory from
   step 1. dnsmasq also sends iPXE's no-pxedhcp
   (175.176 = 1) as our server does, unless `--classic-as-rendered`: without it iPXE waits ~3 s
   for ProxyDHCP offers, which would flatter us.
`--together`: both stacks' storms start at the same moment, each in its own namespace (same MACs,
addresses and generation), so whatever else loads the machine slows both alike: on a shared machine
the ratio is then the servers', not the minute's (the default runs ours, then classic). The smoke
runs both orchestrations.
Guests alternate SeaBIOS+iPXE ROM and OVMF PXE (`--firmware mix`), or all one kind.

`--image busybox` (default): the e2e kernel + busybox initramfs. A guest has "called back" when its
serial console shows the report it is about to POST (`E2E-REPORT-END`): the same moment for both
stacks, whatever /report answers.

`--image live`: the Debian live image of tests/e2e/liveimage.py (built once, cached in
tests/e2e/.cache), with tests/e2e/site.py's `live` profile and user-data: kernel + initrd over HTTP,
live-boot's `fetch=` pulls the 117 MiB squashfs root from `/assets/live/`, Debian's cloud-init
(22.4.x) reads the seed (`ds=nocloud;s=...;dsmode=net`), runs the user-data, POSTs `phone_home` to
`/report/phone-home/<mac>` and powers the guest off. A guest's time is its phone_home's arrival
at the server, from power-on: the daemon's recorded `phone-home` event (`netboot-reconcile
results`) for ours, nginx's log of the POST for classic. 512 MB of RAM per guest.
Measured here, once, to prove the mode (1 guest per side, SeaBIOS, load ~10-11 on 2 CPUs shared
with other runs, 2026-12-06): `--image live --sizes 1 --firmware bios` took 6 min 17 s in all;
phone_home at 137.0 s (ours) vs 208.0 s (dnsmasq + nginx), ratio 0.66. That ratio is the machine's
load, not the servers: the classic guest was slower before it touched the network too (its
cloud-init init-local started at guest uptime 145 s vs 89 s). Only the 8-guest run on an idle
machine says anything about the target.
2 and 4 guests per side (SeaBIOS, `nice -n 10 ... --image live --sizes 2,4 --firmware bios`, twice,
2026-12-06; 2 CPUs shared with other engineers' tests; 1-min load average sampled during each side,
our own guests included), time to the last phone_home:
    run at 22:45   N=2  ours 101.2 s (load 0.8-3.1)  classic 196.2 s (3.1-4.5)  ratio 0.52
                   N=4  ours 235.2 s (5.2-6.4)       classic 240.4 s (5.3-6.0)  ratio 0.98
    run at 23:02   N=2  ours  95.3 s (0.8-1.6)       classic  76.2 s (1.8-2.2)  ratio 1.25
                   N=4  ours 213.6 s (3.2-5.0)       classic 192.2 s (4.3-5.7)  ratio 1.11
The ratios swing from 0.52 to 1.25 between runs: the gaps open where a guest talks to no server.
In the first N=2 run the classic guests reached /init at guest uptime 5.1-5.6 s vs 3.1-3.4 s (the
kernel's own start) and systemd's cryptsetup target at 64-66 s vs 37-39 s; in the second N=4 run
both sides reached that target at 78-87 s, then ours took 54-58 s more to start cloud-init's
init-local (systemd start-up, before any network) vs 36 s. The squashfs (116 MiB) downloads took a
few seconds on both sides. So these numbers measure the machine's load, which moves by the minute,
not the servers; the daemon's own CPU use beside the guests was not measured separately. Running
both sides at once (one lab each, same load) or alternating `--repeat` runs on an idle machine is
what would make the ratio mean something (below: the 8-guest target run, `--together`).
The 8-guest target run (issue 29), 2026-12-07, main fc0a3d5 (the live image now enables cloud-init
whatever its systemd generator decides: before that, 1 guest in 8 on either stack reached
multi-user.target with no cloud-init unit at all under this starvation), SeaBIOS:
    `--image live --sizes 8 --firmware bios --together` at 03:31  ours 945.3 s  classic 934.3 s  ratio 1.01
                                                  again at 03:49  ours 962.9 s  classic 967.5 s  ratio 0.995
    (two runs: ours 954.1 s, classic 950.9 s on average, 1.003; 16 guests at once on 2 CPUs, other
    engineers' work beside them at nice 19, load average 20-25)
All 32 guests phoned home. The guests' own clocks agree: the median guest reached systemd (root
image fetched) at 371 vs 367 s of uptime in the first run and finished cloud-init at 874.4 vs
872.8 s; within one stack guests spread over 35-42 s, far more than the gap between stacks. The
same day, apart (ours then classic, 8 guests each, 03:04-03:30): 732.1 vs 606.9 s, ratio 1.21,
but ours ran while other engineers' installs were not yet niced (load 16-21) and classic after
(load 8-14): its median guest reached systemd at 287 vs 138 s, before it fetched anything large.
Under TCG the 8 guests' CPU decides the time; the server's share does not show. The target is met
at parity, measured with both stacks under the same load.
The tests do not run the live mode: `--smoke --image live` (one live guest per side) is two Debian
boots of ~1 min each on an idle machine plus, on a fresh machine, ~1-2 min of image build, over
the 3 minutes a smoke may cost; tests/e2e/test_cloudinit.py boots the same image through the daemon.
The full run (8 guests; needs an otherwise idle machine, ~4 GB of RAM, and up to an hour under TCG):
  `sudo .venv/bin/python bench/boot_storm.py --image live --sizes 8 --firmware bios`

Prints per-N wall times (the last guest's; median over `--repeat` storms) and the ratio
ours / classic (target <= 1.0). Under TCG the guests' CPU dominates, so expect ratios near 1.0;
the bench shows we are not the bottleneck.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.assets import build_assets, install_into
from tests.e2e.harness import Lab, Vm, serial_report, tail
from tests.e2e.liveimage import build_live_image, install_live_into
from tests.e2e.site import DaemonProcess, NodeSpec, SiteRepo, live_site_files, node_specs, site_files
from tests.pgcluster import exit_on_signals

DONE = "E2E-REPORT-END"


def storm(lab: Lab, nodes: list[NodeSpec], firmware: str, timeout: float, live: bool) -> tuple[dict[str, float], float]:
    """Power on one guest per node at once; ({mac: seconds until it finished}, wall-clock start).

    busybox: finished = its console shows the report it is about to POST. live: finished = cloud-init
    powered it off (power_state, after phone_home), which ends QEMU; the phone_home times themselves
    come from the server's side (`phone_homes_ours`, `phone_homes_classic`).
    """
    kinds = ["bios", "uefi"] if firmware == "mix" else [firmware]
    vms = [Vm(lab, n.name, n.mac, kinds[i % len(kinds)]) for i, n in enumerate(nodes)]
    for vm in vms:
        vm.tap = lab.add_tap()
    wall = time.time()
    start = time.monotonic()
    for vm in vms:
        vm.start()
    done: dict[str, float] = {}
    deadline = start + timeout
    while len(done) < len(vms) and time.monotonic() < deadline:
        for vm in vms:
            if vm.mac in done:
                continue
            if live:
                if not vm.running():
                    done[vm.mac] = time.monotonic() - start
                continue
            text = vm.serial()
            if DONE in text:
                done[vm.mac] = time.monotonic() - start
                report = serial_report(text)
                if report is None or report["status"] != "success":
                    print(f"  {vm.name} ({vm.firmware}) reported {report}", file=sys.stderr)
            elif not vm.running():
                raise RuntimeError(f"{vm.name} ({vm.firmware}) stopped without a report:\n{tail(text)}")
        time.sleep(0.2 if not live else 1.0)
    missing = [vm for vm in vms if vm.mac not in done]
    for vm in vms:
        vm.kill()
    if missing:
        raise RuntimeError(f"{len(missing)} guest(s) did not finish in {timeout:.0f} s, e.g. {missing[0].name}:\n"
                           + tail(missing[0].serial()))
    return done, wall


def phone_homes_ours(daemon: DaemonProcess, sha: str, wall: float) -> dict[str, float]:
    """{mac: seconds from power-on to the daemon recording its phone_home}, from `netboot-reconcile results`."""
    proc = daemon.results("--commit", sha)
    if proc.returncode != 0:
        raise RuntimeError(f"netboot-reconcile results exited {proc.returncode}: {proc.stderr}")
    found: dict[str, float] = {}
    for commit in json.loads(proc.stdout)["commits"]:
        for node in commit["nodes"]:
            for event in node.get("events", []):
                if event["stage"] == "phone-home":
                    found.setdefault(node["mac"], float(event["time"]) - wall)
    return found


def phone_homes_classic(log: Path, wall: float) -> dict[str, float]:
    """{mac: seconds from power-on to nginx answering its phone_home POST}, from nginx's report log."""
    found: dict[str, float] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        stamp, method, uri, _status = line.split()
        if method == "POST" and uri.startswith("/report/phone-home/"):
            found.setdefault(uri.rsplit("/", 1)[1], float(stamp) - wall)
    return found


def finished(lab: Lab, nodes: list[NodeSpec], done: dict[str, float], homes: dict[str, float] | None) -> list[float]:
    """Per guest: its phone_home's arrival (live) or its callback (busybox); raises if a guest never phoned home."""
    if homes is None:
        return [done[n.mac] for n in nodes]
    missing = [n for n in nodes if n.mac not in homes]
    if missing:
        serial = (lab.workdir / f"{missing[0].name}.serial.log").read_text(errors="replace")
        raise RuntimeError(f"{len(missing)} guest(s) powered off without a phone_home reaching the server, "
                           f"e.g. {missing[0].name}:\n{tail(serial)}")
    return [homes[n.mac] for n in nodes]


def start_ours(lab: Lab, work: Path, assets_dir: Path, n: int, live: bool) -> tuple[DaemonProcess, list[NodeSpec], str]:
    """`netboot-reconcile run` in `lab` on a repo of `n` nodes, once it serves the commit."""
    nodes = node_specs(n, first_ip=160)
    repo = SiteRepo(work / "repo")
    files = (live_site_files if live else site_files)(lab.server_ip, lab.bridge, nodes)
    sha = repo.commit(files, f"{n} nodes")
    daemon = DaemonProcess(lab, repo.path, work / "state", assets_dir)
    daemon.start()
    # served, and written: the classic stack serves generations/<sha>/ from disk, which the daemon
    # writes after it starts serving a commit (daemon.persist)
    daemon.wait_status(lambda s: s.get("last_applied_revision") == sha and s.get("persisted_revision") == sha)
    return daemon, nodes, sha


def run_ours(work: Path, assets_dir: Path, n: int, firmware: str, timeout: float,
             live: bool) -> tuple[list[float], Path, str]:
    lab = Lab(workdir=work / "ours")
    try:
        daemon, nodes, sha = start_ours(lab, work, assets_dir, n, live)
        done, wall = storm(lab, nodes, firmware, timeout, live)
        homes = phone_homes_ours(daemon, sha, wall) if live else None
        return finished(lab, nodes, done, homes), work / "state" / "generations" / sha, sha
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
  log_format stamp '$msec $request_method $uri $status';
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
    location /assets/ {{ alias {assets}/; }}
    location /report/ {{ access_log {work}/report.log stamp; return 200 "ok\\n"; }}
  }}
}}
"""


def start_classic(lab: Lab, assets_dir: Path, gen: Path, sha: str, n: int, tuned: bool) -> tuple[list[NodeSpec], Path]:
    """nginx and dnsmasq in `lab`, serving generation `gen` of our daemon, once nginx answers."""
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
    return nodes, nginx_work / "report.log"


def run_classic(work: Path, assets_dir: Path, gen: Path, sha: str, n: int, firmware: str,
                timeout: float, live: bool, tuned: bool = True) -> list[float]:
    lab = Lab(workdir=work / "classic")
    try:
        nodes, report_log = start_classic(lab, assets_dir, gen, sha, n, tuned)
        done, wall = storm(lab, nodes, firmware, timeout, live)
        return finished(lab, nodes, done, phone_homes_classic(report_log, wall) if live else None)
    finally:
        lab.close()


def run_together(work: Path, assets_dir: Path, n: int, firmware: str, timeout: float, live: bool,
                 tuned: bool = True) -> tuple[list[float], list[float]]:
    """Both stacks' storms at the same moment, each in its own namespace (same MACs and addresses):
    whatever else loads the machine loads both alike, so their ratio is the servers', not the minute's."""
    ours_lab, classic_lab = Lab(workdir=work / "ours"), Lab(workdir=work / "classic")
    try:
        daemon, nodes, sha = start_ours(ours_lab, work, assets_dir, n, live)
        _, report_log = start_classic(classic_lab, assets_dir, work / "state" / "generations" / sha, sha, n, tuned)
        pool = concurrent.futures.ThreadPoolExecutor(2)
        try:
            ours_f = pool.submit(storm, ours_lab, nodes, firmware, timeout, live)
            classic_f = pool.submit(storm, classic_lab, nodes, firmware, timeout, live)
            (ours_done, ours_wall), (classic_done, classic_wall) = ours_f.result(), classic_f.result()
        finally:
            # not `with`: stopped by a signal, it would wait for storms whose guests the labs'
            # close (below) has not killed yet; once they are, each storm ends at its next poll
            pool.shutdown(wait=False)
        ours = finished(ours_lab, nodes, ours_done, phone_homes_ours(daemon, sha, ours_wall) if live else None)
        classic = finished(classic_lab, nodes, classic_done,
                           phone_homes_classic(report_log, classic_wall) if live else None)
        return ours, classic
    finally:
        classic_lab.close()
        ours_lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8", help="comma-separated guest counts (default 4,8)")
    parser.add_argument("--firmware", choices=("bios", "uefi", "mix"), default="mix")
    parser.add_argument("--repeat", type=int, default=1, help="storms per N and stack; medians are compared")
    parser.add_argument("--timeout", type=float, help="seconds allowed for one storm (default 1200; "
                        "3600 with --image live)")
    parser.add_argument("--classic-as-rendered", action="store_true",
                        help="dnsmasq with the rendered dnsmasq.conf only (no 175.176=1 for iPXE)")
    parser.add_argument("--workdir", type=Path, help="where logs and guests' files go (default: a new temporary "
                        "directory, kept)")
    parser.add_argument("--together", action="store_true",
                        help="boot both stacks' guests at the same moment (one namespace each), so a busy machine "
                        "slows both alike; default: ours, then classic")
    parser.add_argument("--smoke", action="store_true",
                        help="one SeaBIOS guest per stack: does the bench still run (tests)")
    parser.add_argument("--image", choices=("busybox", "live"), default="busybox",
                        help="busybox: the e2e kernel + busybox initramfs (default); live: the Debian live image "
                        "running Debian's cloud-init (tests/e2e/liveimage.py), timed to the last phone_home")
    args = parser.parse_args()
    exit_on_signals()  # SIGTERM/SIGINT: the labs' `finally` kills guests, servers and namespaces
    live = args.image == "live"
    if args.smoke:
        args.sizes, args.firmware, args.repeat, args.timeout = "1", "bios", 1, 600.0
    if args.timeout is None:
        args.timeout = 3600.0 if live else 1200.0
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="boot-storm-"))
        args.workdir.chmod(0o755)  # nginx's workers (nobody) read the generation under it
    args.workdir.mkdir(parents=True, exist_ok=True)
    assets_dir = args.workdir / "assets"
    if live:
        install_live_into(build_live_image(), assets_dir)
    else:
        install_into(build_assets(), assets_dir)
    rows = []
    # The smoke runs both orchestrations (one after the other, then at once), so neither can rot.
    for together in ([False, True] if args.smoke else [args.together]):
        for n in (int(x) for x in args.sizes.split(",")):
            ours_runs: list[float] = []
            classic_runs: list[float] = []
            for r in range(args.repeat):
                work = args.workdir / f"n{n}-r{r}" / ("together" if together else "apart")
                if together:
                    ours, classic = run_together(work, assets_dir, n, args.firmware, args.timeout, live,
                                                 tuned=not args.classic_as_rendered)
                else:
                    ours, gen, sha = run_ours(work, assets_dir, n, args.firmware, args.timeout, live)
                    classic = run_classic(work, assets_dir, gen, sha, n, args.firmware, args.timeout, live,
                                          tuned=not args.classic_as_rendered)
                ours_runs.append(max(ours))
                classic_runs.append(max(classic))
                print(f"N={n:3d} {'together' if together else 'apart'} run {r + 1}: ours {max(ours):7.1f} s "
                      f"(median guest {statistics.median(ours):.1f})  classic {max(classic):7.1f} s "
                      f"(median guest {statistics.median(classic):.1f})  ratio {max(ours) / max(classic):.2f}",
                      flush=True)
            rows.append((n, "together" if together else "apart", statistics.median(ours_runs),
                         statistics.median(classic_runs)))
    print("\nN    storms    ours(s)  dnsmasq+nginx(s)  ratio (target <= 1.0; medians over --repeat runs)")
    for n, mode, o, c in rows:
        print(f"{n:<4d} {mode:<8s} {o:8.1f}  {c:16.1f}  {o / c:5.2f}")
    print(f"logs: {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
