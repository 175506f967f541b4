"""Secrets: secrets.yaml's age-encrypted named values, as templates see them (`{{ secrets.NAME }}`).

Called by `core.validate` (structure, the names templates use, and with a decrypter whether each
value decrypts), by the renderer (`render.render_served` reveals them for the daemon; everything
else renders placeholders), by the `diff` command (which names changed, never what they hold)
and by the artifact writer's caller (`private_paths`: the rendered files holding a value).

Pure: decryption is a `Decrypter` the caller hands in (`adapters.agecrypt`, pyrage), so this
module neither reads the identity file nor imports age. A value is only ever used in cloud-init
user-data (served to its node alone): kernel arguments are readable by every user of the
machine and sit in boot scripts, so a profile's kernel, initrd or args naming `secrets` is an
error. Validation renders placeholders (`<secret:NAME>`), so no finding can quote a value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml
from yaml.constructor import SafeConstructor

from reconciler.core import template
from reconciler.core.codes import issue
from reconciler.core.collect import Findings
from reconciler.core.errors import InvalidRevision
from reconciler.core.locate import Locator
from reconciler.core.model import CloudInitTemplate, DesiredState, Issue, Location, Profile, Secret, SecretsFile
from reconciler.core.yamldoc import Document

NOT_CHECKED = ("secrets.yaml: the values were not decrypted (no --age-identity): only their structure and the "
               "names templates use were checked")


class SecretUnreadable(Exception):
    """A value that does not decrypt; the message says why (no matching identity, corrupt, ...)."""


class Decrypter(Protocol):
    """Decrypts one armored ciphertext to text (SecretUnreadable when it cannot). `key`: secret,
    stable bytes (derived from the identity) that key the values' fingerprints."""

    key: bytes

    def __call__(self, ciphertext: str) -> str: ...


def placeholder(name: str, changed: bool = False) -> str:
    return f"<secret:{name}:changed>" if changed else f"<secret:{name}>"


@dataclass(frozen=True, repr=False)
class SecretValues:
    """What `secrets` holds in templates (`values`), and what it holds on the renderer's
    instance-id pass (`stable`: a keyed fingerprint per value, so a changed value changes the
    instance-id without the instance-id telling anything about the value). Never printed."""

    values: Mapping[str, str] = field(default_factory=dict)
    stable: Mapping[str, str] = field(default_factory=dict)
    revealed: bool = False  # real values: the files holding them are private

    def __repr__(self) -> str:
        return f"SecretValues({len(self.values)} {'revealed' if self.revealed else 'placeholders'})"


def placeholders(names: Iterable[str], changed: Collection[str] = ()) -> SecretValues:
    """Placeholder values (`render` without an identity, `diff`, validation); `changed` names get
    the changed marker, so a diff of rendered user-data shows that a value changed, not what to."""
    values = {name: placeholder(name, name in changed) for name in names}
    return SecretValues(values, values)


def parse(doc: Document, out: Findings) -> SecretsFile:
    """secrets.yaml's values (its schema already checked)."""
    raw = doc.data.get("secrets") or {}
    secrets = {name: Secret(name, text, doc.loc(("secrets", name))) for name, text in raw.items()}
    return SecretsFile(tuple(doc.data["recipients"]), secrets, doc.loc())


def check_decrypt(file: SecretsFile, decrypt: Decrypter) -> list[Issue]:
    """A `secret-undecryptable` error for each value `decrypt` cannot open, at its line."""
    found: list[Issue] = []
    for secret in file.secrets.values():
        try:
            decrypt(secret.ciphertext)
        except SecretUnreadable as exc:
            found.append(_undecryptable(secret, str(exc)))
    return found


def _undecryptable(secret: Secret, why: str) -> Issue:
    return issue("secret-undecryptable", secret.source, f"secret {secret.name!r} cannot be decrypted: {why}")


