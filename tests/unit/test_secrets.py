"""secrets.yaml (issue 27 item 2): age-encrypted values used in user-data as {{ secrets.NAME }}.

Real age: values encrypted and decrypted with pyrage (the Rust `age` crate), identities made by it.
Each test here fails on the code before secrets existed (no secrets.yaml, no `secrets` variable).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping

import pyrage
import pytest
import yaml

from reconciler.adapters.agecrypt import AgeIdentity, encrypt
from reconciler.commands.secrets import set_secret
from reconciler.core import render as render_module
from reconciler.core import secrets
from reconciler.core.docmemo import ValidateMemo
from reconciler.core.errors import InvalidRevision
from reconciler.core.plan import compare, side
from reconciler.core.render import NodeMemo, RenderedFiles, render_generation, render_served
from reconciler.core.secrets import SecretUnreadable, changed_names, private_paths
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.core.yamldoc import parse_yaml
from tests import repo_builder

IDENTITY = pyrage.x25519.Identity.generate()
OTHER = pyrage.x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
PLAIN = "$6$rounds=4096$s3cr3tSalt$HASHVALUEnobodyshouldsee"
USER_DATA = "cloud-init/autoinstall.yaml"
TEMPLATE = """\
#cloud-config
autoinstall:
  version: 1
  identity:
    hostname: {{ hostname }}
    username: ops
    password: "{{ secrets.root_hash }}"
