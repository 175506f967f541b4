"""core.wiring: where a serving DHCP sends clients vs where our listeners are (a decision table)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from reconciler.core.model import Site
from reconciler.core.wiring import Listeners, covers, listener_warnings, missing_boot_files

SITE = Site(IPv4Address("10.10.10.12"), http_port=80, dhcp_mode="full")
GOOD = Listeners(dhcp=True, http=("10.10.10.12", 80), tftp=("0.0.0.0", 69))


def kinds(warnings: tuple[str, ...]) -> list[str]:
    return ["http" if "HTTP listens" in w else "tftp-off" if "--no-tftp" in w else "tftp" for w in warnings]


@pytest.mark.parametrize(
    ("site", "listeners", "expected"),
    [
        # everything covered
        (SITE, GOOD, []),
        (SITE, Listeners(True, ("0.0.0.0", 80), ("10.10.10.12", 69)), []),
        (SITE, Listeners(True, ("::", 80), ("", 69)), []),
        # the defaults of `netboot-reconcile run` with DHCP on
        (SITE, Listeners(True, ("127.0.0.1", 8080), ("127.0.0.1", 6969)), ["http", "tftp"]),
        # one thing wrong at a time
        (SITE, Listeners(True, ("127.0.0.1", 80), ("0.0.0.0", 69)), ["http"]),
        (SITE, Listeners(True, ("0.0.0.0", 8080), ("0.0.0.0", 69)), ["http"]),
        (SITE, Listeners(True, ("10.10.10.13", 80), ("0.0.0.0", 69)), ["http"]),
        (SITE, Listeners(True, ("0.0.0.0", 80), ("0.0.0.0", 6969)), ["tftp"]),
        (SITE, Listeners(True, ("0.0.0.0", 80), ("127.0.0.1", 69)), ["tftp"]),
        (SITE, Listeners(True, ("0.0.0.0", 80), None), ["tftp-off"]),
        (SITE, Listeners(True, ("localhost", 80), ("0.0.0.0", 69)), ["http"]),
        # the port rendered URLs carry is the site's, not 80
        (Site(IPv4Address("10.10.10.12"), http_port=8080), Listeners(True, ("0.0.0.0", 8080), ("0.0.0.0", 69)), []),
        (Site(IPv4Address("10.10.10.12"), http_port=8080), GOOD, ["http"]),
        # proxy DHCP points clients at us just the same
        (Site(IPv4Address("10.10.10.12"), dhcp_mode="proxy"), Listeners(True, ("127.0.0.1", 8080), None),
         ["http", "tftp-off"]),
        # no serving DHCP: nothing to say
        (Site(IPv4Address("10.10.10.12"), dhcp_mode="off"), Listeners(True, ("127.0.0.1", 8080), None), []),
        (SITE, Listeners(False, ("127.0.0.1", 8080), ("127.0.0.1", 6969)), []),
    ],
)
def test_decision_table(site: Site, listeners: Listeners, expected: list[str]) -> None:
    assert kinds(listener_warnings(site, listeners)) == expected


def test_the_warnings_say_where_clients_go_and_what_to_change() -> None:
    http, tftp = listener_warnings(SITE, Listeners(True, ("127.0.0.1", 8080), ("127.0.0.1", 6969)))
    assert "http://10.10.10.12/" in http and "127.0.0.1:8080" in http
    assert "not on 10.10.10.12 and not on port 80" in http and "--http-listen 10.10.10.12:80" in http
    assert "10.10.10.12:69" in tftp and "127.0.0.1:6969" in tftp and "--tftp-listen 10.10.10.12:69" in tftp
    (only_port,) = listener_warnings(SITE, Listeners(True, ("0.0.0.0", 8080), ("0.0.0.0", 69)))
    assert "(not on port 80)" in only_port


def test_covers() -> None:
    address = IPv4Address("10.0.0.1")
    assert covers("0.0.0.0", address) and covers("", address) and covers("::", address)
    assert covers("10.0.0.1", address)
    assert not covers("10.0.0.2", address) and not covers("127.0.0.1", address) and not covers("host", address)


def test_a_missing_boot_file_is_told_where_it_comes_from() -> None:
    """The arm64 binary (snp.efi by default) is in no Debian package: "install Debian's ipxe package"
    sent the operator to a package that cannot help."""
    warnings = {w.split("'")[1]: w for w in missing_boot_files(SITE, {}, lambda _: False)}
    assert "install Debian's ipxe package" in warnings["ipxe.efi"]
    assert "install Debian's ipxe package" in warnings["undionly.kpxe"]
    assert "install Debian's ipxe package" not in warnings["snp.efi"]
    assert "Debian's ipxe package has no snp.efi: put it in --tftp-root, or set boot_files" in warnings["snp.efi"]