def reveal(file: SecretsFile | None, decrypt: Decrypter | None) -> SecretValues:
    """Every value decrypted, in memory, for the daemon's renderer; InvalidRevision naming each
    value that does not decrypt (or all of them without an identity: placeholders must never
    reach a machine)."""
    if file is None or not file.secrets:
        return SecretValues(revealed=True)
    if decrypt is None:
        found = [_undecryptable(s, "the daemon has no --age-identity") for s in file.secrets.values()]
        raise InvalidRevision(f"{len(found)} secret(s) cannot be decrypted", tuple(found))
    values: dict[str, str] = {}
    problems: list[Issue] = []
    for name, secret in file.secrets.items():
        try:
            values[name] = decrypt(secret.ciphertext)
        except SecretUnreadable as exc:
            problems.append(_undecryptable(secret, str(exc)))
    if problems:
        raise InvalidRevision(f"{len(problems)} secret(s) cannot be decrypted", tuple(problems))
    stable = {name: "<secret:" + hmac.new(decrypt.key, f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]
              + ">" for name, value in values.items()}
    return SecretValues(values, stable, revealed=True)


def changed_names(base: SecretsFile | None, head: SecretsFile | None, decrypt: Decrypter | None) -> frozenset[str]:
    """The names whose value differs between two revisions: plaintexts compared with a decrypter,
    else ciphertexts (a value encrypted again counts as changed). A name added or removed is a
    change; a value that does not decrypt is compared by its ciphertext."""
    before = dict(base.secrets) if base is not None else {}
    after = dict(head.secrets) if head is not None else {}
    out: set[str] = set(before.keys() ^ after.keys())
    for name in before.keys() & after.keys():
        a, b = before[name].ciphertext, after[name].ciphertext
        if a == b:
            continue
        if decrypt is not None:
            try:
                if hmac.compare_digest(decrypt(a).encode(), decrypt(b).encode()):
                    continue
            except SecretUnreadable:
                pass
        out.add(name)
    return frozenset(out)


# -- references in templates -------------------------------------------------------------------


def check_references(
    file: SecretsFile | None,
    profiles: Mapping[str, Profile],
    cloud_init: Mapping[str, CloudInitTemplate],
    where: Locator,
    out: Findings,
    failed: bool = False,
) -> frozenset[str]:
    """`secret-unknown` for each `secrets.NAME` a cloud-init template uses that secrets.yaml does
    not hold, `secret-in-boot-args` for a profile whose kernel, initrd or args name `secrets`.
    Returns every name the templates use (validation renders a placeholder for each). `failed`:
    secrets.yaml is there but failed its own checks (which say why): names are not checked."""
    known = file.secrets if file is not None else {}
    used: set[str] = set()
    for tpl in cloud_init.values():
        for name, line in template.secret_references(tpl.text):
            if name is None:
                continue  # `secrets[x]`, `secrets` as a whole: checked when rendered
            used.add(name)
            if name not in known and not failed:
                hint = "" if file is not None else " (there is no secrets.yaml)"
                out.report("secret-unknown", Location(tpl.source.file, line, 0),
                           f"secrets.{name} is not in secrets.yaml{hint}: add it with "
                           f"`netboot-reconcile secrets set {name}`")
    for profile in profiles.values():
        places = [(where.boot_path(profile, i), t) for i, t in enumerate((profile.boot.kernel, *profile.boot.initrd))]
        places += [(where.arg(profile, i), t) for i, t in enumerate(profile.boot.args)]
        for loc, text in places:
            if template.secret_references(text):
                out.report("secret-in-boot-args", loc,
                           f"profile {profile.id!r} uses secrets in its kernel, initrd or args: kernel arguments are "
                           "readable by every user of the machine and sit in its boot script; use secrets in "
                           "cloud-init user-data only")
    return frozenset(used)


