"""Run a cloud-init's own NoCloud code for one kernel command line; print what it would do, as JSON.

Run as a script by the Python that has the cloud-init under test on its path (Debian's package:
`/usr/bin/python3`; an upstream source tree: `PYTHONPATH=<tree>`), never imported by pytest:

    python3 cloudinit_probe.py --cmdline 'ds=nocloud;s=http://.../' --workdir DIR

It mirrors the two boot stages of `cloud-init init` (cloudinit/cmd/main.py `main_init`) with
cloud-init's own pieces: `util.get_cmdline` (fed through cloud-init's DEBUG_PROC_CMDLINE hook),
`sources.find_source` over the NoCloud module's datasources (local stage: DEP_FILESYSTEM;
network stage: DEP_FILESYSTEM + DEP_NETWORK), each datasource's own cmdline parsing, seed fetch
(real HTTP to the daemon) and dsmode decision. The stage logic kept from main_init is small:
a datasource found in the local stage in dsmode `local` consumes the user-data there; otherwise
the network stage searches, and a datasource whose dsmode is not `net` makes it exit ("datasource
in local mode") so the user-data is never consumed. datasource_list is `[NoCloud, None]`, what
ds-identify writes for a `ds=nocloud...` kernel argument. Nothing is written outside --workdir.

Output: {"version", "stages": {"local"|"net": {"found", "dsmode", "error"}}, "consumed_in",
"user_data", "meta_data", "network_config", "has_network_config", "warnings"}.
Caller: tests/integration/test_cloudinit_peers.py (through tests/peers/cloud_init.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []  # WARNING and above
        self.debug: list[str] = []  # everything, with tracebacks (what a failing test shows)

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname}: {record.getMessage()}"
        self.debug.append(self.format(record))
        if record.levelno >= logging.WARNING:
            self.messages.append(text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cmdline", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    os.environ["DEBUG_PROC_CMDLINE"] = args.cmdline  # cloud-init's util.get_cmdline() reads this first

    from cloudinit import distros, helpers, sources, version  # type: ignore[import-not-found, unused-ignore]

    collect = _Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.DEBUG)

    work = args.workdir
    for sub in ("cloud", "run"):  # what `cloud-init init` makes first (Init._initialize_filesystem)
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    paths = helpers.Paths({"cloud_dir": os.path.join(work, "cloud"), "run_dir": os.path.join(work, "run"),
                           "docs_dir": work, "templates_dir": work})
    sys_cfg: dict[str, Any] = {"datasource_list": ["NoCloud", "None"], "datasource": {}}
    distro = distros.fetch("debian")("debian", {}, paths)
    out: dict[str, Any] = {"version": version.version_string(), "stages": {}, "consumed_in": None}

    def search(deps: list[str]) -> Any:
        try:
            ds, _name = sources.find_source(sys_cfg, distro, paths, deps, ["NoCloud"],
                                            ["", "cloudinit.sources"], None)
        except sources.DataSourceNotFoundException as exc:
            return None, str(exc)
        return ds, None

    local, error = search([sources.DEP_FILESYSTEM])
    out["stages"]["local"] = {"found": str(local) if local else None, "dsmode": getattr(local, "dsmode", None),
                              "error": error}
    ds = local
    if local is not None and local.dsmode == sources.DSMODE_LOCAL:
        out["consumed_in"] = "local"
    else:
        if local is None:
            ds, error = search([sources.DEP_FILESYSTEM, sources.DEP_NETWORK])
        out["stages"]["net"] = {"found": str(ds) if ds else None, "dsmode": getattr(ds, "dsmode", None),
                                "error": error}
        if ds is not None and ds.dsmode == sources.DSMODE_NETWORK:
            out["consumed_in"] = "net"
    if ds is not None:
        raw = ds.userdata_raw
        out["user_data"] = raw.decode() if isinstance(raw, bytes) else raw
        out["meta_data"] = ds.metadata
        out["network_config"] = ds.network_config
        out["has_network_config"] = ds.network_config is not None
    out["warnings"] = collect.messages
    out["log"] = collect.debug[-60:]
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
