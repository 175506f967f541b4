"""Boot assets for the e2e tests: a Debian cloud kernel and a busybox initramfs that reports back.

Built once and cached in `tests/e2e/.cache/` (gitignored), keyed by the kernel package version
and a digest of the initramfs recipe below, so later runs reuse them:

- `vmlinuz`: from `apt-get download linux-image-<ver>-cloud-amd64` + `dpkg-deb -x`.
- `initrd`: a gzip'd cpio (newc) holding busybox-static, the virtio network modules taken from
  the same package (with their dependencies, read from each module's `.modinfo`), and `/init`:
  load the modules, `udhcpc`, read `ds=nocloud;s=<url>` and `e2e.report=<url>` from
  /proc/cmdline, fetch `<url>meta-data` and `<url>user-data`, POST a JSON report (status,
  message, cmdline, what it fetched) to the report URL, print all of it on ttyS0, `poweroff -f`.

Lines the harness looks for on the serial console start with `E2E:`; the report body is also
printed between `E2E-REPORT-BEGIN` / `E2E-REPORT-END`, and the server's answer to the POST between
`E2E-REPLY-BEGIN` / `E2E-REPLY-END`.

Caller: `tests/e2e/conftest.py` (`build_assets()`), `bench/boot_storm.py`. Builds hold
`cache_lock`: pytest-xdist workers and a bench may ask for the same asset at once, and one builds it.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import cache_lock

CACHE = Path(__file__).resolve().parent / ".cache"
META_PACKAGE = "linux-image-cloud-amd64"
# what virtio-net-pci needs in a kernel where these are modules; dependencies are added from .modinfo
NET_MODULES = ("virtio_pci", "virtio_net")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec >/dev/console 2>&1
echo "E2E: init started"
for m in $(cat /lib/modules/order); do
  if insmod /lib/modules/$m.ko; then echo "E2E: insmod $m ok"; else echo "E2E: insmod $m failed"; fi
done
ip link set lo up
IF=""
for i in 1 2 3 4 5 6 7 8 9 10; do
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] && continue
    IF=$n
  done
  [ -n "$IF" ] && break
  sleep 1
done
if [ -z "$IF" ]; then echo "E2E: no network interface"; poweroff -f; fi
MAC=$(cat /sys/class/net/$IF/address)
echo "E2E: interface $IF mac $MAC"
ip link set "$IF" up
if udhcpc -i "$IF" -s /etc/udhcpc.script -n -q -t 20 -T 3 -A 2; then
  echo "E2E: dhcp ok $(cat /tmp/ip 2>/dev/null)"
else
  echo "E2E: dhcp failed"
  poweroff -f
fi
CMDLINE=$(cat /proc/cmdline)
echo "E2E: cmdline $CMDLINE"
SEED=""
REPORT=""
for w in $CMDLINE; do
  case "$w" in
    ds=nocloud\;s=*) SEED=${w#ds=nocloud;s=} ;;
    e2e.report=*) REPORT=${w#e2e.report=} ;;
  esac
done
echo "E2E: seed $SEED"
echo "E2E: report-url $REPORT"
STATUS=success
MSG="fetched NoCloud seed"
# (busybox 1.35 static: `wget -T` segfaults, hence `timeout`)
fetch() {
  if timeout 30 wget -q -O "/tmp/$1" "$SEED$1"; then
    echo "E2E: fetched $1 ($(wc -c < /tmp/$1) bytes)"
    echo "E2E-FILE-BEGIN $1"; cat "/tmp/$1"; echo; echo "E2E-FILE-END $1"
  else
    echo "E2E: fetch $1 failed"
    STATUS=failure
    MSG="could not fetch $1"
    : > "/tmp/$1"
  fi
}
if [ -z "$SEED" ]; then
  STATUS=failure
  MSG="no ds=nocloud;s= on the kernel command line"
  : > /tmp/meta-data; : > /tmp/user-data
else
  fetch meta-data
  fetch user-data
fi
# JSON string escaping: backslash, quote, then control characters as spaces / \n
jstr() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/ /g' "$1" | awk 'BEGIN{ORS=""} NR>1{print "\\n"} {print}'; }
printf '%s' "$CMDLINE" > /tmp/cmdline
printf '%s' "$MSG" > /tmp/msg
{
  printf '{"status":"%s","message":"%s","mac":"%s","interface":"%s",' "$STATUS" "$(jstr /tmp/msg)" "$MAC" "$IF"
  printf '"cmdline":"%s",' "$(jstr /tmp/cmdline)"
  printf '"meta_data":"%s","user_data":"%s"}' "$(jstr /tmp/meta-data)" "$(jstr /tmp/user-data)"
} > /tmp/report.json
echo "E2E-REPORT-BEGIN"
cat /tmp/report.json
echo
echo "E2E-REPORT-END"
if [ -n "$REPORT" ]; then
  ok=""
  for i in 1 2 3; do
    if timeout 30 wget -q -O /tmp/report.out --header "Content-Type: application/json" \
        --post-file /tmp/report.json "$REPORT"; then ok=1; break; fi
    sleep 2
  done
  if [ -n "$ok" ]; then echo "E2E: report posted"; else echo "E2E: report post failed"; fi
  echo "E2E-REPLY-BEGIN"; cat /tmp/report.out 2>/dev/null; echo; echo "E2E-REPLY-END"
fi
echo "E2E: done $STATUS"
sync
poweroff -f
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface" 2>/dev/null; break; done
    echo "$ip" > /tmp/ip
    echo "E2E: udhcpc $1 ip=$ip mask=$mask router=$router serverid=$serverid" ;;
esac
exit 0
"""


