"""OpenIPMI's `ipmi_sim` (Debian openipmi) as a test BMC on loopback, with a `chassis_control`
program of the test's own (ipmi_sim refuses `chassis bootdev` without one, and power goes
through it too). Used by tests/integration/test_power_ipmi.py, test_rollout_daemon.py and the
QEMU rollout in tests/e2e/test_rollout.py (whose chassis program starts and stops a guest).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, require_tool, udp_port_taken

PASSWORD = "pw-Zq8xT3vY"  # the test BMCs'; looked for in every output

# Keeps the chassis' power state in a file and records every request; at a power-on it consumes
# a pending `pxe` boot device the way a real BMC's firmware would (recording it as `booted: pxe`).
CHASSIS = '''#!{python}
import json, sys
state_file, log_file = {state!r}, {log!r}
try:
    with open(state_file) as fh:
        state = json.load(fh)
except OSError:
    state = {{"power": 0, "boot": "default"}}
op, rest = sys.argv[1], sys.argv[2:]
with open(log_file, "a") as log:
    log.write(json.dumps([op, *rest]) + "\\n")
    if op == "get":
        for parm in rest:
            print(f"{{parm}}:{{state.get(parm, 0)}}")
    elif op == "set":
        for parm, value in zip(rest[::2], rest[1::2]):
            if parm == "power" and value == "1" and state["power"] == 0:
                log.write(json.dumps(["booted", state["boot"]]) + "\\n")
                state["boot"] = "default"  # a one-time boot device is used up by the boot
            if parm == "power":
                state["power"] = int(value)
            else:
                state[parm] = value
with open(state_file, "w") as fh:
    json.dump(state, fh)
'''


@dataclass
class Sim:
    port: int
    dir: Path

    def events(self) -> list[list[str]]:
        path = self.dir / "chassis.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.dir / "state.json").read_text()))


def write_chassis(d: Path) -> Path:
    """The recording chassis program above, in `d` (its state.json and chassis.log there too)."""
    d.mkdir(parents=True, exist_ok=True)
    chassis = d / "chassis.py"
    chassis.write_text(CHASSIS.format(python=sys.executable, state=str(d / "state.json"), log=str(d / "chassis.log")))
    chassis.chmod(0o755)
    return chassis


Popen = Callable[..., "subprocess.Popen[bytes]"]


@contextmanager
def ipmi_sim(d: Path, chassis: Path | None = None, vm_port: int | None = None, password: str = PASSWORD, *,
             port: int | None = None, popen: Popen = subprocess.Popen,
             taken: Callable[[int], bool] = udp_port_taken) -> Iterator[Sim]:
    """An ipmi_sim serving IPMI over LAN on a free 127.0.0.1 UDP port, user admin / `password`;
    `vm_port`: also listening there for a QEMU `ipmi-bmc-extern` chardev (the guest's KCS).
    `port`, `popen`, `taken`: another network namespace's (tests/e2e/test_rollout.py)."""
    binary = require_tool("ipmi_sim", "openipmi")
    (d / "state").mkdir(parents=True, exist_ok=True)
    chassis = chassis or write_chassis(d)
    port = port or free_port(socket.SOCK_DGRAM)
    vm = f"  serial 15 127.0.0.1 {vm_port} codec VM\n" if vm_port is not None else ""
    (d / "lan.conf").write_text(f'''name "bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
{vm}  chassis_control "{chassis}"
user 2 true "admin" "{password}" admin 10 none md2 md5 straight
''')
    (d / "emu.cmd").write_text("mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
                               "mc_enable 0x20\n")
    out = open(d / "ipmi_sim.log", "wb")  # noqa: SIM115 (the child owns it)
    proc = popen([binary, "-c", str(d / "lan.conf"), "-f", str(d / "emu.cmd"), "-s", str(d / "state"),
                             "-n", "-p"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    try:
        for _ in range(100):
            if taken(port) or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not taken(port):
            pytest.fail(f"ipmi_sim did not start on 127.0.0.1:{port}: {(d / 'ipmi_sim.log').read_text()}")
        yield Sim(port, d)
    finally:
        proc.terminate()
        proc.wait(10)