def still_yaml(user_data: bytes) -> bool:
    """Whether rendered user-data that is cloud-config (`#cloud-config`) still loads as cloud-init
    loads it (`util.load_yaml`: UTF-8, then PyYAML's `yaml.safe_load`, its pure-Python SafeLoader;
    any error, a date like 2001-02-30 included, and the user-data is dropped); other user-data (a
    script, a MIME archive) is not YAML and passes. The parser's error is not kept: it would quote
    the text around the fault, which may be a value.

    libyaml (CSafeLoader, ~10x faster: render_served asks once per node) decides only where it
    agrees with SafeLoader: a text it refuses, or one using what it is more lenient about
    (`_libyaml_loads`), is decided by SafeLoader. Nor is SafeLoader's Python constructor run on
    libyaml's nodes as a rule: one walk (`_constructs`) decides what it would do with the tags
    user-data holds, and hands it only the rest (half the cost of a check, render_scale's
    user-data: 0.20 -> 0.11 ms). tests/unit/test_still_yaml.py checks the agreement with
    SafeLoader over generated texts and trees and realistic texts."""
    if not user_data.startswith(b"#cloud-config"):
        return True
    if _FAST is not None and _libyaml_loads(user_data):
        return True
    try:
        text = user_data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _loads(text, yaml.SafeLoader)


def _libyaml_composer() -> type[yaml.CSafeLoader] | None:
    """libyaml's CSafeLoader, with the implicit tags resolved as its Resolver resolves them but
    in one short call a scalar (no path resolvers to follow: SafeLoader has none)."""
    if not yaml.__with_libyaml__ or yaml.SafeLoader.yaml_path_resolvers:
        return None
    scalar_node, sequence_node = yaml.ScalarNode, yaml.SequenceNode
    implicit_tags = yaml.SafeLoader.yaml_implicit_resolvers
    if None in implicit_tags:
        return None

    class Composer(yaml.CSafeLoader):
        def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
            if kind is scalar_node:
                if implicit[0]:
                    for tag, regexp in implicit_tags.get(value[:1], ()):
                        if regexp.match(value):
                            return tag  # type: ignore[no-any-return]
                return _STR
            return _SEQ if kind is sequence_node else _MAP

        def descend_resolver(self, current_node: object, current_index: object) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

    return Composer


_STR, _NULL, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_FAST = _libyaml_composer()

# What libyaml (0.2.5, 0.2.6) loads and SafeLoader refuses, as the differential test found it:
# a tab between tokens or after a plain scalar, a byte order mark after the start, a comment
# right after a block scalar's header (`|#`); and a `?` in a plain scalar inside a flow
# collection (`{a: b?}`), where SafeLoader's scanner takes it for a key indicator. The first two
# are looked for with `in` (memchr: half the cost of one regular expression for all three).
_HEADER_REST = re.compile(rb"[-+0-9]*#")


def _block_header_comment(data: bytes) -> bool:
    """Whether `[|>][-+0-9]*#` is found in `data`: the indicators found with `find` (memchr), not by
    the pattern tried at every byte (12.5 against ~1 us for render_scale's user-data)."""
    for indicator in (b"|", b">"):
        at = data.find(indicator)
        while at >= 0:
            if _HEADER_REST.match(data, at + 1) is not None:
                return True
            at = data.find(indicator, at + 1)
    return False


def _libyaml_loads(user_data: bytes) -> bool:
    """True when libyaml loads `user_data`, nothing in it is where libyaml is more lenient than
    SafeLoader, and SafeLoader's constructor would make it (`_constructs`); False otherwise
    (SafeLoader decides)."""
    if b"\t" in user_data or b"\xef\xbb\xbf" in user_data or _block_header_comment(user_data):
        return False
    assert _FAST is not None
    flow_question = b"?" in user_data and (b"[" in user_data or b"{" in user_data)
    if not (b"&" in user_data or b"*" in user_data or b"!" in user_data) and _events_load(user_data, flow_question):
        return True
    loader = _FAST(user_data)
    try:
        node = loader.get_single_node()
        if node is not None:
            verdict = _constructs(node, loader, flow_question)
            if verdict is None:
                loader.construct_document(node)
            elif not verdict:
                return False
    except Exception:  # whatever stops the load (YAMLError, ValueError, ...): SafeLoader decides
        return False
    finally:
        loader.dispose()
    return True


