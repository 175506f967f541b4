"""netboot-reconcile: a git repository of nodes and profiles, served as DHCP, TFTP and HTTP netboot."""

__version__ = "0.1.0"
