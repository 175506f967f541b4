"""`netboot-reconcile secrets set NAME [--repo PATH]`: encrypt a value into secrets.yaml.

The value is read from standard input when it is not a terminal (`printf %s "$HASH" | ...`; one
trailing newline is dropped), else prompted for twice without echo; never from the command line,
where `ps` and shell history would keep it. It is encrypted with age (`adapters.agecrypt`) for
every `recipients:` entry of PATH/secrets.yaml and written as NAME's block scalar under
`secrets:`: an existing NAME is replaced in place, a new one added after the last; the rest of
the file (comments, order) is kept byte for byte. Exit 0 written, 2 on any error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml

from reconciler.adapters.agecrypt import encrypt
from reconciler.core.snapshot import SECRETS_FILE
from reconciler.core.yamldoc import parse_yaml

EXIT_OK, EXIT_ERROR = 0, 2
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
EXAMPLE = "recipients:\n  - age1...   # age-keygen -y IDENTITY_FILE prints it\nsecrets: {}\n"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("secrets", help="manage secrets.yaml (age-encrypted values for templates)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = actions.add_parser("set", help="encrypt a value (from stdin or a prompt) as secrets.NAME")
    s.add_argument("name", metavar="NAME", help="the name templates use: {{ secrets.NAME }}")
    s.add_argument("--repo", type=Path, default=Path("."), help="repository directory (default: .)")
    s.set_defaults(func=run)


class SecretsError(Exception):
    pass


def read_value() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("value: ")
        if getpass.getpass("again: ") != first:
            raise SecretsError("the two values differ")
        value = first
    else:
        value = sys.stdin.read()
        value = value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
    if not value:
        raise SecretsError("the value is empty")
    return value


def _block(name: str, armored: str, indent: int) -> str:
    pad = " " * indent
    lines = "".join(f"{pad}  {line}\n" for line in armored.strip("\n").split("\n"))
    return f"{name}: |\n{lines}"


def set_secret(text: str, name: str, armored: str) -> str:
    """secrets.yaml `text` with NAME's value `armored` (replaced in place, or added)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise SecretsError(f"{SECRETS_FILE} is not a mapping")
    entry = next(((k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "secrets"), None)
    if entry is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + "secrets:\n  " + _block(name, armored, 2)
    key, value = entry
    if not isinstance(value, yaml.MappingNode) or value.flow_style or not value.value:
        if isinstance(value, yaml.MappingNode) and value.value:
            raise SecretsError(f"{SECRETS_FILE}: write `secrets:` as a block mapping (one NAME: per line) "
                               "to add to it")
        if isinstance(value, yaml.ScalarNode) and value.value not in ("", "~", "null"):
            raise SecretsError(f"{SECRETS_FILE}: `secrets:` must be a mapping of names")
        indent = key.start_mark.column + 2
        new = "secrets:\n" + " " * indent + _block(name, armored, indent)
        return _splice(text, key.start_mark.index, value.end_mark, new)
    for k, v in value.value:
        if isinstance(k, yaml.ScalarNode) and k.value == name:
            return _splice(text, k.start_mark.index, v.end_mark, _block(name, armored, k.start_mark.column))
    last_key, last = value.value[-1]
    indent = int(last_key.start_mark.column)
    at = last.end_mark.index
    if last.end_mark.column != 0:  # the value ends mid-line (a quoted or plain scalar)
        nl = text.find("\n", at)
        at = len(text) if nl < 0 else nl + 1
        if nl < 0:
            text += "\n"
            at = len(text)
    return text[:at] + " " * int(indent) + _block(name, armored, indent) + text[at:]


def _splice(text: str, start: int, end: yaml.Mark, new: str) -> str:
    """`text` with [start, end) replaced by `new` (which ends in a newline): kept when `end` is at
    a line's start, dropped when the old value ended mid-line (its newline is still there)."""
    if end.column != 0:
        new = new[:-1]
    return text[:start] + new + text[end.index:]


def run(args: argparse.Namespace) -> int:
    path = args.repo / SECRETS_FILE
    try:
        if not _NAME.fullmatch(args.name):
            raise SecretsError(f"{args.name!r}: a name is a letter or '_', then letters, digits or '_' "
                               "(templates write it as secrets.NAME)")
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise SecretsError(f"{path}: no such file; create it with the public keys that may decrypt:\n"
                               f"{EXAMPLE}") from None
        doc, issues = parse_yaml(SECRETS_FILE, text.encode())
        if doc is None or not isinstance(doc.data, dict):
            raise SecretsError(f"{path}: " + ("; ".join(i.message for i in issues) or "not a mapping"))
        recipients = doc.data.get("recipients")
        if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) for r in recipients):
            raise SecretsError(f"{path}: `recipients:` must list the public keys (age1... or ssh-ed25519 ...) "
                               "that may decrypt")
        armored = encrypt(recipients, read_value())
        new_text = set_secret(text, args.name, armored)
        check, _ = parse_yaml(SECRETS_FILE, new_text.encode())
        before = dict(doc.data.get("secrets") or {})
        if check is None or dict(check.data.get("secrets") or {}) != {**before, args.name: armored}:
            raise SecretsError(f"{path}: could not place {args.name} in the file as written (edit it by hand?)")
        _replace(path, new_text)
    except (SecretsError, OSError, ValueError, yaml.YAMLError) as exc:
        print(f"netboot-reconcile secrets set: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{path}: secrets.{args.name} encrypted for {len(recipients)} recipient(s)", file=sys.stderr)
    return EXIT_OK


def _replace(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
