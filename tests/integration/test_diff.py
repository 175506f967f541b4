"""`netboot-reconcile diff` on real git repositories: two commits per case, read without a checkout.

Each case asserts what a reviewer sees in the pull-request comment (markdown) or what a script
reads (JSON), and the exit code: 0 no change, 1 changes (an invalid HEAD included), 2 error.
Golden markdown of one case: tests/golden/diff/, regenerated with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_diff.py` (review the diff).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from tests import repo_builder
from tests.diff_support import THREE_NODES, git, two_commits

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "diff"

def profile_with_args(*args: str, install_once: bool = True) -> str:
    lines = ["name: Install Ubuntu 22.04", "boot:", "  kernel: /assets/vmlinuz", "  initrd: [/assets/initrd]"]
    lines.append("  args:")
    lines += [f'    - "{a}"' for a in args]
    lines.append("cloud_init: autoinstall")
    if install_once:
        lines.append("install_once: true")
    return "\n".join(lines) + "\n"


BASE_ARGS = (
    "autoinstall",
    "ip=dhcp",
    "url={{ server_url }}/assets/ubuntu-22.04.5-live-server-amd64.iso",
    "cloud-config-url=/dev/null",
    "ds=nocloud;s={{ cloud_init_url }};dsmode=net",
)


def diff(repo: Path, *extra: str, base: str = "HEAD~1", head: str = "HEAD") -> tuple[int, str]:
    """Run the command in-process, as the CLI dispatches it; returns (exit code, stdout)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["diff", "--repo", str(repo), base, head, *extra])
    return code, out.getvalue()


def diff_json(repo: Path, **kw: str) -> tuple[int, dict[str, Any]]:
    code, text = diff(repo, "--format", "json", **kw)
    return code, json.loads(text)


# -- the cases of issue 9 ------------------------------------------------------------------------


def test_profile_change_reaches_three_nodes(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"profiles/install.yaml": profile_with_args(*BASE_ARGS, "quiet")})
    code, md = diff(repo)
    assert code == 1
    assert "**3 nodes change**: 0 added, 0 removed, 3 changed" in md
    assert "| profile `install` (changed) | 3 | node-1, node-2, node-3 | 3 |" in md
    for name in ("node-1", "node-2", "node-3"):
        assert f"| `{name}` | changed | `install` | kernel args | no (install-once: bump `reinstall` to apply) |" in md
    assert "  - added `quiet`" in md
    # every node's pinned URLs moved to a new sha, yet nothing but the real change shows
    assert "/r/" not in md.split("### Nodes")[1].split("<sub>")[0]
    assert "DHCP configs change" not in md

    code, doc = diff_json(repo)
    assert code == 1
    assert doc["summary"]["changed"] == ["node-1", "node-2", "node-3"]
    assert doc["blast_radius"] == [
        {
            "kind": "profile",
            "name": "install",
            "status": "changed",
            "reaches": ["node-1", "node-2", "node-3"],
            "count": 3,
            "changed_nodes": ["node-1", "node-2", "node-3"],
            "note": "",
        }
    ]
    assert doc["nodes"][0]["kernel_args"] == {"removed": [], "added": ["quiet"], "changed": [], "reordered": False}


def test_bumped_reinstall_counter_will_reinstall(tmp_path: Path) -> None:
    node3 = THREE_NODES["nodes/node-3.yaml"]
    assert node3 is not None
    repo = two_commits(tmp_path / "r", {"nodes/node-3.yaml": node3 + "reinstall: 1\n"})
    code, md = diff(repo)
    assert code == 1
    assert "**1 WILL REINSTALL**: `node-3`" in md
    assert "| `node-3` | changed | `install` | reinstall counter | **WILL REINSTALL** |" in md
    assert "- **reinstall counter**: `0` → `1`" in md
    assert "- **reinstall**: **WILL REINSTALL**: `reinstall` counter changed" in md
    assert "node-1" not in md and "node-2" not in md
    _, doc = diff_json(repo)
    assert doc["summary"]["will_reinstall"] == ["node-3"]
    assert doc["nodes"][0]["reinstall"]["verdict"] == "will-reinstall"


def test_new_node(tmp_path: Path) -> None:
    node4 = "mac: 52-54-00-AA-BB-04\nip: 10.10.10.204\nhostname: web-4\nprofile: install\n"
    repo = two_commits(tmp_path / "r", {"nodes/node-4.yaml": node4})
    code, md = diff(repo)
    assert code == 1
    assert "**1 node change**: 1 added, 0 removed, 0 changed" in md
    assert "| `node-4` | added | `install` | new machine | installs (new machine) |" in md
    assert "- **kernel**: `http://10.10.10.12/r/REVISION/assets/vmlinuz`" in md
    assert "- **ip**: `10.10.10.204`" in md
    assert "+  host node-4 {" in md  # dhcpd.conf
    assert "+dhcp-host=52:54:00:aa:bb:04,10.10.10.204,web-4" in md  # dnsmasq.conf
    assert "+    hostname: web-4" in md  # its user-data, in full


