"""An upstream for asset tests: a real ISO (xorriso) holding casper/vmlinuz and casper/initrd, its
SHA256SUMS signed with a throwaway GnuPG key, served by nginx on loopback.

Used by tests/integration/test_assets_*.py and bench/assets.py (smoke and full runs). nginx's
access log records each request's status and Range header, so a test can see a resume happen.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MISSING = "apt-get install {package} (scripts/test.sh installs it)"


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise RuntimeError(f"{name} not found: " + MISSING.format(package=package))
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_iso(out: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None,
             big: dict[str, int] | None = None) -> Path:
    """An ISO 9660 image with Rock Ridge and Joliet names (xorriso -as mkisofs -r -J)."""
    src = out.parent / (out.name + ".src")
    shutil.rmtree(src, ignore_errors=True)
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    for name, size in (big or {}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        with open(src / name, "wb") as fh:
            block = os.urandom(1 << 20)
            for _ in range(size >> 20):
                fh.write(block)
                block = hashlib.sha256(block[:64]).digest() + block[32:]
    for name, target in (symlinks or {}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).symlink_to(target)
    subprocess.run([tool("xorriso", "xorriso"), "-as", "mkisofs", "-r", "-J", "-V", "NETBOOT_TEST", "-o", str(out),
                    str(src)], check=True, capture_output=True)
    shutil.rmtree(src)
    return out


@dataclass
class Signer:
    """A throwaway GnuPG home with one signing key."""

    home: Path

    @classmethod
    def create(cls, home: Path, uid: str = "Netboot Test <test@example.invalid>") -> Signer:
        home.mkdir(parents=True, mode=0o700)
        gpg = tool("gpg", "gnupg")
        subprocess.run([gpg, "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", uid,
                        "ed25519", "sign", "never"], check=True, capture_output=True)
        return cls(home)

    def public_key(self, armor: bool = False) -> bytes:
        args = [tool("gpg", "gnupg"), "--homedir", str(self.home), "--export"] + (["--armor"] if armor else [])
        return subprocess.run(args, check=True, capture_output=True).stdout

    def sign(self, path: Path) -> Path:
        sig = path.with_name(path.name + ".gpg")
        sig.unlink(missing_ok=True)
        subprocess.run([tool("gpg", "gnupg"), "--homedir", str(self.home), "--batch", "--detach-sign", "--output",
                        str(sig), str(path)], check=True, capture_output=True)
        return sig

    def stop(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False, capture_output=True)


def write_sums(directory: Path, names: list[str]) -> Path:
    sums = directory / "SHA256SUMS"
    sums.write_text("".join(f"{sha256_of(directory / n)} *{n}\n" for n in names))
    return sums


class Nginx:
    """nginx-light serving `root` on 127.0.0.1:`port`, with a slow location for resume tests and a
    redirect loop."""

    def __init__(self, tmp: Path, root: Path, port: int) -> None:
        self.tmp, self.root, self.port = tmp, root, port
        self.log = tmp / "access.log"
        conf = tmp / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must read files under a 0700 tmp dir
        conf.write_text(f"""
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    log_format ranges '$status $request_uri range=$http_range';
    access_log {self.log} ranges;
    sendfile on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location /slow/ {{ alias {root}/; limit_rate 256k; }}
        location /loop {{ return 302 /loop; }}
        location / {{ root {root}; }}
    }}
}}
""")
        self.proc = subprocess.Popen([tool("nginx", "nginx-light"), "-c", str(conf), "-p", str(tmp),
                                      "-g", "daemon off;"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.url("/loop-probe"), timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise RuntimeError(f"nginx did not start: {err!r}") from None
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
