"""Every finding code in one table: code, severity, why. Findings are made only through `issue`.

Called by every module that reports a finding (readers, parser, schema, validation, lints,
renderer, daemon). A code's severity lives here and nowhere else; README "Finding codes" and
"Lints" list them, and tests/unit/test_codes.py checks that every code the source emits is here.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.model import Issue, Location, Severity

E, W = Severity.ERROR, Severity.WARNING


@dataclass(frozen=True)
class Code:
    code: str
    severity: Severity
    why: str
    lint: bool = False  # a netboot lint: its message is "<detail>: <why>" (README "Lints")


_TABLE = (
    # -- reading the repository (adapters.dirsource, adapters.gitsource, core.snapshot)
    Code("symlink", E, "symbolic links are refused: commit the file itself"),
    Code("special-file", E, "FIFOs, sockets and device files are refused: only regular files are read"),
    Code("submodule", E, "submodules are refused: the repository must hold its files"),
    Code("file-too-large", E, "files over 1 MiB are refused"),
    Code("file-name-encoding", E, "a file the format would read whose name is not UTF-8 is refused (named with its "
         "bytes shown as \\xNN)"),
    Code("not-read", W, "a path the format does not read, but that looks meant to be read"),
    Code("source", E, "the repository or revision could not be read"),
    Code("commit-signature", E, "with --verify-commits, only a commit signed by a key the file lists is served"),
    # -- parsing (core.yamldoc)
    Code("encoding", E, "files must be UTF-8"),
    Code("yaml-syntax", E, "the file is not valid YAML"),
    Code("json-syntax", E, "the file is not valid JSON"),
    Code("yaml-too-large", E, "more values than a real file has, after expanding aliases (an alias bomb?)"),
    Code("yaml-too-deep", E, "nested deeper than a real file is"),
    Code("json-too-deep", E, "nested deeper than a real file is (64 levels, as for YAML)"),
    Code("yaml-key", E, "mapping keys must be plain strings"),
    Code("yaml-unsafe-tag", E, "only plain YAML tags are read (no !!python/...)"),
    Code("yaml-duplicate-key", E, "a key written twice: YAML loaders silently keep only one"),
    Code("schema", E, "the document does not match its JSON Schema (schemas/)"),
    # -- building values (core.build)
    Code("missing-site", E, "netboot.yaml is required at the repository root"),
    Code("subnet-invalid", E, "a subnet must be a network address with its prefix length"),
    Code("pool-order", E, "a pool's first address must not be after its last"),
    Code("pool-outside-subnet", E, "a pool must lie inside its subnet, without its network or broadcast address"),
    Code("pool-holds-host", E, "a pool holding a host's address leases it to a second machine"),
    Code("lease-time", E, "lease_time must not be longer than max_lease_time"),
    Code("router-outside-subnet", E, "a router must be inside its subnet"),
    Code("duplicate-asset", E, "an asset path listed twice in assets.yaml"),
    Code("asset-two-sources", E, "an asset has both url and from: it comes from one of them"),
    Code("asset-unverifiable", E, "an asset with a url needs sha256 or checksums to be verified"),
    Code("asset-field-needs-url", E, "sha256 sources (checksums, signature) are only meaningful with a url"),
    Code("asset-signature-needs-checksums", E, "a signature signs a checksums file: give checksums"),
    Code("asset-signature-needs-keyring", E, "a signature needs a keyring to be checked against"),
    Code("keyring-missing", E, "the keyring an asset names is not in the repository"),
    Code("asset-extract-incomplete", E, "a file inside an ISO needs both from and file"),
    Code("asset-from-unknown", E, "from must name another asset of the manifest (an ISO image)"),
    Code("asset-path-escape", E, "a file inside an ISO must be a relative path inside it"),
    # -- the daemon's asset step (daemon.steps)
    Code("asset-verification-failed", E, "an asset's bytes do not verify (digest, signature, a file the ISO lacks): "
         "it is never served"),
    Code("asset-missing", W, "with --no-fetch, an asset assets.yaml lists is not (verified) under --assets-dir"),
    Code("secret-undecryptable", E, "a secrets.yaml value the identity (--age-identity) cannot decrypt, or none given "
         "to the daemon: nothing that needs it is served"),
    Code("secret-breaks-user-data", E, "a node's cloud-config is not YAML once secrets.yaml's values are filled in "
         "(write {{ secrets.NAME | tojson }})"),
    Code("secret-unknown", E, "a template uses secrets.NAME that secrets.yaml does not hold"),
    Code("secret-in-boot-args", E, "secrets go in cloud-init user-data only: kernel arguments are readable by every "
         "user of the machine and sit in its boot script"),
    Code("duplicate-cloud-init", E, "two cloud-init files with one name (.yaml and .yml)"),
    Code("template-syntax", E, "a template that does not compile"),
    Code("profile-id-mismatch", E, "a profile's id must be its file name (matchbox looks profiles up by file)"),
    Code(
        "group-id-differs",
        W,
        "a group's id is read from inside the file, as matchbox reads it; its file name says another",
    ),
    Code("matchbox-unknown-field", W, "a field matchbox's format does not have: ignored, as matchbox ignores it"),
    Code("reserved-id", E, "ids starting with 'node.' are the renderer's per-node groups and profiles"),
    Code("reserved-name", E, "node names starting with 'group-' are the renderer's group scripts"),
    Code("duplicate-profile", E, "two profile files with one id (.yaml and .json)"),
    Code("duplicate-group", E, "two group files with one id"),
    Code("duplicate-node", E, "two node files with one name (.yaml and .yml)"),
    Code("matchbox-cloud-id", W, "matchbox cloud_id (Container Linux cloud-config) is not served"),
    Code("mac-invalid", E, "not a MAC address"),
    Code("node-name", E, "a node name (its file name) must be a DNS label"),
    # -- matchbox's ignition/ and generic/ (core.ignition)
    Code("ignition-version", E, "Ignition refuses a config without a spec version it knows (ignition.version)"),
    Code("ignition-experimental", W, "an experimental Ignition spec: only an Ignition built with it accepts it"),
    Code("ignition-invalid", E, "the Ignition config does not match its spec (Ignition refuses it at boot)"),
    Code("ignition-unknown-key", W, "a key the Ignition spec does not have: Ignition warns and ignores it"),
    Code("ignition-spec-2", W, "a spec 2 Ignition config: only Flatcar's Ignition still reads it"),
    Code(
        "ignition-butane",
        W,
        "a Butane config (not .ign/.ignition): matchbox translates it, no butane translates it here, "
        "so /ignition answers 404 for it",
    ),
    # -- cross references (core.crossref)
    Code("secure-boot-remote-file", E, "under Secure Boot the signed GRUB fetches over TFTP only: a kernel or "
         "initrd must be served by this server"),
    Code("secure-boot-file-missing", W, "a signed binary of the Secure Boot chain (shim, GRUB) is not on the "
         "serving machine"),
    Code("bmc-incomplete", E, "a node's bmc (its own fields and its group's) needs driver, address and credentials"),
    Code("ref-profile", E, "a node or group names a profile that does not exist"),
    Code("ref-cloud-init", E, "a profile names a cloud-init template that does not exist"),
    Code("ref-ignition", W, "an ignition_id naming no file in ignition/: /ignition answers 404, as matchbox does"),
    Code("ref-generic", W, "a generic_id naming no file in generic/: /generic answers 404, as matchbox does"),
    Code("duplicate-default-group", E, "only one group may have no selector (the default)"),
    Code("group-conflicts-node", E, "a group selects a node file's machine with another profile"),
    Code("group-ambiguous", E, "groups of equal selector count match one machine with different profiles"),
    Code("duplicate-mac", E, "two nodes with one MAC address"),
    Code("duplicate-ip", E, "two nodes with one IP address"),
    Code("duplicate-hostname", E, "two nodes with one hostname"),
    Code("ip-outside-subnet", E, "a node's ip must be a host address of a declared subnet"),
    Code("ip-conflict", E, "a node's ip is server.address or a router"),
    Code("ip-in-pool", E, "a node's fixed ip inside the pool could be leased to another machine"),
    Code("subnet-overlap", E, "declared subnets must not overlap"),
    # -- sites (core.sites)
    Code("site-no-server", E, "every site needs server.address, in its own settings or the shared ones"),
    Code("unknown-site", E, "a node or a group names a site netboot.yaml does not declare"),
    Code("node-no-site", E, "in a repository with sites, every node names its site"),
    Code("site-required", E, "a daemon serving a repository with sites serves one of them: --site NAME"),
    Code("site-not-declared", E, "--site names a site netboot.yaml does not declare"),
    Code("site-subnet-overlap", E, "a subnet belongs to one site: two sites' subnets must not overlap"),
    Code("dnsmasq-hostname", W, "dnsmasq reads this hostname as a keyword or lease time; dnsmasq.conf leaves it out"),
    # -- templates and boot values (core.bootcheck, core.render)
    Code("template-undefined", E, "a template uses a variable that is not defined (never an empty string)"),
    Code(
        "template-error",
        E,
        "a template failed to render, or passed a bound (1 MiB of output or of any value, CPU time)",
    ),
    Code("generation-too-large", E, "the rendered generation would pass 512 MiB"),
    Code(
        "boot-value-unsafe",
        E,
        "a rendered kernel, initrd or argument would break out of its word in iPXE or GRUB",
    ),
    Code(
        "boot-path-relative",
        E,
        "a relative kernel or initrd path is neither pinned to the revision nor checked against "
        "assets.yaml, and GRUB reads it from its own boot device",
    ),
    Code(
        "group-profile-needs-node",
        W,
        "a repo group boots a profile whose templates need a node's own values",
    ),
    # -- the daemon's peer check
    Code("peer-check", E, "the rendered dhcpd.conf is refused by `dhcpd -t`"),
    # -- the daemon's worker process (daemon.worker)
    Code("resource-limit", E, "validating and rendering the commit went past the worker's memory or CPU bound"),
    # -- netboot lints (core.lint)
    Code(
        "nocloud-trailing-slash",
        E,
        "cloud-init appends 'user-data' to the seed URL as is: without the trailing '/' it fetches "
        "'.../<mac>user-data' and the install waits forever",
        lint=True,
    ),
    Code(
        "nocloud-seed-mode",
        W,
        "write 'ds=nocloud;s=<url>;dsmode=net', which every cloud-init runs: before 23.2 (Debian 12, "
        "Ubuntu 22.04 media of its era) 'ds=nocloud' with an http seed means dsmode=local and the "
        "user-data never runs; 'ds=nocloud-net' is deprecated since 24.1",
        lint=True,
    ),
    Code(
        "ubuntu-iso-cloud-config-url",
        E,
        "Ubuntu 22.04+ with url=<iso> needs cloud-config-url=/dev/null, or cloud-init also fetches "
        "the ISO as cloud-config (never reaching the NoCloud seed; out of memory on small machines)",
        lint=True,
    ),
    Code(
        "autoinstall-without-ip-dhcp",
        W,
        "autoinstall over the network needs 'ip=dhcp' so the initramfs brings up the NIC",
        lint=True,
    ),
    Code(
        "autoinstall-without-cloud-init",
        E,
        "'autoinstall' with no cloud-init attached: the installer has no answers and stops at a prompt",
        lint=True,
    ),
    Code(
        "user-data-not-cloud-config",
        E,
        "cloud-init ignores user-data whose first line is not '#cloud-config'",
        lint=True,
    ),
    Code("user-data-yaml", E, "the rendered user-data is not valid YAML: cloud-init drops it", lint=True),
    Code(
        "user-data-duplicate-key",
        E,
        "a key written twice in one mapping of user-data: cloud-init silently keeps the last",
        lint=True,
    ),
    Code("autoinstall-version", E, "Subiquity refuses an autoinstall config without 'version: 1'", lint=True),
    Code(
        "autoinstall-section-missing",
        W,
        "with 'autoinstall' on the kernel command line, Subiquity reads the 'autoinstall:' key of "
        "user-data; there is none",
        lint=True,
    ),
    Code(
        "autoinstall-key-misspelt",
        E,
        "with 'autoinstall' on the kernel command line, Subiquity reads the 'autoinstall:' key of "
        "user-data: a misspelt key is ignored and the install stops at a prompt",
        lint=True,
    ),
    Code(
        "cloud-init-seed-static",
        W,
        "the profile's cloud_init template is served only at {{ cloud_init_url }}: with another seed "
        "URL cloud-init never fetches it",
        lint=True,
    ),
    Code(
        "autoinstall-key-misplaced",
        E,
        "an autoinstall key at the top level of user-data, beside 'autoinstall:': cloud-init's schema "
        "refuses it and Subiquity 24.04+ stops the install (\"Misplaced autoinstall directives\")",
        lint=True,
    ),
    Code(
        "autoinstall-interactive-reporting",
        W,
        "Subiquity ignores 'reporting' when 'interactive-sections' is set: the daemon never hears how "
        "the install went",
        lint=True,
    ),
    Code(
        "asset-not-listed",
        E,
        "assets.yaml is the manifest of what /assets serves: a path it does not list is a 404 at boot",
        lint=True,
    ),
    Code(
        "arg-whitespace",
        E,
        "a rendered kernel argument holds white space or a control character and would split or "
        "break the boot script",
        lint=True,
    ),
)

CODES: dict[str, Code] = {c.code: c for c in _TABLE}
assert len(CODES) == len(_TABLE), "a code is in the table twice"


def issue(code: str, loc: Location, message: str) -> Issue:
    """The finding `code` at `loc`; its severity is the table's. KeyError for a code not in it."""
    return Issue.at(loc, code, message, CODES[code].severity)


def lint_issue(code: str, loc: Location, detail: str = "") -> Issue:
    """A lint's finding: the detail (what was found), then the lint's why."""
    why = CODES[code].why
    return issue(code, loc, f"{detail}: {why}" if detail else why)
