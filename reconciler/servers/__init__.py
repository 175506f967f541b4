"""Sockets and threads only: DHCP, TFTP and HTTP servers. Policy lives in core/ and protocol/."""