def test_removed_node(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"nodes/node-2.yaml": None})
    code, md = diff(repo)
    assert code == 1
    assert "**1 node change**: 0 added, 1 removed, 0 changed" in md
    assert "| `node-2` | removed | `install` | no longer declared | no |" in md
    assert "unknown MAC (ignored by DHCP)" in md
    assert "-  host node-2 {" in md
    assert "-dhcp-host=52:54:00:aa:bb:02,10.10.10.202,node-2" in md
    _, doc = diff_json(repo)
    assert doc["summary"] == {"added": [], "removed": ["node-2"], "changed": [], "will_reinstall": []}


def test_ip_change_shows_the_dhcp_reservation_in_every_config(tmp_path: Path) -> None:
    node1 = repo_builder.BASE["nodes/node-1.yaml"].replace("10.10.10.201", "10.10.10.211")
    repo = two_commits(tmp_path / "r", {"nodes/node-1.yaml": node1})
    code, md = diff(repo)
    assert code == 1
    assert "| `node-1` | changed | `install` | ip | no |" in md
    assert "- **ip**: `10.10.10.201` → `10.10.10.211`" in md
    assert "DHCP configs change: `dhcpd.conf`, `kea-dhcp4.conf`, `dnsmasq.conf`" in md
    assert "-    fixed-address 10.10.10.201;\n+    fixed-address 10.10.10.211;" in md
    assert '-            "ip-address": "10.10.10.201"\n+            "ip-address": "10.10.10.211"' in md
    assert "-dhcp-host=52:54:00:aa:bb:01,10.10.10.201,node-1\n+dhcp-host=52:54:00:aa:bb:01,10.10.10.211,node-1" in md
    _, doc = diff_json(repo)
    assert [d["path"] for d in doc["dhcp"]] == ["dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf"]
    assert doc["nodes"][0]["changes"] == [{"what": "ip", "before": "10.10.10.201", "after": "10.10.10.211"}]


def test_arg_change_is_argument_level(tmp_path: Path) -> None:
    args = [a for a in BASE_ARGS if a != "ip=dhcp"]
    args = [a.replace("22.04.5", "22.04.4") for a in args] + ["console=ttyS0,115200n8"]
    repo = two_commits(tmp_path / "r", {"profiles/install.yaml": profile_with_args(*args)})
    code, md = diff(repo)
    assert code == 1
    node1 = md.split("<summary><b>node-1</b>")[1].split("</details>")[0]
    assert "  - removed `ip=dhcp`" in node1
    assert "  - added `console=ttyS0,115200n8`" in node1
    assert (
        "  - changed `url=http://10.10.10.12/assets/ubuntu-22.04.5-live-server-amd64.iso`"
        " → `url=http://10.10.10.12/assets/ubuntu-22.04.4-live-server-amd64.iso`"
    ) in node1
    assert "install-once: an installed machine keeps booting its local disk; bump `reinstall` to apply this" in node1


def test_cloud_init_change_shows_user_data_diff_and_reach(tmp_path: Path) -> None:
    template = repo_builder.BASE["cloud-init/autoinstall.yaml"] + "  timezone: Europe/Paris\n"
    repo = two_commits(tmp_path / "r", {"cloud-init/autoinstall.yaml": template})
    code, md = diff(repo)
    assert code == 1
    assert "| cloud-init `autoinstall` (changed) | 3 | node-1, node-2, node-3 | 3 |" in md
    assert "| `node-2` | changed | `install` | user-data |" in md
    node2 = md.split("<summary><b>node-2</b>")[1].split("</details>")[0]
    assert "**cloud-init user-data**" in node2
    assert "--- base/node-2/user-data\n+++ head/node-2/user-data\n" in node2
    assert "+  timezone: Europe/Paris" in node2
    assert "reached by: cloud-init autoinstall" in node2