_EVENTS: Any = getattr(yaml, "cyaml").CParser if _FAST is not None else None  # noqa: B009 (not in its stub's exports)
_SCALAR_EVENT, _SEQUENCE_START, _MAPPING_START = yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent
_SEQUENCE_END, _MAPPING_END = yaml.SequenceEndEvent, yaml.MappingEndEvent


def _events_load(user_data: bytes, flow_question: bool) -> bool:
    """True when what `_libyaml_loads` composes and walks would be True, told from libyaml's events
    alone (no nodes composed: ~85 against ~115 us a check of render_scale's user-data); False when
    that takes the walk (it decides). For text with no anchor, alias or tag (the caller saw no `&`,
    `*` or `!` in it), the composed nodes are the events' (each collection a map or seq, each
    scalar resolved as `_libyaml_composer` resolves it), so the walk's answers are these: the
    scalars of a tag SafeLoader constructs are constructed, a collection as a key, a merge key,
    `=`, nesting near `_MAX_DEPTH`, a plain `?` in a flow collection, a second document and a
    directive are left to it."""
    parser = _EVENTS(user_data)  # the parser alone: a loader's Python constructor and resolver cost ~8 us
    try:
        get = parser.get_event
        get()  # the stream's start
        event: Any = get()  # typeshed's Event has none of its kinds' fields
        if event.__class__ is yaml.StreamEndEvent:
            return True  # no document: nothing to compose
        if event.__class__ is not yaml.DocumentStartEvent or event.version or event.tags:
            return False
        stack: list[tuple[bool, bool]] = []  # the open collections' (mapping, flow) above this one
        mapping = flow = key = False  # the innermost collection's; key: a key comes next
        while True:
            event = get()
            kind = event.__class__
            if kind is _SCALAR_EVENT:
                if event.implicit[0]:
                    resolvers = _IMPLICIT_TAGS.get(event.value[:1])
                    if resolvers is not None and not _scalar_loads(event.value, resolvers):
                        return False
                if flow and flow_question and not event.style and "?" in event.value:
                    return False
                if mapping:
                    key = not key
            elif kind is _MAPPING_START or kind is _SEQUENCE_START:
                if key or len(stack) >= _MAX_DEPTH - 1:
                    return False
                stack.append((mapping, flow))
                mapping = key = kind is _MAPPING_START
                flow = bool(event.flow_style)
            elif kind is _MAPPING_END or kind is _SEQUENCE_END:
                mapping, flow = stack.pop()
                key = mapping  # it was a value (a key returned above): a key comes next
            elif kind is yaml.DocumentEndEvent:
                return get().__class__ is yaml.StreamEndEvent
            else:  # an alias after all
                return False
    except Exception:  # libyaml refuses it: the walk's path fails the same way, and SafeLoader decides
        return False
    finally:
        parser.dispose()


def _scalar_loads(value: str, resolvers: list[tuple[str, re.Pattern[str]]]) -> bool:
    """Whether a plain scalar resolves (`resolvers`: those for its first character) to str, or to
    a tag whose constructor makes it (`_CHECKED`). A bool is made whatever it is: the resolver
    matches only the spellings whose lower case the constructor's table holds."""
    for tag, regexp in resolvers:
        if regexp.match(value):
            if tag in (_NULL, _BOOL):
                return True
            construct = _CHECKED.get(tag)
            if construct is None:
                return False  # `<<`, `=`: the walk leaves them to construct_document
            try:
                construct(_CONSTRUCTOR, yaml.ScalarNode(tag, value))
            except Exception:
                return False
            return True
    return True


