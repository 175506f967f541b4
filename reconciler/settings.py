"""Settings of the daemon: one frozen dataclass, built once by the CLI (`commands.run`).

Everything the daemon, its adapters and its servers need to know about their environment is
here, including secrets the CLI layer read from files or the environment (the HTTPS token),
so nothing deeper reads `os.environ` or parses arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The environment variable holding an HTTPS token for a private remote (read by the CLI only).
TOKEN_ENV = "NETBOOT_GIT_TOKEN"  # noqa: S105 (a variable name, not a secret)

DEFAULT_HTTP_LISTEN = ("127.0.0.1", 8080)
DEFAULT_TFTP_LISTEN = ("127.0.0.1", 6969)
DEFAULT_DHCP_LISTEN = ("0.0.0.0", 67)


@dataclass(frozen=True)
class Settings:
    """What `netboot-reconcile run` was asked to do."""

    repo: str  # a URL (https, ssh, scp-style, file://) or a local path
    branch: str | None = None  # None: the remote's default branch (or the work tree's HEAD)
    path: str = ""  # a subdirectory of the repository holding netboot.yaml
    interval: float = 60.0
    state_dir: Path = Path(".netboot-state")
    # --store: a PostgreSQL URL holding results and pool leases (shared by several instances);
    # None: results.sqlite3 and dhcp-leases.sqlite3 in the state directory.
    store: str | None = None
    instance: str = ""  # --instance (default: the host name): stamps events and reconciles
    http_listen: tuple[str, int] = DEFAULT_HTTP_LISTEN
    tftp_listen: tuple[str, int] = DEFAULT_TFTP_LISTEN
    dhcp_listen: tuple[str, int] = DEFAULT_DHCP_LISTEN
    dhcp_interface: str | None = None
    dhcp: bool = True
    tftp: bool = True
    tftp_root: Path = Path("/usr/lib/ipxe")
    assets_dir: Path | None = None
    fetch_assets: bool = True  # False (--no-fetch): assets are placed by hand; a missing one is a warning
    asset_timeout: float = 30.0  # seconds without an answer before an asset download fails
    known_hosts: Path | None = None
    ssh_key: Path | None = None
    https_token: str | None = None  # from TOKEN_ENV, read by the CLI
    webhook_secret: bytes | None = None  # the contents of --webhook-secret-file
    keep_generations: int = 10
    log_format: str = "text"  # text | json
    watch: bool = True  # inotify on local repositories
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    shutdown_timeout: float = 10.0  # bound for in-flight transfers at SIGTERM
    progress: bool = False  # show clone/fetch progress (the CLI sets it on a terminal)
    notify_socket: str | None = None  # systemd's NOTIFY_SOCKET (Type=notify), read by the CLI
    boot_timeout: float = 3600.0  # seconds a boot may go without a result before it has timed out
    report_secret: bytes | None = None  # signs each node's boot-report token (state dir `report-secret`)
    trust_any_client: bool = False  # serve a node's seed/script to any address (NAT, relays), not only its own
    worker: bool = False  # validate and render each commit in a child process (daemon.worker); `run` sets it
    reuse_renders: bool = False  # render only nodes whose inputs changed (core.render.reuse); `run` sets it
    # Serve a commit, then write generations/<sha>/ and swap `current` (daemon.persist); `run` sets it.
    persist_after_serving: bool = False
    verify_incremental: bool = False  # also render from scratch; on a difference log it, serve the scratch one
    age_identity: Path | None = None  # decrypts secrets.yaml at render time (adapters.agecrypt); outside the repo
    verify_commits: Path | None = None  # serve only commits signed by a key this file lists (adapters.commitsig)
    bmc_credentials: Path | None = None  # NAME -> username/password for rollouts' power actions (adapters.bmccreds)
    site: str | None = None  # --site: the site of a repository with `sites:` this instance serves (core.sites)