def test_invalid_head_prints_findings_first_and_exits_1(tmp_path: Path) -> None:
    bad = "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"
    repo = two_commits(tmp_path / "r", {"nodes/node-1.yaml": bad})
    code, md = diff(repo)
    assert code == 1
    lines = md.splitlines()
    assert lines[2].startswith("HEAD `") and "is **invalid**: 1 error(s), 0 warning(s)." in lines[2]
    assert lines[4:6] == ["```text", lines[5]]
    assert lines[5].startswith("nodes/node-1.yaml:2:1: error ip-in-pool: ip 10.10.10.50 of node 'node-1'")
    assert "HEAD will not be served" in md
    assert "| node |" not in md
    _, doc = diff_json(repo)
    assert doc["head"]["valid"] is False
    assert doc["head"]["issues"][0]["code"] == "ip-in-pool"
    assert doc["changed"] is True


def test_invalid_base_is_shown_and_head_compared_against_nothing(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"profiles/local.yaml": "name: Local disk\nboot: {}\n"},
                       base_edits={"profiles/local.yaml": "name: Local disk\nboot: {kernel: 7}\n"})  # fmt: skip
    code, md = diff(repo)
    assert code == 1
    assert "is invalid (1 error(s), 0 warning(s)): it was never served" in md
    assert "profiles/local.yaml:2:8: error schema: boot.kernel: expected text, found the number 7" in md
    assert "does not exist" not in md  # the node naming the broken profile is no second error
    assert "**3 nodes change**: 3 added, 0 removed, 0 changed" in md
    assert "Blast radius" not in md


def test_no_op_commit_exits_0(tmp_path: Path) -> None:
    node1 = "# moved to rack r1 in May\n" + repo_builder.BASE["nodes/node-1.yaml"]
    repo = two_commits(tmp_path / "r", {"nodes/node-1.yaml": node1})
    code, md = diff(repo)
    assert code == 0, md
    assert "**No change**: every machine boots, and every server answers, as before." in md
    code, doc = diff_json(repo)
    assert code == 0
    assert doc["changed"] is False and doc["nodes"] == [] and doc["dhcp"] == []
    assert diff(repo, base="HEAD", head="HEAD")[0] == 0  # an empty range too


def test_revisions_are_anything_revparse_takes(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"nodes/node-2.yaml": None})
    base_sha = git(repo, "rev-parse", "HEAD~1")
    git(repo, "branch", "feature")
    code, md = diff(repo, base=base_sha[:10], head="feature")
    assert code == 1 and f"`{base_sha[:12]}`" in md
    code, md = diff(repo, base="main", head="main~1")  # and backwards: the node comes back
    assert code == 1 and "| `node-2` | added |" in md


def test_path_selects_a_subdirectory(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    repo_builder.write(root / "site-a", THREE_NODES)
    (root / "README.md").write_text("ops monorepo\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    (root / "site-a" / "nodes" / "node-1.yaml").unlink()
    git(root, "commit", "-q", "-am", "head")
    code, md = diff(root, "--path", "site-a")
    assert code == 1 and "| `node-1` | removed |" in md


@pytest.mark.parametrize(
    ("base", "head", "message"),
    [("HEAD~1", "no-such-branch", "revision no-such-branch not found"), ("nope~3", "HEAD", "revision nope~3")],
)
def test_bad_revision_exits_2(tmp_path: Path, base: str, head: str, message: str) -> None:
    repo = two_commits(tmp_path / "r", {})
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "diff", "--repo", str(repo), base, head],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in proc.stderr


def test_not_a_repository_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "diff", "--repo", str(tmp_path), "HEAD~1", "HEAD"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "not a git repository" in proc.stderr


# -- golden markdown ---------------------------------------------------------------------------------


def golden_case(root: Path) -> Path:
    """A realistic review: a new kernel argument on the install profile, node-3 reinstalled with it."""
    node3 = THREE_NODES["nodes/node-3.yaml"]
    assert node3 is not None
    return two_commits(
        root,
        {
            "profiles/install.yaml": profile_with_args(*BASE_ARGS, "console=ttyS0,115200n8"),
            "nodes/node-3.yaml": node3 + "reinstall: 1\n",
        },
    )


def test_golden_markdown(tmp_path: Path) -> None:
    code, md = diff(golden_case(tmp_path / "r"))
    assert code == 1
    path = GOLDEN / "profile-change-and-reinstall.md"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(md)
    assert md == path.read_text(), "golden differs: UPDATE_GOLDEN=1 to regenerate, then review the diff"


def test_a_head_that_validates_but_fails_to_render_is_shown_invalid(tmp_path: Path) -> None:
    """As the daemon would refuse it: a finding, HEAD not served, no node table."""
    profile = profile_with_args(*BASE_ARGS, "b={{ revision[0] }}")
    code, md = diff(two_commits(tmp_path / "r", {"profiles/install.yaml": profile}))
    assert code == 1
    assert "is **invalid**" in md and "template-error: rendering failed" in md
    assert "HEAD will not be served" in md
