"""One BMC operation in a child process, bounded in time: the daemon's way to call `adapters.bmc`.

Called by the daemon's rollout runner (`daemon.rollouts`). pyghmi keeps IPMI sessions in
process-wide state driven by its own I/O thread; a second operation on a BMC whose earlier session
went stale was seen to hang in it for good (a rollout's second power cycle of a guest), whatever
timeout was asked. A child process per operation makes each call independent and lets the parent
enforce the bound: past it the child is killed and the call fails with `BmcError` ("no answer").

The credential goes to the child on its stdin (never argv, never the environment), and the
child's answer is one JSON line on stdout: `{"state": "on"}` or `{"error": "..."}` (already
scrubbed of the password by `adapters.bmc`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from reconciler.adapters import bmc as bmcs
from reconciler.adapters.bmccreds import Credential
from reconciler.core.model import Bmc


def operate(bmc: Bmc, credential: Credential, action: bmcs.Action, pxe_once: bool = False,
            timeout: float = bmcs.TIMEOUT) -> str:
    """`adapters.bmc.operate` in a child process; the whole call is bounded by 3 x `timeout` + 30 s
    (a cycle waits for off, then for on, after a login)."""
    request = {"driver": bmc.driver, "host": bmc.host, "port": bmc.port, "credentials": bmc.credentials,
               "verify_ca": bmc.verify_ca,
               "username": credential.username, "password": credential.password, "action": action,
               "pxe_once": pxe_once, "timeout": timeout}
    bound = 3 * timeout + 30
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.adapters.bmcproc"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = proc.communicate(json.dumps(request), timeout=bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise bmcs.BmcError(f"BMC {bmc.driver} {bmc.address}: no answer within {bound:.0f} s") from None
    try:
        answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        answer = {}
    if "state" in answer:
        return str(answer["state"])
    raise bmcs.BmcError(str(answer.get("error") or f"BMC {bmc.driver} {bmc.address}: the BMC client exited "
                                                    f"{proc.returncode} without an answer"))


def _child() -> int:
    request = json.loads(sys.stdin.read())
    bmc = Bmc(driver="redfish" if request["driver"] == "redfish" else "ipmi", host=request["host"],
              port=request["port"], credentials=request["credentials"], verify_ca=request["verify_ca"])
    credential = Credential(request["username"], request["password"])
    try:
        state = bmcs.operate(bmc, credential, request["action"], bool(request["pxe_once"]), float(request["timeout"]))
    except bmcs.BmcError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"state": state}), flush=True)
    return 0


if __name__ == "__main__":
    code = _child()
    sys.stdout.flush()
    os._exit(code)  # without waiting for a library's I/O thread
