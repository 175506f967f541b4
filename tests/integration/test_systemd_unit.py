"""contrib/netboot-reconcile.service works as shipped, installed as the README says.

Each test works in its own mount (and network) namespace, so the host's /opt, /srv, /var/lib and
/etc are never touched: /opt/netboot-reconcile is made as the README's install makes it (a venv;
pip's console script, whose packages are this checkout's, instead of a download), the repository
is cloned to the unit's /srv/netboot-repo, /etc is an overlay for `git config --system`.
`systemd-analyze verify` checks the unit, and the unit's ExecStart is run as written (its
Environment= defaults expanded) as an unprivileged uid (DynamicUser=yes) holding only the unit's
AmbientCapabilities, in WorkingDirectory with the StateDirectory made as systemd makes it. The
sandbox options (ProtectSystem=, RestrictAddressFamilies=, ...) need systemd as PID 1 and are
only checked by `systemd-analyze verify` here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon_support import ROOT, WorkTree
from tests.support import require_root, require_tool

UNIT = ROOT / "contrib" / "netboot-reconcile.service"
README = ROOT / "README.md"
SERVICE_UID = 61234  # stands for the dynamic user: owns nothing but the state directory


def unit_settings(text: str) -> dict[str, list[str]]:
    """The [Service] keys of a unit file (continuation lines joined), each key's values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def exec_start(settings: dict[str, list[str]]) -> list[str]:
    """ExecStart as systemd runs it: ${VAR} replaced in a word, a lone $VAR split at whitespace."""
    env = dict(value.split("=", 1) for value in settings["Environment"])
    argv: list[str] = []
    for word in shlex.split(settings["ExecStart"][0]):
        if re.fullmatch(r"\$\w+", word):
            argv += env.get(word[1:], "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def readme_install() -> tuple[str, list[str]]:
    """The venv the README installs into, and its `git config --system` lines."""
    text = README.read_text()
    section = text[text.index("### Installing as a systemd service"):]
    venv = re.search(r"^python3 -m venv (\S+)$", section, re.M)
    assert venv is not None, "README: no `python3 -m venv DIR` in the install section"
    trust = re.findall(r"^git config --system .*$", section, re.M)
    return venv.group(1), trust


def install_script(tmp: Path, venv: str) -> str:
    """Shell lines (run in the test's own mount namespace) that make `venv` as the README does."""
    require_tool("unshare", "util-linux")
    python = Path("/usr/bin/python3")
    found = subprocess.run([str(python), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                           text=True, check=False).stdout.strip()
    if found != str(sys.version_info[:2]):
        pytest.fail(f"{python} is Python {found or '(missing)'}, the tests' venv {sys.version_info[:2]}: "
                    "apt-get install python3 python3-venv (scripts/test.sh makes .venv with it)")
    console = Path(sys.executable).with_name("netboot-reconcile")
    script = console.read_text().split("\n", 1)[1]
    (tmp / "console").write_text(f"#!{venv}/bin/python\n{script}")
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (tmp / "path.pth").write_text(f"{site}\n{ROOT}\n")
    return f"""
set -eu
mount -t tmpfs tmpfs {Path(venv).parent}
{python} -m venv --without-pip {venv}
cp {tmp}/path.pth "$({venv}/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/"
install -m 0755 {tmp}/console {venv}/bin/netboot-reconcile
"""


def in_namespace(script: str, *, net: bool = False, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = ["unshare", "--mount", "--propagation", "private", *(["--net"] if net else []), "bash", "-c", script]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def test_the_unit_passes_systemd_analyze_verify_with_the_binary_where_the_readme_installs_it(
        tmp_path: Path) -> None:
    require_root()
    analyze = require_tool("systemd-analyze", "systemd")
    venv, _ = readme_install()
    argv = exec_start(unit_settings(UNIT.read_text()))
    assert argv[0] == f"{venv}/bin/netboot-reconcile", f"ExecStart runs {argv[0]}; the README installs into {venv}"
    proc = in_namespace(install_script(tmp_path, venv) + f"""
{venv}/bin/netboot-reconcile --version
{analyze} verify --man=no {UNIT}
""")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # verify prints its complaints (and exits 0 on some of them)


def test_the_units_execstart_serves_the_repository_as_its_dynamic_user(tmp_path: Path) -> None:
    require_root()
    for tool, package in (("setpriv", "util-linux"), ("ip", "iproute2"), ("curl", "curl"), ("git", "git")):
        require_tool(tool, package)
    venv, trust = readme_install()
    settings = unit_settings(UNIT.read_text())
    argv = exec_start(settings)
    assert trust, "README: the install section names no `git config --system --add safe.directory` line"
    assert settings["DynamicUser"] == ["yes"]
    state = Path("/var/lib") / settings["StateDirectory"][0]
    workdir = settings["WorkingDirectory"][0]
    repo = argv[argv.index("--repo") + 1]
    http = argv[argv.index("--http-listen") + 1].rsplit(":", 1)[1]
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in settings["AmbientCapabilities"][0].split())
    site = WorkTree(tmp_path / "site")
    # example-repo's password hash is an age secret and this unit is given no identity (README
    # "Secrets": LoadCredential= and --age-identity %d/...): serve the site with the hash in clear.
    seed = (site.path / "cloud-init/ubuntu-autoinstall.yaml").read_text()
    site.commit("no secrets", {"secrets.yaml": None, "cloud-init/ubuntu-autoinstall.yaml":
                               seed.replace("{{ secrets.root_password_hash }}", "$6$demo$notasecret")})
    (tmp_path / "etc-upper").mkdir()
    (tmp_path / "etc-work").mkdir()
    run = (f"cd {workdir} && setpriv --reuid={SERVICE_UID} --regid={SERVICE_UID} --clear-groups "
           f"--inh-caps={caps} --ambient-caps={caps} -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/ "
           f"LANG=C.UTF-8 {shlex.join(argv)}")
    proc = in_namespace(install_script(tmp_path, venv) + f"""
ip link set lo up
mount -t tmpfs tmpfs {Path(repo).parent}
git clone -q {site.path} {repo}
mount -t tmpfs tmpfs {state.parent}
mkdir -p {state} && chown {SERVICE_UID}:{SERVICE_UID} {state} && chmod 0750 {state}
mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path}/etc-upper,workdir={tmp_path}/etc-work /etc
set +e
# Before the README's safe.directory line: the service stops at once, saying what to run.
timeout 60 bash -c {shlex.quote(run)} > {tmp_path}/untrusted.log 2>&1
echo "untrusted exit $?"
set -e
{chr(10).join(trust)}
bash -c {shlex.quote(run)} > {tmp_path}/daemon.log 2>&1 &
daemon=$!
for i in $(seq 600); do
  curl -sf http://127.0.0.1:{http}/status > {tmp_path}/status.json && grep -q '"last_applied_revision": "[0-9a-f]' \
    {tmp_path}/status.json && break
  kill -0 $daemon 2>/dev/null || break
  sleep 0.1
done
curl -sf -o /dev/null -w 'healthz %{{http_code}}\\n' http://127.0.0.1:{http}/healthz || true
stat -c 'state owner %u' {state}/results.sqlite3 || true
kill -TERM $daemon; wait $daemon; echo "daemon exit $?"
""", net=True)
    log = (tmp_path / "daemon.log").read_text() if (tmp_path / "daemon.log").exists() else ""
    untrusted = (tmp_path / "untrusted.log").read_text() if (tmp_path / "untrusted.log").exists() else ""
    assert "untrusted exit 2" in proc.stdout, proc.stdout + proc.stderr + untrusted
    assert f"git config --system --add safe.directory {repo}" in untrusted, untrusted
    assert "healthz 200" in proc.stdout, proc.stdout + proc.stderr + log
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_applied_revision"] == site.head(), status
    assert f"state owner {SERVICE_UID}" in proc.stdout, proc.stdout + proc.stderr
    assert "daemon exit 0" in proc.stdout, proc.stdout + proc.stderr + log
    assert "Traceback" not in log, log
