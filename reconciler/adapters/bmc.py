"""Power control through a node's BMC: IPMI over LAN (pyghmi) or Redfish (sushy), one interface.

Called by `commands.power` and (through `adapters.bmcproc`) the daemon's rollouts.
`operate(bmc, credential, action, pxe_once)` does one of on, off, cycle, status (and, for
rollouts, clear-boot-override: Redfish's override back to none once the machine netbooted) and
returns the power state it leaves ("on" or "off"). `--pxe-once` sets a
one-time network boot before powering on: IPMI's chassis boot device `pxe` (not persistent),
Redfish's `BootSourceOverrideEnabled: Once`, `BootSourceOverrideTarget: Pxe`. `cycle` is off,
then on (also when the machine was off), so the one-time boot applies to the power-on.

A Redfish service may read the override back as `Continuous` (sushy-tools' libvirt driver, some
BMCs): kept for every boot. Rollouts set it back once they see the node netboot. `power` sees no
netboot, so with `clear_kept` (the CLI's) `operate` sets it back (`clear_boot_override`) as soon
as the power-on it was set for reports on: libvirt takes a domain's boot order when it starts
it. `on` of a machine already on leaves it, for the machine's next boot.

Redfish checks the BMC's TLS certificate as `bmc.verify_ca` says (Ironic's `redfish_verify_ca`):
true, the system's CAs; a path, that CA bundle; false, no check. A certificate that fails the
check is refused with a message saying so and what to set.

Every failure, a refusal or a timeout, raises `BmcError` naming the driver and address; the
password never appears in it (the library's message is scrubbed of it as well).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

from reconciler.adapters.bmccreds import Credential
from reconciler.core.model import Bmc

Action = Literal["on", "off", "cycle", "status", "clear-boot-override"]
ACTIONS: tuple[Action, ...] = ("on", "off", "cycle", "status")  # the CLI's (clear-boot-override: rollouts)
T = TypeVar("T")
TIMEOUT = 30.0  # seconds a power change may take to show in the BMC's power state


class BmcError(Exception):
    """A BMC refused, failed or did not answer; the message names it and never a secret."""


class Client(Protocol):
    def power_state(self) -> str: ...  # "on" | "off"
    def set_power(self, on: bool) -> None: ...  # returns once the BMC reports the new state
    def pxe_once(self) -> bool: ...  # whether the BMC keeps it beyond the next boot
    def clear_boot_override(self) -> None: ...  # after the network boot: boot as configured again


class IpmiClient:
    """IPMI 2.0 over LAN (RMCP+) through pyghmi; its session login has its own retry bound."""

    def __init__(self, bmc: Bmc, credential: Credential, timeout: float) -> None:
        from pyghmi.ipmi import command

        self._timeout = timeout
        self._cmd = command.Command(bmc=bmc.host, userid=credential.username, password=credential.password,
                                    port=bmc.port or 623)

    def power_state(self) -> str:
        return str(self._cmd.get_power()["powerstate"])

    def set_power(self, on: bool) -> None:
        self._cmd.set_power("on" if on else "off", wait=self._timeout)

    def pxe_once(self) -> bool:
        self._cmd.set_bootdev("network", persist=False)
        return False  # not persistent (pyghmi's read-back cannot be trusted: ipmi_sim never sets its valid bit)

    def clear_boot_override(self) -> None:
        """Nothing to do: an IPMI boot device set without persist is used up by the boot."""


class RedfishClient:
    """Redfish through sushy: the service's first (usually only) ComputerSystem, over https."""

    def __init__(self, bmc: Bmc, credential: Credential, timeout: float) -> None:
        import sushy

        self._sushy = sushy
        self._timeout = timeout
        port = f":{bmc.port}" if bmc.port else ""
        host = f"[{bmc.host}]" if ":" in bmc.host else bmc.host
        verify = bmc.verify_ca
        if isinstance(verify, str) and not os.path.isfile(verify):
            raise BmcError(f"bmc.verify_ca {verify}: no such file (a CA bundle, PEM, on this host)")
        root = sushy.Sushy(f"https://{host}{port}/redfish/v1/", username=credential.username,
                           password=credential.password, verify=verify, server_side_retries=0,
                           connect_timeout=timeout, read_timeout=timeout)
        members = root.get_system_collection().members_identities
        if not members:
            raise BmcError("the Redfish service lists no ComputerSystem")
        self._system = root.get_system(sorted(members)[0])

    def power_state(self) -> str:
        self._system.refresh()
        return "on" if self._system.power_state == self._sushy.POWER_STATE_ON else "off"

    def set_power(self, on: bool) -> None:
        import time

        self._system.reset_system(self._sushy.RESET_ON if on else self._sushy.RESET_FORCE_OFF)
        deadline = time.monotonic() + self._timeout
        while self.power_state() != ("on" if on else "off"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"power state not {'on' if on else 'off'} after {self._timeout:.0f} s")
            time.sleep(1)

    def pxe_once(self) -> bool:
        self._system.set_system_boot_options(target=self._sushy.BOOT_SOURCE_TARGET_PXE,
                                             enabled=self._sushy.BOOT_SOURCE_ENABLED_ONCE)
        self._system.refresh()
        return bool(self._system.boot.enabled != self._sushy.BOOT_SOURCE_ENABLED_ONCE)

    def clear_boot_override(self) -> None:
        """Override off: services that keep `Once` as `Continuous` (sushy-tools' libvirt driver, some
        BMCs) would netboot the machine at every boot after its reinstall. Target `None` where the
        service allows it, else its disk (`Hdd`: sushy-tools lists no `None`), enabled `Disabled`."""
        sushy = self._sushy
        allowed = self._system.get_allowed_system_boot_source_values()
        target = sushy.BOOT_SOURCE_TARGET_NONE if sushy.BOOT_SOURCE_TARGET_NONE in allowed \
            else sushy.BOOT_SOURCE_TARGET_HDD
        self._system.set_system_boot_options(target=target, enabled=sushy.BOOT_SOURCE_ENABLED_DISABLED)


