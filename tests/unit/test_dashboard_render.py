"""The dashboard's pictures from plain values (servers.http_dashboard): a reinstall's waterfall
keeps the DHCP, TFTP and script steps that led to it, and nothing of the install before."""

from __future__ import annotations

from reconciler.core.model import BootEvent
from reconciler.servers.http_dashboard import describe, phases

MAC = "52:54:00:aa:bb:01"


def ev(t: float, stage: str, **detail: object) -> BootEvent:
    return BootEvent(t, stage, "a" * 40, MAC, "node-1", "10.0.0.5", detail)


def boot(t0: float) -> list[BootEvent]:
    return [ev(t0, "dhcp-ack", message="DISCOVER", ip="10.0.0.5", filename="ipxe.efi"),
            ev(t0 + 1, "tftp", file="ipxe.efi", bytes=1_000_000, result="ok"), ev(t0 + 2, "ipxe-script", status=200),
            ev(t0 + 3, "kernel", status=200, path="/assets/vmlinuz", bytes=12_000_000),
            ev(t0 + 13, "initrd", status=200), ev(t0 + 40, "user-data", status=200),
            ev(t0 + 300, "report", status="success")]


def test_a_reinstalls_waterfall_starts_at_its_own_dhcp() -> None:
    events = [*boot(100.0), *boot(1000.0)]
    # the reinstall's attempt starts at its kernel download (core.outcomes); its DHCP, TFTP and
    # script steps come just before, after the first install's report
    got = phases(events, started=1003.0)
    assert [p for p, _, _ in got] == ["DHCP", "TFTP", "script", "kernel", "initrd", "seed", "report"]
    assert got[0][1] == 1000.0 and dict((p, end - start) for p, start, end in got)["kernel"] == 10.0


def test_events_in_words() -> None:
    dhcp, tftp, _, kernel, *_ = boot(0.0)
    assert describe(dhcp) == "DHCP DISCOVER answered with ACK: address 10.0.0.5, boot file ipxe.efi"
    assert describe(tftp) == "TFTP sent ipxe.efi (976.6 KiB)"
    assert describe(kernel) == "downloaded the kernel /assets/vmlinuz (11.4 MiB)"
    # the keys servers.tftp records (`file`, `result`, `error`): the file was missing from the words
    probe = ev(0, "tftp", file="ipxe.efi", bytes=0, result="size-probe", error_code=8, error="tsize")
    assert describe(probe) == "TFTP size probe of ipxe.efi: the client learned its size and closed the transfer"
    missing = ev(0, "tftp", file="pxelinux.0", bytes=0, result="error", error_code=1, error="file not found")
    assert describe(missing) == "TFTP refused pxelinux.0: file not found"
    ignored = ev(0, "dhcp-ignored", message="DISCOVER", vendor_class="PXEClient:Arch:00007:UNDI:003000",
                 reason="unknown client (unknown_clients: ignore)")
    assert describe(ignored) == ("DHCP DISCOVER from PXEClient:Arch:00007:UNDI:003000 not answered: unknown client "
                                 "(unknown_clients: ignore)")
    refused = ev(0, "kernel", status=404, path="/assets/x")
    assert describe(refused) == "asked for kernel /assets/x and was refused: HTTP 404"