"""


def secrets_yaml(values: dict[str, str], recipients: tuple[str, ...] = (RECIPIENT,)) -> str:
    text = "recipients:\n" + "".join(f"  - {r}\n" for r in recipients) + "secrets: {}\n"
    for name, value in values.items():
        text = set_secret(text, name, encrypt(recipients, value))
    return text


def snapshot(values: dict[str, str] | None = None, template: str = TEMPLATE, revision: str = "rev1",
             secrets_text: str | None = None) -> Snapshot:
    text = secrets_text if secrets_text is not None else secrets_yaml(values or {"root_hash": PLAIN})
    return repo_builder.snapshot({"secrets.yaml": text, USER_DATA: template}, revision)


def identity(key: pyrage.x25519.Identity = IDENTITY) -> AgeIdentity:
    return AgeIdentity(f"# test identity\n{key}\n", "test-identity")


def test_age_round_trip_and_failures() -> None:
    armored = encrypt([RECIPIENT], PLAIN)
    assert armored.startswith("-----BEGIN AGE ENCRYPTED FILE-----\n") and PLAIN not in armored
    assert identity()(armored) == PLAIN
    assert pickle.loads(pickle.dumps(identity()))(armored) == PLAIN  # the daemon's worker gets it pickled
    with pytest.raises(SecretUnreadable, match="No matching keys"):
        identity(OTHER)(armored)
    corrupt = armored.replace(armored.splitlines()[2], "A" * 64)
    with pytest.raises(SecretUnreadable):
        identity()(corrupt)
    with pytest.raises(ValueError, match="line 2: not an age identity") as raised:
        AgeIdentity("# ok\nAGE-SECRET-KEY-1TYPO\n", "id.txt")
    assert "TYPO" not in str(raised.value)  # a key with a typo is never echoed
    assert str(IDENTITY) not in repr(identity())


def test_without_identity_structure_and_names_are_checked_and_placeholders_rendered() -> None:
    result = validate(snapshot())
    assert result.state is not None, result.issues
    files = render_generation(result.state)
    user_data = files["cloud-init/52:54:00:aa:bb:01/user-data"].decode()
    assert 'password: "<secret:root_hash>"' in user_data
    assert not any(PLAIN.encode() in data for data in files.values())


def test_unknown_secret_is_a_finding_at_its_template_line() -> None:
    result = validate(snapshot(template=TEMPLATE.replace("secrets.root_hash", "secrets.root_hsah")))
    found = [(i.file, i.line, i.code) for i in result.errors]
    assert (USER_DATA, 7, "secret-unknown") in found, result.issues
    assert not any(i.code.startswith("template-") for i in result.errors)  # one finding, the useful one
    no_file = validate(repo_builder.snapshot({USER_DATA: TEMPLATE}))
    assert [i.code for i in no_file.errors] == ["secret-unknown"]
    assert "there is no secrets.yaml" in no_file.errors[0].message


def test_secrets_in_kernel_args_are_refused() -> None:
    profile = repo_builder.BASE["profiles/install.yaml"].replace("- ip=dhcp", "- pw={{ secrets.root_hash }}")
    result = validate(repo_builder.snapshot({"secrets.yaml": secrets_yaml({"root_hash": PLAIN}),
                                             "profiles/install.yaml": profile}))
    assert [(i.file, i.line, i.code) for i in result.errors] == [("profiles/install.yaml", 7, "secret-in-boot-args")]


def test_a_value_that_does_not_decrypt_is_a_finding_naming_it_at_its_line() -> None:
    text = secrets_yaml({"root_hash": PLAIN, "api_token": "tok"})
    other = encrypt([str(OTHER.to_public())], "x")
    text = set_secret(text, "api_token", other)
    result = validate(snapshot(secrets_text=text), identity())
    errors = [(i.file, i.line, i.code, i.message) for i in result.errors]
    line = text.splitlines().index("  api_token: |") + 1
    assert errors == [("secrets.yaml", line, "secret-undecryptable",
                       "secret 'api_token' cannot be decrypted: No matching keys found (identity test-identity)")]
    assert validate(snapshot(), identity()).state is not None
    assert validate(snapshot(), identity(OTHER)).state is None


def test_a_value_that_is_not_age_armor_is_a_schema_error() -> None:
    text = f"recipients: [{RECIPIENT}]\nsecrets:\n  root_hash: {PLAIN}\n"
    result = validate(snapshot(secrets_text=text))
    assert [(i.file, i.line, i.code) for i in result.errors] == [("secrets.yaml", 3, "schema")]


def test_the_daemon_renderer_reveals_values_only_in_the_private_user_data() -> None:
    state = validate(snapshot()).state
    assert state is not None
    files = render_served(state, b"report-secret", identity())
    holding = {path for path, data in files.items() if PLAIN.encode() in data}
    assert holding == private_paths(state) == {"cloud-init/52:54:00:aa:bb:01/user-data",
                                               "cloud-init/52:54:00:aa:bb:02/user-data"}
    with pytest.raises(InvalidRevision) as raised:  # no identity: placeholders never reach a machine
        render_served(state, b"report-secret", None)
    assert [(f.code, f.file) for f in raised.value.findings] == [("secret-undecryptable", "secrets.yaml")]
    assert "'root_hash'" in raised.value.findings[0].message


def _instance_id(files: Mapping[str, bytes]) -> str:
    return files["cloud-init/52:54:00:aa:bb:01/meta-data"].decode().split()[1]


def test_instance_id_follows_the_value_not_its_encryption() -> None:
    def iid(values: dict[str, str]) -> str:
        state = validate(snapshot(values)).state
        assert state is not None
        return _instance_id(render_served(state, None, identity()))

    first = iid({"root_hash": PLAIN})
    assert iid({"root_hash": PLAIN}) == first  # encrypted again: same value, the machine is told the same
    assert iid({"root_hash": PLAIN + "x"}) != first


def test_diff_marks_a_changed_value_without_showing_it() -> None:
    base = validate(snapshot({"root_hash": PLAIN}, revision="a")).state
    head = validate(snapshot({"root_hash": "NEWVALUEsecret"}, revision="b")).state
    same = validate(snapshot({"root_hash": PLAIN}, revision="c")).state
    assert base is not None and head is not None and same is not None
    changed = changed_names(base.secrets, head.secrets, identity())
    assert changed == {"root_hash"}
    assert changed_names(base.secrets, same.secrets, identity()) == frozenset()  # re-encrypted, same value
    assert changed_names(base.secrets, same.secrets, None) == {"root_hash"}  # without identity: by ciphertext
    plan = compare(side("a", base, ()), side("b", head, (), changed))
    node = next(n for n in plan.nodes if n.name == "node-1")
    assert '+    password: "<secret:root_hash:changed>"' in node.user_data_diff
    text = repr(plan)
    assert PLAIN not in text and "NEWVALUEsecret" not in text


def test_secrets_set_places_values_and_keeps_the_rest_of_the_file() -> None:
    head = f"# who may decrypt\nrecipients:\n  - {RECIPIENT}  # ops\n"
    for start in (head, head + "secrets:\n", head + "secrets: {}\n", head + "secrets:\n  # none yet\n"):
        text = set_secret(start, "a", encrypt([RECIPIENT], "one"))
        text = set_secret(text, "b", encrypt([RECIPIENT], "two"))
        text = set_secret(text, "a", encrypt([RECIPIENT], "three"))
        doc, issues = parse_yaml("secrets.yaml", text.encode())
        assert doc is not None and not issues, text
        assert {k: identity()(v) for k, v in doc.data["secrets"].items()} == {"a": "three", "b": "two"}, text
        assert text.startswith(head)
        assert validate(snapshot(secrets_text=text, template="#cloud-config\n")).state is not None


def test_user_data_with_secrets_goes_only_to_an_address_known_to_be_the_node() -> None:
    from reconciler.core.boot import BootIndex, Client, answer_cloud_init

    node_file = repo_builder.BASE["nodes/node-1.yaml"].replace("ip: 10.10.10.201\n", "")  # no reserved address
    result = validate(repo_builder.snapshot({"secrets.yaml": secrets_yaml({"root_hash": PLAIN}),
                                             USER_DATA: TEMPLATE, "nodes/node-1.yaml": node_file}))
    assert result.state is not None, result.issues
    files = render_served(result.state, None, identity())
    index = BootIndex.build(result.state)
    mac = "52:54:00:aa:bb:01"
    leases = {"10.10.10.50": mac, "10.10.10.51": "52:54:00:00:00:99"}
    unknown = answer_cloud_init(index, files, mac, "user-data", Client("10.10.10.77", leases.get))
    assert unknown.status == 403 and "has secrets in its user-data" in unknown.reason
    assert PLAIN.encode() not in unknown.body
    assert answer_cloud_init(index, files, mac, "meta-data", Client("10.10.10.77", leases.get)).status == 200
    assert answer_cloud_init(index, files, mac, "user-data", Client("10.10.10.51", leases.get)).status == 403
    leased = answer_cloud_init(index, files, mac, "user-data", Client("10.10.10.50", leases.get))
    assert leased.status == 200 and PLAIN.encode() in leased.body
    assert answer_cloud_init(index, files, mac, "user-data", None).status == 200  # --trust-any-client
    no_secrets = validate(repo_builder.snapshot({"nodes/node-1.yaml": node_file})).state
    assert no_secrets is not None
    plain_index = BootIndex.build(no_secrets)
    answer = answer_cloud_init(plain_index, render_generation(no_secrets), mac, "user-data", Client("10.10.10.77"))
    assert answer.status == 200  # as before: nothing is known of the address, no secret at stake


def test_a_value_that_breaks_the_cloud_config_is_a_finding_that_does_not_quote_it() -> None:
    nasty = 'pa"ss: word\n  evil: [1'
    state = validate(snapshot({"root_hash": nasty})).state
    assert state is not None  # placeholders parse: validation cannot see it
    with pytest.raises(InvalidRevision) as raised:
        render_served(state, None, identity())
    findings = raised.value.findings
    assert [(f.code, f.file) for f in findings] == [("secret-breaks-user-data", "nodes/node-1.yaml"),
                                                    ("secret-breaks-user-data", "nodes/node-2.yaml")]
    assert not any("evil" in f.message or "pa" + '"' in f.message for f in findings)
    as_json = TEMPLATE.replace('"{{ secrets.root_hash }}"', "{{ secrets.root_hash | tojson }}")
    quoted = validate(snapshot({"root_hash": nasty}, template=as_json))
    assert quoted.state is not None
    files = render_served(quoted.state, None, identity())
    loaded = yaml.safe_load(files["cloud-init/52:54:00:aa:bb:01/user-data"])
    assert loaded["autoinstall"]["identity"]["password"] == nasty


def test_a_kept_nodes_user_data_is_checked_once_not_at_every_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the daemon's render memo, a node whose user-data did not change is not parsed again
    to see that the secrets' values left it YAML (~2.6 ms a parse: at 10,000 nodes a one-node
    commit cost ~17 s of it, issue 25); a value that breaks it is still refused at once, and the
    served user-data carries each commit's revision."""
    template = TEMPLATE + 'phone_home:\n  url: "{{ cloud_init_url }}done"\n  post: all\n'
    parses: list[bytes] = []
    real = secrets.still_yaml

    def counting(data: bytes) -> bool:
        parses.append(data)
        return real(data)

    monkeypatch.setattr(secrets, "still_yaml", counting)
    monkeypatch.setattr(render_module, "_PARSED", {})
    memo = NodeMemo()

    def commit(revision: str, value: str = PLAIN) -> Mapping[str, bytes]:
        state = validate(snapshot({"root_hash": value}, template=template, revision=revision)).state
        assert state is not None
        parses.clear()
        return render_served(state, b"report-secret", identity(), memo)

    first = commit("1" * 40)
    assert len(parses) == 2  # node-1 and node-2 name the secret
    second = commit("2" * 40)
    assert parses == []
    path = "cloud-init/52:54:00:aa:bb:01/user-data"
    assert f"/r/{'2' * 40}/".encode() in second[path] and f"/r/{'1' * 40}/".encode() in first[path]
    with pytest.raises(InvalidRevision) as raised:
        commit("3" * 40, 'pa"ss: word\n  evil: [1')
    assert {f.code for f in raised.value.findings} == {"secret-breaks-user-data"}


