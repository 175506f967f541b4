"""A rollout of QEMU guests whose BMCs are OpenIPMI's ipmi_sim: `git push` reinstalls them in waves.

Four guests (SeaBIOS + the NIC's iPXE ROM, 256 MiB, TCG, `nice -n 10`), each with its own
ipmi_sim as BMC inside the lab namespace: the guest has an IPMI KCS interface (`isa-ipmi-kcs`)
wired to its ipmi_sim over a chardev (`ipmi-bmc-extern`), and the ipmi_sim's `chassis_control`
program (written here) is the guest's power: power-on starts the QEMU process, power-off kills it,
power state is whether it runs. No firmware here reads the BMC's boot device, so the program
turns a pending `pxe` boot device into QEMU's `-boot once=n` at the next power-on (what a real
BMC's firmware does) and consumes it; without one the guest boots its (absent) disk. The
daemon, serving DHCP/TFTP/HTTP on the lab bridge, reaches the BMCs over the namespace's
loopback, as `bmc:` says: a group gives `driver` and `credentials`, each node file its `address`
(vm-2, which boots another profile than the group's, gives all three itself).

The story (the issue's test): commit 1 declares the four nodes, their BMCs and `rollout:
{max_in_flight: 2, on_failure: pause, power: true}`; nothing is powered. Commit 2 bumps every
node's `reinstall`, and vm-2 boots a profile whose seed URL is wrong (its initramfs reports
failure). The daemon power-cycles vm-1 and vm-2 with a one-time PXE; both netboot commit 2 and
report; vm-2's failure pauses the rollout: vm-3 and vm-4 are never powered. Commit 3 fixes vm-2's
profile and bumps its reinstall: the rollout resumes under it, vm-2 netboots again and succeeds,
then vm-3 and vm-4 follow, at most two at a time, and the rollout is done.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.assets import BootAssets, install_into
from tests.e2e.harness import Lab, Vm, tail
from tests.e2e.site import DaemonProcess, NodeSpec, SiteRepo, node_specs, site_files
from tests.ipmi_support import PASSWORD, ipmi_sim
from tests.support import write_bmc_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(3000)]

ROLLOUT_TIMEOUT = 1800  # seconds for the whole rollout on a loaded 2-core machine (a bound, not an expectation)
BMC_PORT, KCS_PORT = 6230, 9000  # + the guest's number, on the lab namespace's loopback

# The guest's power, run by ipmi_sim as `chassis.py get power boot` / `set power 1` / `set boot pxe`.
CHASSIS = '''#!{python}
import json, os, signal, subprocess, sys
state_file, log_file, qemu = {state!r}, {log!r}, {qemu!r}
try:
    with open(state_file) as fh:
        state = json.load(fh)
except OSError:
    state = {{"pid": 0, "boot": "default", "boots": 0}}

def running():
    pid = state.get("pid") or 0
    try:
        with open(f"/proc/{{pid}}/stat") as fh:
            return pid > 0 and fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False

op, rest = sys.argv[1], sys.argv[2:]
with open(log_file, "a") as log:
    log.write(json.dumps([op, *rest]) + "\\n")
    if op == "get":
        for parm in rest:
            print(f"{{parm}}:{{int(running()) if parm == 'power' else 0}}")
    elif op == "set":
        for parm, value in zip(rest[::2], rest[1::2]):
            if parm == "power" and value == "1" and not running():
                boot = state["boot"]
                state["boots"] += 1
                log.write(json.dumps(["booted", boot, state["boots"]]) + "\\n")
                cmd = list(qemu) + ["-boot", "once=n" if boot == "pxe" else "order=c"]
                out = open(qemu_log := state_file + ".qemu.log", "ab")
                state["pid"] = subprocess.Popen(["nice", "-n", "10", *cmd], stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True).pid
                state["boot"] = "default"  # a one-time boot device is used up by the boot
            elif parm == "power" and value == "0" and running():
                os.kill(state["pid"], signal.SIGKILL)
                try:
                    os.waitpid(state["pid"], 0)
                except ChildProcessError:
                    pass
            elif parm == "boot":
                state["boot"] = value
with open(state_file, "w") as fh:
    json.dump(state, fh)
'''


@dataclass
class Guest:
    spec: NodeSpec
    dir: Path
    vm: Vm

    def events(self) -> list[list[Any]]:
        path = self.dir / "chassis.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def boots(self) -> list[str]:
        return [e[1] for e in self.events() if e[0] == "booted"]

    def pid(self) -> int:
        try:
            return int(json.loads((self.dir / "state.json").read_text()).get("pid") or 0)
        except (OSError, ValueError):
            return 0


def _qemu_command(vm: Vm, kcs_port: int) -> list[str]:
    """The harness's BIOS guest, smaller, its boot order left to the chassis program, with a KCS
    interface wired to its ipmi_sim."""
    cmd = vm.command()
    i = cmd.index("-boot")
    del cmd[i:i + 2]
    return [*cmd, "-chardev", f"socket,id=ipmi0,host=127.0.0.1,port={kcs_port},reconnect=10",
            "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "-device", "isa-ipmi-kcs,bmc=bmc0"]


def _taken_in(lab: Lab) -> Any:
    probe = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
             "try:\n s.bind(('127.0.0.1',int(sys.argv[1])))\nexcept OSError:\n sys.exit(0)\nsys.exit(1)\n")
    return lambda port: lab.run(sys.executable, "-c", probe, str(port)).returncode == 0


@pytest.fixture
def lab(boot_assets: BootAssets, tmp_path: Path) -> Iterator[Lab]:
    os.chmod(tmp_path, 0o755)
    built = Lab(workdir=tmp_path)
    try:
        yield built
    finally:
        built.close()


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    return daemon.status().get("rollout") or {}


def _wait(daemon: DaemonProcess, what: str, predicate: Any, guests: list[Guest], timeout: float,
          running: list[int]) -> dict[str, Any]:
    """Poll the daemon's /status rollout until `predicate`; `running` gets the number of guests
    powered on at each poll (sampled: what the chassis programs say runs)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        running.append(sum(1 for g in guests if g.pid() and _alive(g.pid())))
        try:
            last = _status(daemon)
        except (RuntimeError, ValueError):
            last = {}
        if predicate(last):
            return last
        time.sleep(2)
    consoles = "\n".join(f"--- {g.spec.name} boots {g.boots()}\n{tail(g.vm.serial(), 15)}" for g in guests)
    pytest.fail(f"timed out waiting for {what}; rollout: {json.dumps(last)[:2000]}\n{consoles}\n"
                f"daemon log:\n{tail(daemon.log_text(), 60)}")


