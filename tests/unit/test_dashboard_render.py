"""The dashboard's pictures from plain values (servers.http_dashboard): a reinstall's waterfall
keeps the DHCP, TFTP and script steps that led to it, and nothing of the install before."""

from __future__ import annotations

from reconciler.core.model import BootEvent
from reconciler.servers.http_dashboard import describe, phases, waterfall

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
    assert [p.name for p in got] == ["DHCP", "TFTP", "script", "kernel", "initrd", "seed", "report"]
    assert got[0].start == 1000.0 and {p.name: p.end - p.start for p in got}["kernel"] == 10.0
    assert not any(p.failed for p in got)


def test_a_broken_off_kernel_download_is_a_failed_phase_and_times_nothing() -> None:
    # OVMF's TFTP size probe, then the real transfer; a kernel download broken off (begun at 20 s),
    # begun again at 30 s and sent whole in 10 s; an initrd that only ever broke off
    events = [ev(0, "dhcp-ack", message="DISCOVER"),
              ev(1, "tftp", file="ipxe.efi", bytes=0, result="size-probe"),
              ev(2, "tftp", file="ipxe.efi", bytes=1_000_000, result="ok"),
              ev(3, "ipxe-script", status=200, method="GET"),
              ev(20, "kernel", status=200, method="GET", bytes=100, length=12_000_000, result="aborted"),
              ev(30, "kernel", status=200, method="GET", bytes=12_000_000, length=12_000_000, result="ok"),
              ev(50, "initrd", status=200, method="GET", bytes=10, length=30_000_000, result="aborted")]
    got = {p.name: p for p in phases(events, started=0.0)}
    assert (got["TFTP"].start, got["TFTP"].failed) == (2, False)
    assert (got["kernel"].start, got["kernel"].end, got["kernel"].failed) == (30, 50, False)
    assert (got["initrd"].start, got["initrd"].failed) == (50, True)
    svg = waterfall(events, 0.0)
    assert svg.count('data-failed="1"') == 1 and 'data-phase="initrd" data-seconds="0.000" data-failed="1"' in svg


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