def test_a_commit_patched_onto_a_refused_one_still_refuses_the_nodes_it_did_not_touch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the daemon's memos, a one-node commit's render looks only at the user-data its patch
    touched to see whether a secret's value left it YAML (issue 25); a node it did not touch
    whose user-data the value broke at the commit before is refused all the same."""
    looked: list[str] = []
    real = render_module._still_yaml

    def counting(files: RenderedFiles, path: str) -> bool:
        looked.append(path)
        return real(files, path)

    monkeypatch.setattr(render_module, "_still_yaml", counting)
    memo, parsed = NodeMemo(), ValidateMemo()
    tree = dict(snapshot({"root_hash": 'pa"ss: word\n  evil: [1'}).files)

    def commit(revision: str) -> list[tuple[str, str]]:
        state = validate(Snapshot(revision, dict(tree)), memo=parsed).state
        assert state is not None
        looked.clear()
        with pytest.raises(InvalidRevision) as raised:
            render_served(state, b"report-secret", identity(), memo)
        return [(f.code, f.file) for f in raised.value.findings]

    both = [("secret-breaks-user-data", "nodes/node-1.yaml"), ("secret-breaks-user-data", "nodes/node-2.yaml")]
    assert commit("1" * 40) == both
    tree["nodes/node-2.yaml"] += b"metadata: {note: changed}\n"
    assert commit("2" * 40) == both
    assert looked == ["cloud-init/52:54:00:aa:bb:02/user-data"]  # node-1's kept entry not looked at again


def test_the_private_paths_a_memo_keeps_follow_the_nodes_that_changed() -> None:
    """render_served's private paths, made from the last state's by the nodes that changed (the
    validation memo hands back the others as the same objects), are those of the state itself:
    a node leaving a secret-naming profile, its MAC changed, nodes added and deleted."""
    memo, parsed = NodeMemo(), ValidateMemo()
    tree = dict(snapshot().files)
    edits: list[dict[str, str | None]] = [
        {},
        {"nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nprofile: local\n"},
        {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:09\nip: 10.10.10.201\nprofile: install\n"},
        {"nodes/node-3.yaml": "mac: 52:54:00:aa:bb:03\nprofile: install\n"},
        {"nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nprofile: install\n", "nodes/node-3.yaml": None},
        {"nodes/node-1.yaml": None},
    ]
    seen = []
    for number, edit in enumerate(edits):
        for path, text in edit.items():
            if text is None:
                del tree[path]
            else:
                tree[path] = text.encode()
        state = validate(Snapshot(f"{number:040x}", dict(tree)), memo=parsed).state
        assert state is not None
        kept = render_module._private_paths(state, memo)
        assert kept == private_paths(state)
        seen.append(len(kept))
    assert seen == [2, 1, 1, 2, 2, 1]
