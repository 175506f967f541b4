"""The BMC credentials file (`--bmc-credentials FILE`): NAME -> username and password.

Read by `commands.power` (and later the daemon's rollouts). The file lives outside git; a node's
`bmc.credentials` names an entry. YAML or JSON (JSON is YAML):

    lab-admin: {username: admin, password: s3cret}

Like ssh with a private key, a file that its group or others can read or write is refused (the
mode of the file itself, after symlinks: a Kubernetes Secret volume or a credentials directory
presents each key as a symlink to the real file, mode 0400). No
message here ever quotes the file's text: a YAML error is reported by line only, because the
parser's own message shows the offending line, which may hold a password.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class CredentialsError(Exception):
    """The file cannot be used; the message names the file (and entry), never a secret."""


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:  # a traceback or a log line must not show the password
        return f"Credential(username={self.username!r}, password=***)"


def load(path: Path) -> Mapping[str, Credential]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CredentialsError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise CredentialsError(f"{path}: not a regular file")
        if mode & 0o077:
            raise CredentialsError(
                f"{path}: permissions {stat.S_IMODE(mode):04o} are too open: the BMC credentials file must be "
                f"readable by its owner only (chmod 600 {path})")
        raw = fh.read(1 << 20)
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CredentialsError(f"{path}: not valid YAML or JSON{where}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path}: expected a mapping of NAME: {{username: ..., password: ...}}")
    out: dict[str, Credential] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != {"username", "password"} \
                or not all(isinstance(entry[k], str) for k in ("username", "password")):
            raise CredentialsError(f"{path}: entry {str(name)!r}: expected exactly username and password, as strings")
        out[str(name)] = Credential(entry["username"], entry["password"])
    return out