def connect(bmc: Bmc, credential: Credential, timeout: float = TIMEOUT) -> Client:
    kind: type[IpmiClient] | type[RedfishClient] = IpmiClient if bmc.driver == "ipmi" else RedfishClient
    return _guarded(bmc, credential, lambda: kind(bmc, credential, timeout))


def operate(bmc: Bmc, credential: Credential, action: Action, pxe_once: bool = False,
            timeout: float = TIMEOUT, clear_kept: bool = False) -> str:
    client = connect(bmc, credential, timeout)

    def run() -> str:
        if action == "status":
            return client.power_state()
        if action == "clear-boot-override":
            client.clear_boot_override()
            return client.power_state()
        if action in ("off", "cycle"):
            client.set_power(False)
        if action in ("on", "cycle"):
            starts = action == "cycle" or client.power_state() == "off"
            kept = client.pxe_once() if pxe_once else False
            client.set_power(True)
            if kept and starts and clear_kept:
                client.clear_boot_override()
        return client.power_state()

    return _guarded(bmc, credential, run)


def _guarded(bmc: Bmc, credential: Credential, call: Callable[[], T]) -> T:
    try:
        return call()
    except BmcError as exc:
        raise BmcError(_describe(bmc, credential, str(exc))) from None
    except Exception as exc:  # the libraries raise their own exception types, socket errors, timeouts
        untrusted = _untrusted(exc)
        if untrusted:
            against = f"the CA bundle {bmc.verify_ca}" if isinstance(bmc.verify_ca, str) else "the system's CAs"
            raise BmcError(_describe(bmc, credential, (
                f"TLS certificate not trusted ({untrusted}; checked against {against}): set bmc.verify_ca to "
                f"the path of its CA bundle, or to false to skip the check"))) from None
        raise BmcError(_describe(bmc, credential, str(exc) or type(exc).__name__)) from None


def _untrusted(exc: BaseException) -> str:
    """The verification failure's reason ("self-signed certificate") if `exc` is, or wraps, one."""
    import ssl

    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        cur = pending.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return str(cur.verify_message or "certificate verify failed")
        pending += [cur.__cause__, cur.__context__, *(a for a in cur.args if isinstance(a, BaseException))]
    match = re.search(r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed: ([^(']+)", str(exc))
    return match.group(1).strip() if match else ""


def _describe(bmc: Bmc, credential: Credential, reason: str) -> str:
    if credential.password:
        reason = reason.replace(credential.password, "***")
    if reason in ("None", ""):
        reason = "no answer"
    return f"BMC {bmc.driver} {bmc.address}: {reason}"