def test_four_guests_reinstall_in_waves_of_two_a_failure_pauses_and_a_fix_resumes(
        lab: Lab, boot_assets: BootAssets, tmp_path: Path) -> None:
    specs = node_specs(4)
    assets_dir = tmp_path / "assets"
    install_into(boot_assets, assets_dir)
    creds = tmp_path / "bmc-credentials.yaml"
    write_bmc_credentials(creds, "lab", PASSWORD)
    guests: list[Guest] = []
    with ExitStack() as stack:
        for n, spec in enumerate(specs, start=1):
            d = tmp_path / f"bmc-{spec.name}"
            d.mkdir()
            vm = Vm(lab, spec.name, spec.mac, "bios", memory=256)
            vm.tap = lab.add_tap()
            chassis = d / "chassis.py"
            chassis.write_text(CHASSIS.format(python=sys.executable, state=str(d / "state.json"),
                                              log=str(d / "chassis.log"), qemu=_qemu_command(vm, KCS_PORT + n)))
            chassis.chmod(0o755)
            stack.enter_context(ipmi_sim(d, chassis, vm_port=KCS_PORT + n, port=BMC_PORT + n, popen=lab.popen,
                                         taken=_taken_in(lab)))
            guests.append(Guest(spec, d, vm))
        stack.callback(_kill_guests, guests)

        files = site_files(lab.server_ip, lab.bridge, specs)
        broken = files["profiles/e2e.yaml"].replace("ds=nocloud;s={{ cloud_init_url }}",
                                                    "ds=nocloud;s={{ server_url }}/no-such-seed/")
        assert broken != files["profiles/e2e.yaml"]
        files["profiles/e2e-broken.yaml"] = broken
        files["groups/bmcs.yaml"] = "profile: e2e\nselector: {rack: r1}\nbmc: {driver: ipmi, credentials: lab}\n"
        for n, spec in enumerate(specs, start=1):
            if spec.name == "vm-2":  # boots another profile than the group's: its file gives its whole bmc:
                files[f"nodes/{spec.name}.yaml"] += (f"bmc: {{driver: ipmi, address: '127.0.0.1:{BMC_PORT + n}', "
                                                     "credentials: lab}\n")
            else:
                files[f"nodes/{spec.name}.yaml"] += (f"labels: {{rack: r1}}\n"
                                                     f"bmc: {{address: '127.0.0.1:{BMC_PORT + n}'}}\n")
        files["netboot.yaml"] += "rollout: {max_in_flight: 2, on_failure: pause, power: true}\n"
        repo = SiteRepo(tmp_path / "repo")
        first = repo.commit(files, "four nodes, their BMCs, a rollout policy")
        daemon = DaemonProcess(lab, repo.path, tmp_path / "state", assets_dir)
        daemon.cmd += ["--bmc-credentials", str(creds)]
        daemon.start()
        daemon.wait_status(lambda s: s.get("last_applied_revision") == first, timeout=60)
        assert _status(daemon) == {} and all(g.boots() == [] for g in guests)  # nothing to reinstall

        bump = {f"nodes/{s.name}.yaml": files[f"nodes/{s.name}.yaml"] + "reinstall: 1\n" for s in specs}
        bump["nodes/vm-2.yaml"] = bump["nodes/vm-2.yaml"].replace("profile: e2e\n", "profile: e2e-broken\n")
        second = repo.commit(bump, "reinstall all four; vm-2 with a broken seed URL")
        started = time.monotonic()
        running: list[int] = []
        paused = _wait(daemon, "vm-2's failure to pause the rollout",
                       lambda r: r.get("revision") == second and r.get("state") == "paused"
                       and "in-flight" not in {v.split(":")[0] for v in r["nodes"].values()}, guests,
                       ROLLOUT_TIMEOUT, running)
        assert paused["paused"].startswith("vm-2 failed: its boot failed: report failure"), paused
        assert paused["nodes"]["vm-1"].startswith("done") and paused["nodes"]["vm-4"] == "waiting", paused
        # vm-3 starts only if vm-1 succeeded before vm-2 failed (they boot side by side); vm-4 never.
        assert guests[0].boots() == ["pxe"] and guests[1].boots() == ["pxe"] and guests[3].boots() == []
        assert "E2E: done success" in guests[0].vm.serial() and "E2E: done failure" in guests[1].vm.serial()
        vm3_first = guests[2].boots() == ["pxe"]

        fixed = {"nodes/vm-2.yaml": bump["nodes/vm-2.yaml"].replace("profile: e2e-broken\n", "profile: e2e\n")
                 .replace("reinstall: 1\n", "reinstall: 2\n")}
        third = repo.commit(fixed, "vm-2: fix its profile, reinstall again")
        done = _wait(daemon, "the rollout to finish under the fixing commit",
                     lambda r: r.get("revision") == third and r.get("state") == "done", guests, ROLLOUT_TIMEOUT,
                     running)
        elapsed = time.monotonic() - started
        assert {"vm-2", "vm-4"} <= set(done["nodes"]) <= {"vm-2", "vm-3", "vm-4"}, done
        assert [g.boots() for g in guests] == [["pxe"], ["pxe", "pxe"], ["pxe"], ["pxe"]]
        assert all("E2E: done success" in g.vm.serial() for g in guests)
        assert max(running) <= 2, running  # never more than max_in_flight guests powered at once

        history = json.loads(daemon.lab.http_get(f"{daemon.base}/api/rollouts")[1])["history"]
        assert [(h["revision"], h["state"]) for h in history] == [(third, "done"), (second, "superseded")]
        log = daemon.log_text()
        assert PASSWORD not in log and "Traceback" not in log
        print(f"rollout of 4 guests (5 TCG boots, 2 at a time, nice -n 10, shared 2 CPUs): {elapsed:.0f} s; "
              f"vm-3 started before the pause: {vm3_first}")
        daemon.stop()


def _kill_guests(guests: list[Guest]) -> None:
    """The QEMU processes the chassis programs started (not the lab's: it does not know them)."""
    for g in guests:
        pid = g.pid()
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie: this machine's init does not reap what the chassis programs leave."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
