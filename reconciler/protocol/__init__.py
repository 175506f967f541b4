"""Wire protocols without sockets: bytes in, messages and decisions out (DHCP, TFTP)."""
