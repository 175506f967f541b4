"""Golden files: example-repo rendered at a fixed revision, compared byte for byte.

Regenerate after an intended change, then review the diff of tests/golden/:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render_golden.py
"""

from __future__ import annotations

import os
import shutil

from reconciler.core.render import render_generation
from tests.render_support import GOLDEN, GOLDEN_SECURE, example_state, secure_override_state


def _golden_tree() -> dict[str, bytes]:
    return {
        path.relative_to(GOLDEN).as_posix(): path.read_bytes() for path in sorted(GOLDEN.rglob("*")) if path.is_file()
    }


def test_example_repo_matches_golden_files() -> None:
    files = render_generation(example_state())
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for path, data in files.items():
            target = GOLDEN / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    golden = _golden_tree()
    assert sorted(files) == sorted(golden), "files added or removed: UPDATE_GOLDEN=1 and review the diff"
    changed = [path for path in files if files[path] != golden[path]]
    assert not changed, f"rendered files differ from tests/golden: {changed} (UPDATE_GOLDEN=1 and review the diff)"


DHCP_CONFIGS = ("dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf")


def test_secure_boot_override_dhcp_configs_match_golden_files() -> None:
    """The three DHCP configs of example-repo where db-1's profile overrides the site's
    `secure_boot`, both ways (`site-secure/`, `site-plain/`)."""
    for site_secure, sub in ((True, "site-secure"), (False, "site-plain")):
        files = render_generation(secure_override_state(site_secure))
        for name in DHCP_CONFIGS:
            target = GOLDEN_SECURE / sub / name
            if os.environ.get("UPDATE_GOLDEN"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(files[name])
            assert files[name] == target.read_bytes(), f"{target} differs (UPDATE_GOLDEN=1 and review the diff)"