# Scalars whose construction can refuse the value (2001-02-30, 0b_, `!!bool x`, `!!binary é`):
# each is constructed alone, by SafeLoader's own constructor; all of them make hashable keys.
_CHECKED = {tag: yaml.SafeLoader.yaml_constructors[tag] for tag in (
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary")}
_IMPLICIT_TAGS = yaml.SafeLoader.yaml_implicit_resolvers
# Scalar constructors read nothing of their constructor but its class's tables: one serves all.
_CONSTRUCTOR = SafeConstructor()
# Deeper than this, SafeLoader decides: its composer recurses (a RecursionError from ~450 flow
# levels, and cloud-init drops the user-data); libyaml's does not.
_MAX_DEPTH = 100


def _constructs(root: yaml.Node, loader: SafeConstructor, flow_question: bool) -> bool | None:
    """Whether SafeLoader's construct_document would make the composed `root` without an error,
    decided without it for what user-data holds (str, null, bool, int, float, timestamp and
    binary scalars, maps with such keys, seqs) in one walk: True, it would; False, something
    fails (SafeLoader decides); None, there is something only construct_document knows (a merge
    key `<<`, `=`, a collection as a key, !!set, !!omap, !!pairs, an unknown tag, a tag on the
    wrong kind of node). With `flow_question`, also False for a plain scalar holding a `?` inside
    a flow collection (libyaml's nodes: plain is style ''), which SafeLoader's scanner refuses.

    Collections are walked in document order, each once (aliases share nodes; anchor cycles
    end), so a collection is first met where its anchor is, at its depth in the text."""
    scalar_node, mapping_node = yaml.ScalarNode, yaml.MappingNode
    if not isinstance(root, yaml.CollectionNode):
        return _scalar_constructs(root, loader)
    full = False
    seen: set[int] = set()
    todo: list[tuple[yaml.CollectionNode, int]] = [(root, 0)]
    while todo:
        node, depth = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth >= _MAX_DEPTH:
            return False
        if node.__class__ is mapping_node:
            full = full or node.tag != _MAP
            children = [child for pair in node.value for child in pair]
        else:
            full = full or node.tag != _SEQ
            children = node.value
        flow = flow_question and node.flow_style
        below: list[tuple[yaml.CollectionNode, int]] = []
        for child in children:
            if child.__class__ is scalar_node:
                if child.tag != _STR:
                    verdict = _scalar_constructs(child, loader)
                    if verdict is None:
                        full = True
                    elif not verdict:
                        return False
                if flow and not child.style and "?" in child.value:
                    return False
            else:
                below.append((child, depth + 1))  # a collection: libyaml makes no other nodes
        if below:
            if node.__class__ is mapping_node:
                for key in children[::2]:
                    if key.__class__ is not scalar_node:
                        full = True  # unhashable, unless !!omap's ... (construct_document knows)
                        break
            todo.extend(reversed(below))
    return None if full else True


def _scalar_constructs(node: yaml.Node, loader: SafeConstructor) -> bool | None:
    tag = node.tag
    if tag in (_STR, _NULL):
        return True
    construct = _CHECKED.get(tag)
    if construct is None:
        return None  # `<<`, `=`, or a tag SafeLoader has no constructor for
    try:
        construct(loader, node)
    except Exception:  # ValueError (a date), ConstructorError, KeyError (`!!bool x`), ...
        return False
    return True


def _loads(data: bytes | str, loader: type[yaml.SafeLoader]) -> bool:
    try:
        yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader, SafeLoader or libyaml's
    except Exception:  # whatever stops the load (YAMLError, ValueError, ...), cloud-init drops the user-data
        return False
    return True


def secret_templates(state: DesiredState) -> frozenset[str]:
    """The cloud-init templates that name `secrets` (their nodes' user-data is private)."""
    return frozenset(name for name, tpl in state.cloud_init.items() if template.secret_references(tpl.text))


def private_paths(state: DesiredState) -> frozenset[str]:
    """The rendered files that hold a secret's value: the user-data of every node whose cloud-init
    template names `secrets`. Written with mode 0600 (`adapters.artifacts`)."""
    uses = secret_templates(state)
    if not uses:
        return frozenset()
    return frozenset(
        f"cloud-init/{node.mac}/user-data" for node in state.nodes
        if (profile := state.profiles.get(node.profile)) is not None and profile.cloud_init in uses
    )
