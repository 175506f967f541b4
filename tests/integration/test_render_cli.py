"""`netboot-reconcile render [PATH] --out DIR`: writes the tree, refuses an invalid repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from reconciler.adapters.dirsource import read_directory
from reconciler.core.render import render_generation
from tests.render_support import EXAMPLE, ROOT, valid_state


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_render_writes_the_generation_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli("render", str(EXAMPLE), "--out", str(out))
    assert result.returncode == 0, result.stderr
    expected = render_generation(valid_state(read_directory(EXAMPLE)))
    written = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert written.pop(".netboot-render.json")
    assert written == expected
    assert (out / "groups" / "node.node-1.json").is_file()
    assert (out / "cloud-init" / "52:54:00:aa:bb:01" / "user-data").is_file()


def test_render_refuses_an_invalid_repo_and_prints_findings_like_validate(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    (repo / "nodes" / "node-1.yaml").write_text("mac: 52:54:00:aa:bb:01\nprofile: nope\n")
    out = tmp_path / "out"
    result = _cli("render", str(repo), "--out", str(out))
    assert result.returncode == 1
    validate = _cli("validate", str(repo))
    assert validate.returncode == 1
    assert result.stdout == validate.stdout and "ref-profile" in result.stdout
    assert result.stderr == validate.stderr
    assert not out.exists()


def test_render_reports_a_template_that_fails_only_as_rendered_and_writes_nothing(tmp_path: Path) -> None:
    """Valid, but the renderer's pass without a revision fails: a finding, not a traceback."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    profile = repo / "profiles" / "ubuntu-2204-install.yaml"
    profile.write_text(profile.read_text().replace("    - console=ttyS0,115200n8\n",
                                                   "    - console=ttyS0,115200n8\n    - build={{ revision[0] }}\n"))
    out = tmp_path / "out"
    result = _cli("render", str(repo), "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert "error template-error: rendering failed:" in result.stdout and "Traceback" not in result.stderr
    assert not out.exists()


def test_render_without_out_is_a_usage_error(tmp_path: Path) -> None:
    assert _cli("render", str(EXAMPLE)).returncode == 2


def test_render_again_removes_a_deleted_nodes_files_and_keeps_foreign_ones(tmp_path: Path) -> None:
    repo, out = tmp_path / "repo", tmp_path / "out"
    shutil.copytree(EXAMPLE, repo)
    assert _cli("render", str(repo), "--out", str(out)).returncode == 0
    (out / "groups" / "mine.json").write_text("{}")  # a file the render never wrote
    assert (out / "groups" / "node.node-3.json").is_file()
    (repo / "nodes" / "node-3.yaml").unlink()
    result = _cli("render", str(repo), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert not (out / "groups" / "node.node-3.json").exists()  # matchbox would still boot it
    assert not (out / "cloud-init" / "52:54:00:aa:bb:03").exists()
    assert (out / "groups" / "node.node-1.json").is_file()
    assert (out / "groups" / "mine.json").read_text() == "{}"