@dataclass(frozen=True)
class BootAssets:
    kernel: Path
    initrd: Path
    kernel_version: str


class AssetError(RuntimeError):
    pass


def _run(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssetError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def kernel_package() -> str:
    """The versioned package `linux-image-cloud-amd64` depends on (`apt-cache depends`)."""
    out = _run("apt-cache", "depends", META_PACKAGE)
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+-cloud-amd64)\s*$", line)
        if m:
            return m.group(1)
    raise AssetError(f"apt-cache depends {META_PACKAGE} names no linux-image-*-cloud-amd64: {out!r}")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def _depends(ko: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_closure(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """The wanted modules and their dependencies, in load order; built-in ones are left out."""
    builtin_file = moddir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        for line in builtin_file.read_text().splitlines():
            builtin.add(Path(line).name.split(".ko")[0].replace("-", "_"))
    files: dict[str, Path] = {}
    for path in (moddir / "kernel").rglob("*.ko*"):
        files[path.name.split(".ko")[0].replace("-", "_")] = path
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in files:
            raise AssetError(f"module {name} is neither built in nor in {moddir}")
        data = _read_module(files[name])
        for dep in _depends(data):
            visit(dep)
        order.append((name, data))

    for name in wanted:
        visit(name)
    return order


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: tuple[int, int] = (0, 0)) -> bytes:
    namez = name.encode() + b"\x00"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
    head = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
    out = head + namez
    out += b"\x00" * (-len(out) % 4)
    out += data
    out += b"\x00" * (-len(out) % 4)
    return out


def build_cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data); directories have mode 0o040xxx and no data.

    `dev/console` (character device 5:1) is added, so the kernel has a console before /init runs.
    """
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries, start=1):
        out += _cpio_entry(name, mode, data, ino)
    out += _cpio_entry("dev/console", 0o020600, b"", len(entries) + 1, (5, 1))
    out += _cpio_entry("TRAILER!!!", 0)
    return bytes(out)


def build_initramfs(busybox: Path, modules: list[tuple[str, bytes]]) -> bytes:
    dirs = ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "lib", "lib/modules"]
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in dirs]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    entries.append(("init", 0o100755, INIT.encode()))
    entries.append(("etc/udhcpc.script", 0o100755, UDHCPC_SCRIPT.encode()))
    for name, data in modules:
        entries.append((f"lib/modules/{name}.ko", 0o100644, data))
    entries.append(("lib/modules/order", 0o100644, "".join(f"{n}\n" for n, _ in modules).encode()))
    archive = build_cpio(entries)
    return gzip.compress(archive, compresslevel=6, mtime=0)


def recipe_digest(busybox: Path) -> str:
    h = hashlib.sha256()
    h.update(INIT.encode())
    h.update(UDHCPC_SCRIPT.encode())
    h.update(",".join(NET_MODULES).encode())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    h.update(b"cpio-v1")
    return h.hexdigest()[:16]


def build_assets(cache: Path = CACHE, busybox: Path | None = None) -> BootAssets:
    """Build (or reuse) vmlinuz + initrd under `cache`; raises AssetError naming what failed."""
    busybox = busybox or Path(shutil.which("busybox") or "/bin/busybox")
    if not busybox.exists():
        raise AssetError("busybox not found: apt-get install busybox-static")
    package = kernel_package()
    digest = recipe_digest(busybox)
    out = cache / f"{package}-{digest}"
    kernel, initrd = out / "vmlinuz", out / "initrd"
    if kernel.exists() and initrd.exists():
        return BootAssets(kernel, initrd, package)
    with cache_lock(cache):
        if not (kernel.exists() and initrd.exists()):  # another process built it while we waited
            _build(cache, package, busybox, out)
    return BootAssets(kernel, initrd, package)


def _build(cache: Path, package: str, busybox: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        work = Path(tmp)
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            _run("apt-get", "download", package, cwd=cache)
            debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            raise AssetError(f"apt-get download {package} produced no .deb in {cache}")
        _run("dpkg-deb", "-x", str(debs[-1]), str(work / "root"))
        vmlinuz = sorted((work / "root" / "boot").glob("vmlinuz-*"))
        moddirs = sorted((work / "root" / "lib" / "modules").glob("*"))
        if not vmlinuz or not moddirs:
            raise AssetError(f"{debs[-1]} holds no /boot/vmlinuz-* or /lib/modules/*")
        modules = module_closure(moddirs[0], NET_MODULES)
        staged = work / "out"
        staged.mkdir()
        shutil.copyfile(vmlinuz[0], staged / "vmlinuz")
        (staged / "initrd").write_bytes(build_initramfs(busybox, modules))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)


def install_into(assets: BootAssets, assets_dir: Path, prefix: str = "e2e") -> tuple[str, str]:
    """Copy kernel and initrd into `assets_dir/<prefix>/`; return their `/assets/...` paths."""
    target = assets_dir / prefix
    target.mkdir(parents=True, exist_ok=True)
    for src, name in ((assets.kernel, "vmlinuz"), (assets.initrd, "initrd")):
        dst = target / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    return f"/assets/{prefix}/vmlinuz", f"/assets/{prefix}/initrd"


if __name__ == "__main__":
    built = build_assets()
    print(built.kernel, built.kernel.stat().st_size)
    print(built.initrd, built.initrd.stat().st_size)
