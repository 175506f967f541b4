"""`netboot-reconcile validate` run as a user runs it: exit codes and the three formats."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests import repo_builder

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_example_repo_validates_clean() -> None:
    proc = run("validate", ROOT / "example-repo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 error(s), 0 warning(s)" in proc.stdout


def test_default_path_is_the_current_directory(tmp_path: Path) -> None:
    repo_builder.write(tmp_path)
    assert run("validate", cwd=tmp_path).returncode == 0


def test_invalid_repo_text_format(tmp_path: Path) -> None:
    repo_builder.write(tmp_path, {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: nope\n"})
    proc = run("validate", tmp_path)
    assert proc.returncode == 1
    assert "nodes/node-1.yaml:3:1: error ref-profile: node 'node-1' names profile 'nope'" in proc.stdout
    assert "invalid: 1 error(s)" in proc.stderr


def test_json_format(tmp_path: Path) -> None:
    repo_builder.write(tmp_path, {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"})
    proc = run("validate", tmp_path, "--format", "json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["valid"] is False
    assert doc["issues"][0] | {"message": ""} == {
        "file": "nodes/node-1.yaml",
        "line": 2,
        "column": 1,
        "severity": "error",
        "code": "ip-in-pool",
        "message": "",
    }


def test_github_format_makes_annotations(tmp_path: Path) -> None:
    repo_builder.write(tmp_path, {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"})
    proc = run("validate", tmp_path, "--format", "github")
    assert proc.returncode == 1
    line = proc.stdout.splitlines()[0]
    assert line.startswith("::error file=nodes/node-1.yaml,line=2,col=1,title=ip-in-pool::ip 10.10.10.50")


def test_github_annotations_of_a_subdirectory_name_the_file_from_the_workspace_root(tmp_path: Path) -> None:
    """`validate site` in a workflow: GitHub places an annotation by its path in the checkout."""
    node = "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"
    repo_builder.write(tmp_path / "site", {"nodes/node-1.yaml": node})
    from_root = run("validate", "site", "--format", "github", cwd=tmp_path)
    assert from_root.stdout.startswith("::error file=site/nodes/node-1.yaml,line=2,"), from_root.stdout
    env = {**os.environ, "GITHUB_WORKSPACE": str(tmp_path)}
    elsewhere = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(tmp_path / "site"), "--format",
                                "github"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert elsewhere.stdout.startswith("::error file=site/nodes/node-1.yaml,line=2,"), elsewhere.stdout


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    repo_builder.write(
        tmp_path,
        {
            "profiles/install.yaml": "boot:\n  kernel: /k\n  args: [autoinstall, 'ds=nocloud;s={{ cloud_init_url }}']\n"
            "cloud_init: autoinstall\n"
        },
    )
    assert run("validate", tmp_path).returncode == 0
    strict = run("validate", tmp_path, "--strict")
    assert strict.returncode == 1
    assert "warning autoinstall-without-ip-dhcp" in strict.stdout


def test_missing_path_is_exit_2(tmp_path: Path) -> None:
    proc = run("validate", tmp_path / "nowhere")
    assert proc.returncode == 2
    assert "nowhere" in proc.stderr


def test_a_revision_git_does_not_know_is_exit_2(tmp_path: Path) -> None:
    """It was exit 1, "invalid", with a finding at `site:0:0`, as if the commit were broken (diff exits 2)."""
    site = repo_builder.write(tmp_path / "site")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for git in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "site"]):
        subprocess.run(["git", *git], cwd=site, env=env, check=True, capture_output=True)
    assert run("validate", site, "HEAD").returncode == 0
    proc = run("validate", site, "no-such-branch")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "revision no-such-branch not found" in proc.stderr


def test_usage_error_is_exit_2() -> None:
    assert run("validate", "--format", "xml").returncode == 2


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("netboot-reconcile")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "netboot-reconcile" in proc.stdout


def test_fifos_and_sockets_are_refused_not_read(tmp_path: Path) -> None:
    """A FIFO where a node file belongs used to hang `validate` (open() waits for a writer)."""
    repo_builder.write(tmp_path)
    os.mkfifo(tmp_path / "nodes" / "node-9.yaml")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "profiles" / "sock.yaml"))
    try:
        proc = run("validate", tmp_path, "--format", "json")
    finally:
        sock.close()
    assert proc.returncode == 1, proc.stderr
    refused = {(i["file"], i["code"], i["message"]) for i in json.loads(proc.stdout)["issues"]}
    assert ("nodes/node-9.yaml", "special-file", "nodes/node-9.yaml is a FIFO: only regular files are read") in refused
    assert ("profiles/sock.yaml", "special-file", "profiles/sock.yaml is a socket: only regular files are read") \
        in refused
