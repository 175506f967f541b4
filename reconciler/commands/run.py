"""`netboot-reconcile run --repo URL_OR_PATH [options]` (also `netboot-reconcile --repo ...`): the daemon.

Called by `reconciler.cli`. This is the only place that reads the process environment
(`NETBOOT_GIT_TOKEN` for HTTPS remotes, `NOTIFY_SOCKET` under systemd) and secret files; it
builds one frozen `Settings`, configures logging (`--log-format text|json`), builds the
servers (HTTP always; DHCP and TFTP unless turned off) around one `Daemon`, and runs it until
SIGTERM. Exit 0 after a clean stop, 2 when start-up fails (bad arguments, a port in use, a
--site the repository does not declare while nothing is served).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import resource
import secrets
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.adapters import reportsecret, sqldb
from reconciler.adapters.agecrypt import load_identity
from reconciler.adapters.bmccreds import CredentialsError
from reconciler.adapters.bmccreds import load as load_credentials
from reconciler.adapters.commitsig import load_signers
from reconciler.adapters.gitsource import SourceProblem, SourceUnavailable
from reconciler.core import boot
from reconciler.core.render import render_served
from reconciler.core.rollout import Rollout
from reconciler.daemon import Daemon, sd_notify
from reconciler.daemon.statelock import StateDirLocked
from reconciler.servers.http import HttpServer, make_boot_app
from reconciler.servers.http_control import make_control_apps
from reconciler.servers.http_results import ResultsRecorder, make_results_apps
from reconciler.servers.http_rollouts import make_rollouts_app
from reconciler.settings import DEFAULT_DHCP_LISTEN, TOKEN_ENV, Settings

if TYPE_CHECKING:
    from reconciler.adapters.leases import LeaseStore

log = logging.getLogger("reconciler.run")

EXIT_OK, EXIT_ERROR = 0, 2
LEASES_FILE = "dhcp-leases.sqlite3"
REPORT_SECRET_FILE = "report-secret"  # noqa: S105 (a file name) signs the nodes' boot-report tokens; made on first start


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the daemon: serve a git repository as DHCP, TFTP and HTTP netboot")
    p.add_argument("--repo", required=True, metavar="URL_OR_PATH",
                   help="URL (https, ssh, user@host:path, file://) or local path")
    p.add_argument("--branch", help="branch to follow (default: the remote's default branch)")
    p.add_argument("--path", default="", metavar="SUBDIR", help="subdirectory of the repository holding netboot.yaml")
    p.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                   help="poll interval in seconds (default 60)")
    p.add_argument("--state-dir", type=Path, default=Path(".netboot-state"), metavar="DIR",
                   help="mirror, generations, results, leases (default ./.netboot-state)")
    p.add_argument("--store", metavar="URL",
                   help="postgresql://... holding results and DHCP leases, shareable by several instances "
                        "(default: SQLite files in the state directory)")
    p.add_argument("--instance", metavar="NAME", default=socket.gethostname(),
                   help="this instance's name in the store: stamps its events and reconciles (default: host name)")
    p.add_argument("--http-listen", type=_listen(8080), default=("127.0.0.1", 8080), metavar="HOST:PORT",
                   help="default 127.0.0.1:8080")
    p.add_argument("--tftp-listen", type=_listen(69), default=("127.0.0.1", 6969), metavar="HOST:PORT",
                   help="default 127.0.0.1:6969")
    p.add_argument("--dhcp-listen", type=_listen(67), default=DEFAULT_DHCP_LISTEN, metavar="HOST:PORT",
                   help="default 0.0.0.0:67")
    p.add_argument("--dhcp-interface", metavar="NAME",
                   help="bind DHCP to this interface (default: netboot.yaml dhcp.interface)")
    p.add_argument("--no-dhcp", action="store_true", help="serve no DHCP")
    p.add_argument("--no-tftp", action="store_true", help="serve no TFTP")
    p.add_argument("--tftp-root", type=Path, default=Path("/usr/lib/ipxe"), metavar="DIR", help="default /usr/lib/ipxe")
    p.add_argument("--assets-dir", type=Path, metavar="DIR",
                   help="directory served under /assets/, and the store assets.yaml is synced into")
    p.add_argument("--no-fetch", action="store_true",
                   help="fetch no assets (air-gapped sites place them by hand; a missing one is a warning)")
    p.add_argument("--known-hosts", type=Path, metavar="FILE", help="SSH known_hosts checked strictly for ssh remotes")
    p.add_argument("--ssh-key", type=Path, metavar="FILE", help="SSH private key for ssh remotes")
    p.add_argument("--webhook-secret-file", type=Path, metavar="FILE", help="shared secret of POST /hooks/git")
    p.add_argument("--keep-generations", type=int, default=10, metavar="N",
                   help="generations kept on disk (default 10)")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines (default text)")
    p.add_argument("--no-watch", action="store_true", help="no inotify on a local repository (poll only)")
    p.add_argument("--boot-timeout", type=float, default=60.0, metavar="MINUTES",
                   help="a boot with no result after this long has timed out (default 60)")
    p.add_argument("--trust-any-client", action="store_true",
                   help="serve a node's NoCloud seed, script and metadata to any client address, not only to the "
                        "node's reserved or leased one (NAT or proxies in front of the daemon)")
    p.add_argument("--verify-commits", type=Path, metavar="FILE",
                   help="serve only commits signed by a key FILE lists: an OpenSSH allowed_signers file or an "
                        "OpenPGP keyring (gpg --export)")
    p.add_argument("--age-identity", type=Path, metavar="FILE",
                   help="age identity file (outside the repository) that decrypts secrets.yaml's values, in memory, "
                        "into the user-data that uses them")
    p.add_argument("--bmc-credentials", type=Path, metavar="FILE",
                   help="NAME: {username, password} file (YAML or JSON, mode 600, outside git) for the BMCs "
                        "rollouts power-cycle (netboot.yaml rollout.power: true)")
    p.add_argument("--site", metavar="NAME",
                   help="serve this site of a repository with sites: in netboot.yaml (its nodes, DHCP and server "
                        "settings); required there, refused without them")
    p.add_argument("--no-worker", action="store_true",
                   help="validate and render commits in the daemon process itself instead of a worker process "
                        "(debugging: packet threads then wait for them)")
    p.add_argument("--verify-incremental", action="store_true",
                   help="render every commit from scratch as well and compare: a difference is logged as an error "
                        "and the render from scratch is served (checks the reuse of unchanged nodes; doubles the "
                        "render time)")
    p.set_defaults(func=run)


def _listen(default_port: int) -> Any:
    def parse(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
        try:
            number = int(port)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT") from None
        if not 0 <= number <= 65535:
            raise argparse.ArgumentTypeError(f"{text!r}: port out of range")
        return (host.strip("[]") or "0.0.0.0", number)

    return parse


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """One frozen Settings from the arguments and the environment (read here and nowhere else)."""
    secret = None
    if args.webhook_secret_file is not None:
        secret = args.webhook_secret_file.read_bytes().strip()
        if not secret:
            raise ValueError(f"{args.webhook_secret_file}: the webhook secret is empty")
    for name in ("known_hosts", "ssh_key"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            raise ValueError(f"--{name.replace('_', '-')} {path}: no such file")
    if args.verify_commits is not None:
        load_signers(args.verify_commits)  # a start-up error (exit 2) when it cannot be used
    if args.age_identity is not None:
        load_identity(args.age_identity)  # a start-up error (exit 2) when it holds no identity
    if args.bmc_credentials is not None:
        try:  # a start-up error (exit 2) when it cannot be used; read again at each power action
            load_credentials(args.bmc_credentials)
        except CredentialsError as exc:
            raise ValueError(str(exc)) from None
    if args.keep_generations < 1:
        raise ValueError("--keep-generations must be at least 1")
    if args.boot_timeout <= 0:
        raise ValueError("--boot-timeout must be positive (minutes)")
    if args.store is not None and not sqldb.is_url(args.store):
        raise ValueError(f"--store {sqldb.describe(args.store)!r}: expected a postgresql:// URL "
                         "(SQLite is the default: omit --store)")
    if not args.instance.strip():
        raise ValueError("--instance must not be empty")
    return Settings(
        repo=args.repo,
        branch=args.branch,
        path=args.path.strip("/"),
        interval=max(args.interval, 0.1),
        state_dir=args.state_dir.absolute(),
        store=args.store,
        instance=args.instance.strip(),
        http_listen=args.http_listen,
        tftp_listen=args.tftp_listen,
        dhcp_listen=args.dhcp_listen,
        dhcp_interface=args.dhcp_interface,
        dhcp=not args.no_dhcp,
        tftp=not args.no_tftp,
        tftp_root=args.tftp_root,
        assets_dir=args.assets_dir,
        fetch_assets=not args.no_fetch,
        known_hosts=args.known_hosts,
        ssh_key=args.ssh_key,
        https_token=environ.get(TOKEN_ENV) or None,
        webhook_secret=secret,
        keep_generations=args.keep_generations,
        log_format=args.log_format,
        watch=not args.no_watch,
        progress=sys.stderr.isatty(),
        notify_socket=environ.get("NOTIFY_SOCKET") or None,
        boot_timeout=args.boot_timeout * 60.0,
        # Instances sharing a store share one secret: a report may reach another instance than
        # the one whose seed the machine installed from (adapters.reportsecret).
        report_secret=(reportsecret.shared(args.store, report_secret(args.state_dir.absolute())) if args.store
                       else report_secret(args.state_dir.absolute())),
        trust_any_client=args.trust_any_client,
        verify_commits=args.verify_commits,
        age_identity=args.age_identity,
        bmc_credentials=args.bmc_credentials.absolute() if args.bmc_credentials is not None else None,
        worker=not args.no_worker,
        site=args.site,
        reuse_renders=True,
        persist_after_serving=True,
        verify_incremental=args.verify_incremental,
    )


def report_secret(state_dir: Path) -> bytes:
    """The secret of boot-report tokens: `<state-dir>/report-secret`, made (0600) on first start.

    Kept with the state, so tokens rendered into a node's cloud-init stay valid across restarts."""
    path = state_dir / REPORT_SECRET_FILE
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:  # a read-only state directory is served read-only, but only once it has a secret
            raise OSError(exc.errno, f"cannot make the report secret {path} ({exc.strerror}): the state directory "
                                     "must be writable on its first start (a read-only one is served read-only "
                                     "once it holds a generation and its secret)") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_hex(32).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        secret = path.read_bytes().strip()
    if not secret:
        raise ValueError(f"{path}: the report secret is empty (delete it to make a new one)")
    return secret


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `revision=` and `mac=` in the message become fields."""

    _FIELDS = re.compile(r"\b(revision|mac)=(\S+)")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in self._FIELDS.findall(message):
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _hints(daemon: Daemon, http: HttpServer) -> None:
    host, port = http.address
    local = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base = f"http://{local}:{port}"
    log.info("status:  %s/status   (or: netboot-reconcile status --url %s)", base, base)
    generation = daemon.holder.current()
    if generation is None:
        return
    # A curl run here comes from `local`: name a node whose script is served to that address.
    index = generation.boot_index
    client = boot.Client(local)
    node = next((n for n in generation.state.nodes
                 if daemon.settings.trust_any_client or boot.client_refusal(index, n, client) is None), None)
    if node is not None:
        log.info("a node's iPXE script:  curl '%s/ipxe?mac=%s'   (node %s) revision=%s", base, node.mac, node.name,
                 generation.revision)
    else:
        log.info("the bootstrap script:  curl '%s/boot.ipxe'   (a node's own script is served only to its address; "
                 "--trust-any-client to fetch it from here) revision=%s", base, generation.revision)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args, dict(os.environ))
    except (OSError, ValueError) as exc:
        print(f"netboot-reconcile run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    configure_logging(settings.log_format)
    _raise_open_file_limit()
    decrypt = load_identity(settings.age_identity) if settings.age_identity is not None else None
    daemon = Daemon(settings, renderer=functools.partial(render_served, report_secret=settings.report_secret,
                                                         decrypt=decrypt))
    # Before the start: a SIGHUP while `current` loads (seconds at 10,000 nodes) or the servers
    # bind no longer kills the daemon, and a SIGTERM then makes `run` return at once.
    daemon.install_signal_handlers()
    try:
        daemon.open()
        _start_servers(daemon, settings)
    except (OSError, ValueError, SourceProblem, SourceUnavailable, StateDirLocked) as exc:
        log.error("cannot start: %s", exc)
        daemon.shutdown()
        return EXIT_ERROR
    http = daemon.servers["http"].server

    def ready() -> None:
        sd_notify(settings.notify_socket, "READY=1\nSTATUS=serving")

    unservable: list[str] = []

    def first() -> None:
        problem = daemon.unservable()
        if problem is None:
            _hints(daemon, http)
            return
        log.error("cannot serve: %s", problem)  # no commit fixes a wrong --site: stop, as for a bad option
        unservable.append(problem)
        daemon.stop()

    try:
        daemon.run(ready=ready, first=first)
    finally:
        sd_notify(settings.notify_socket, "STOPPING=1")
        daemon.shutdown()
    log.info("stopped")
    return EXIT_ERROR if unservable else EXIT_OK


def _raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard one, as Go's runtime and nginx do. A TFTP
    transfer holds three descriptors (its port's two sockets and the file), so a storm at the
    default 512 transfers needs about 1,600, and systemd gives a service a soft limit of 1,024
    (hard: 524,288). Every loop here polls (no select()), so no descriptor number is too high.
    Children (git, `dhcpd -t`, `kea-dhcp4 -t`) inherit the raised limit; they hold few files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, want, exc)


def _lease_store(path: Path, read_only: bool) -> LeaseStore:
    """The DHCP lease database; on a read-only state directory one in memory (leases of this run)."""
    from reconciler.adapters.leases import LeaseStore

    try:
        return LeaseStore(path)
    except (sqlite3.Error, OSError) as exc:
        if not read_only:
            raise OSError(f"{path}: {exc}") from exc
        log.warning("lease database %s cannot be opened (%s): DHCP leases of this run are kept in memory", path, exc)
        return LeaseStore(":memory:")


def _start_servers(daemon: Daemon, settings: Settings) -> None:
    """HTTP always (a failed start is fatal); DHCP and TFTP when on (a failed start is retried)."""
    assert daemon.store is not None
    recorder = ResultsRecorder(daemon.store, daemon.metrics.registry)
    events = recorder
    mac_for_address = None
    # The DHCP and TFTP servers' modules are imported when they are on: a daemon without them
    # starts its first reconcile sooner.
    if settings.dhcp:
        from reconciler.servers.dhcp import DhcpServer

        if settings.store is not None:  # shared with the other instances of the segment
            from reconciler.adapters.pgleases import PgLeaseStore

            leases: LeaseStore = PgLeaseStore(settings.store, instance=settings.instance)
            daemon.watch_store("leases", lambda: leases.problem)
        else:
            leases = _lease_store(settings.state_dir / LEASES_FILE, daemon.store_problem() is not None)
        # Only the CLI's interface here: the server binds to each served generation's own
        # `dhcp.interface` (and proxy mode) itself, rebinding when a commit changes them, and
        # listens nowhere while no generation (or `dhcp.mode: off`) needs it.
        dhcp = DhcpServer(settings.dhcp_listen, daemon.holder, events, leases=leases,
                          interface=settings.dhcp_interface)
        daemon.add_server("dhcp", dhcp)
        mac_for_address = dhcp.mac_for_address
    else:
        daemon.add_server("dhcp", None)
    if settings.tftp:
        from reconciler.servers.tftp import TftpServer

        tftp = TftpServer(settings.tftp_listen, settings.tftp_root, daemon.holder, events,
                          mac_for_address=mac_for_address, assets_dir=settings.assets_dir)
        daemon.add_server("tftp", tftp)
    else:
        daemon.add_server("tftp", None)
    control = make_control_apps(
        status=daemon.status,
        healthy=daemon.healthy,
        ready=daemon.ready,
        registry=daemon.metrics.registry,
        trigger=daemon.trigger,
        webhook_secret=settings.webhook_secret,
    )
    results = make_results_apps(
        holder=daemon.holder,
        recorder=recorder,
        registry=daemon.metrics.registry,
        secret=settings.report_secret,
        boot_timeout=settings.boot_timeout,
        mac_for_address=mac_for_address,
        status=daemon.status,
        unstorable=daemon.store_problem,
        stored=daemon.artifacts.stored,
    )
    store = daemon.store
    runner = daemon.rollouts
    assert runner is not None

    def rollout_doc(value: Rollout | None) -> dict[str, Any] | None:
        return value.as_dict() if value is not None else None

    rollouts = make_rollouts_app(
        current=lambda: rollout_doc(runner.current),
        history=lambda: [r.as_dict() for r in store.rollouts(20, site=store.site)],
        pause=lambda reason: rollout_doc(runner.pause(reason)),
        resume=lambda: rollout_doc(runner.resume()),
        secret=settings.webhook_secret,
    )
    app = make_boot_app(daemon.holder, events, settings.assets_dir,
                        extra={**control, **results, "/api/rollouts": rollouts},
                        installed=lambda node: store.is_installed(node.name, node.mac, node.reinstall),
                        mac_for_address=mac_for_address, trust_any_client=settings.trust_any_client,
                        ipxe_root=settings.tftp_root)
    daemon.add_server("http", HttpServer(settings.http_listen, app), fatal=True)
