"""Shared helpers for the renderer tests: the example repository at a fixed revision."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hypothesis import strategies as st

from reconciler.adapters.dirsource import read_directory
from reconciler.core.model import DesiredState
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example-repo"
GOLDEN = ROOT / "tests" / "golden" / "example-repo"
GOLDEN_SECURE = ROOT / "tests" / "golden" / "secure-boot-override"  # DHCP configs of secure_override_state
REVISION = "0123456789abcdef0123456789abcdef01234567"


def example_snapshot(revision: str = REVISION) -> Snapshot:
    return dataclasses.replace(read_directory(EXAMPLE), revision=revision)


def valid_state(snapshot: Snapshot) -> DesiredState:
    result = validate(snapshot)
    assert result.state is not None, result.issues
    return result.state


def example_state(revision: str = REVISION) -> DesiredState:
    return valid_state(example_snapshot(revision))


DB_1 = "52:54:00:aa:bb:10"  # example-repo's db-1, the one node booting ubuntu-2404-install


def secure_override_state(site_secure: bool) -> DesiredState:
    """example-repo with `secure_boot: site_secure` in netboot.yaml and db-1's profile (which no
    other node boots) saying the opposite: db-1 boots the other chain."""
    state = example_state()
    db1 = next(n for n in state.nodes if n.mac == DB_1)
    profile = state.profiles[db1.profile]
    others = [n.name for n in state.nodes if n.profile == profile.id and n.mac != DB_1]
    assert not others, others
    profiles = {**state.profiles, profile.id: dataclasses.replace(profile, secure_boot=not site_secure)}
    return dataclasses.replace(state, site=dataclasses.replace(state.site, secure_boot=site_secure), profiles=profiles)


# -- random valid repositories (hypothesis) ------------------------------------------------------


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda s: not s.startswith("group-")
)
_SAFE_TEXT = st.text(
    # U+FFFE and U+FFFF: noncharacters YAML refuses (a repository with them is rightly invalid)
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"),
                           exclude_characters="\ufffe\uffff"), max_size=20
).filter(lambda s: not any(c in s for c in "\"'\\;{}"))
_ARG = st.from_regex(r"[A-Za-z0-9_.][A-Za-z0-9_.=,:/;${}@+-]{0,30}", fullmatch=True).filter(
    # Literal args: no Jinja delimiters (a random "{{" is a template syntax error, rightly refused).
    lambda s: s not in (";",) and "'" not in s and not any(d in s for d in ("{{", "{%", "{#"))
)
_META_KEY = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
INTERFACE = "nr0"


@st.composite
def random_repo(draw: st.DrawFn) -> dict[str, bytes]:
    """A valid repository: subnets, nodes with and without addresses, two profiles, odd names."""
    subnet_count = draw(st.integers(1, 3))
    subnets = []
    for index in range(subnet_count):
        base = f"10.{index}.{draw(st.integers(0, 255))}"
        sub: dict[str, object] = {
            "subnet": f"{base}.0/24",
            "routers": [f"{base}.1"],
            "dns_servers": [f"{base}.{draw(st.integers(200, 254))}"],  # never in the pool (.100-.199)
            "lease_time": draw(st.integers(60, 3600)),
            "max_lease_time": 7200,
        }
        if draw(st.booleans()):
            sub["pool"] = [f"{base}.100", f"{base}.{draw(st.integers(100, 199))}"]
        if draw(st.booleans()):
            sub["domain_name"] = draw(_LABEL) + ".example"
        subnets.append(sub)
    site = {
        "server": {
            "address": "10.0.0.2" if draw(st.booleans()) else "192.0.2.10",
            "http_port": draw(st.sampled_from([80, 8080])),
        },
        "dhcp": {
            "mode": draw(st.sampled_from(["full", "proxy", "off"])),
            "unknown_clients": draw(st.sampled_from(["ignore", "boot"])),
            "subnets": subnets,
        },
    }
    if draw(st.booleans()):
        site["dhcp"]["interface"] = INTERFACE  # type: ignore[index]
    files = {"netboot.yaml": json.dumps(site, ensure_ascii=False).encode()}
    args = draw(st.lists(_ARG, max_size=5))
    args.append("ds=nocloud;s={{ cloud_init_url }};dsmode=net")
    files["profiles/install.yaml"] = json.dumps(
        {
            "name": draw(_SAFE_TEXT),
            "boot": {"kernel": "/assets/k", "initrd": ["/assets/i"], "args": ["ip=dhcp", *args]},
            "cloud_init": "ci",
        },
        ensure_ascii=False,
    ).encode()
    files["profiles/disk.yaml"] = b"boot: {}\n"
    files["cloud-init/ci.yaml"] = b"#cloud-config\nhostname: \"{{ hostname }}\"\nfqdn: \"{{ hostname }}.example\"\n"
    names = draw(st.lists(_LABEL, min_size=1, max_size=12, unique=True))
    used_hosts: set[int] = set()
    for i, name in enumerate(names):
        node: dict[str, object] = {
            "mac": f"52:54:00:{i >> 8:02x}:{i & 0xFF:02x}:{draw(st.integers(0, 255)):02x}",
            "profile": draw(st.sampled_from(["install", "disk"])),
            "labels": draw(st.dictionaries(_LABEL, _SAFE_TEXT, max_size=2)),
            "metadata": draw(st.dictionaries(_META_KEY, _SAFE_TEXT, max_size=2)),
        }
        if draw(st.booleans()):
            host = draw(st.integers(3, 99).filter(lambda h: h not in used_hosts))  # .1 routes, .2 may serve
            used_hosts.add(host)
            node["ip"] = f"10.{draw(st.integers(0, subnet_count - 1))}.0.{host}"
            # the ip must lie in the drawn subnet: rewrite the third octet to the subnet's
            idx = int(str(node["ip"]).split(".")[1])
            node["ip"] = str(subnets[idx]["subnet"]).rsplit(".", 1)[0] + f".{host}"
        files[f"nodes/{name}.yaml"] = json.dumps(node, ensure_ascii=False).encode()
    if draw(st.booleans()):
        files["groups/default.yaml"] = b"profile: disk\n"
    return files
