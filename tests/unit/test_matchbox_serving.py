"""What a matchbox data directory's files become when served: env files, iPXE args, /ignition, /generic.

Each test names the matchbox handler or test it mirrors (github.com/poseidon/matchbox).
"""

from __future__ import annotations

from reconciler.core import boot, gotemplate
from reconciler.core.model import Group
from reconciler.core.render import ipxe, matchbox, render_generation
from reconciler.core.validate import validate
from tests import repo_builder

MAC = "52:54:00:aa:bb:30"

IGN = '{\n  "ignition": {"version": "3.3.0"},\n  "passwd": {"users": [{"name": "core"}]}\n}\n'
PROFILE_IGN = '{"id": "fcos", "name": "FCOS", "boot": {"kernel": "/assets/k", "initrd": ["/assets/i"]}, ' \
    '"ignition_id": "fcos.ign", "generic_id": "hello.txt"}\n'


def test_env_file_prints_what_matchbox_prints() -> None:
    """matchbox/http/metadata.go `renderAsEnvFile` (metadata_test.go TestMetadataHandler and
    _MetadataEdgeCases): keys only upper-cased (`NEST_B-C`), strings, booleans and float64 with
    `%v` (`1e+07`), lists and nulls left out (no `<nil>`, no `[a b]`), selectors under lowercased
    keys (collectVariables: a `MAC` selector prints as `MAC`, once)."""
    group = Group(
        "g", "g", "p", {"MAC": MAC},
        {"nest": {"b-c": "x"}, "keys": ["a", "b"], "nothing": None, "num": 3, "big": 10000000, "yes": True},
    )
    assert matchbox.group_env(group).decode().splitlines() == [
        "BIG=1e+07",
        f"MAC={MAC}",
        "NEST_B-C=x",
        "NUM=3",
        "YES=true",
    ]


def test_go_value_floats_as_fmt_prints_them() -> None:
    """Go's fmt `%v` of a float64 (matchbox decodes metadata numbers as float64)."""
    cases = {3: "3", 3.5: "3.5", 123456: "123456", 1234567: "1.234567e+06", 0.0001: "0.0001",
             0.00001: "1e-05", -2.5: "-2.5"}
    assert {v: gotemplate.go_float(float(v)) for v in cases} == cases


def test_initrd_argument_is_not_doubled() -> None:
    """matchbox's Flatcar profiles (examples/profiles/flatcar.json) write `initrd=<name>` in their
    args, and matchbox's iPXE template (matchbox/http/ipxe.go) passes args as written: ours must not
    add a second `initrd=` for the same initrd."""
    args = ("initrd=flatcar_production_pxe_image.cpio.gz", "flatcar.first_boot=yes")
    text = ipxe.script("t", "http://s/k", ("http://s/a/flatcar_production_pxe_image.cpio.gz",), (None,), args, "r")
    kernel_line = next(line for line in text.splitlines() if line.startswith("kernel "))
    assert kernel_line.split(" && ")[0].split().count("initrd=flatcar_production_pxe_image.cpio.gz") == 1


def _served(edits: dict[str, str | None]) -> tuple[boot.BootIndex, dict[str, bytes]]:
    result = validate(repo_builder.snapshot(edits))
    assert result.state is not None, result.errors
    return boot.BootIndex.build(result.state), dict(render_generation(result.state))


def test_ignition_serves_the_profiles_ignition_json_as_committed() -> None:
    """matchbox/http/ignition.go `ignitionHandler` (ignition_test.go TestIgnitionHandler_V2JSON):
    the matched group's profile's `ignition_id`, read from `ignition/`, served as written with
    Content-Type application/json; the query's labels select the group."""
    index, files = _served({
        "profiles/fcos.json": PROFILE_IGN,
        "groups/fcos.json": '{"id": "fcos", "profile": "fcos", "selector": {"os": "installed"}}\n',
        "ignition/fcos.ign": IGN,
        "generic/hello.txt": "x\n",
    })
    labels = boot.labels_from_query("uuid=u&mac=52-54-00-00-00-09&os=installed")
    answer = boot.answer_boot("ignition", index, files, labels, "")
    assert (answer.status, answer.content_type, answer.body) == (200, "application/json", IGN.encode())
    other = boot.answer_boot("ignition", index, files, boot.labels_from_query("os=other"), "")
    assert other.status == 404  # the default group boots `local`, which has no ignition_id
    assert b"no ignition_id" in other.body


def test_generic_renders_the_profiles_generic_template_with_group_values() -> None:
    """matchbox/http/generic.go `genericHandler` (generic_test.go): the profile's `generic_id` from
    `generic/`, rendered with Go's text/template over the group's metadata and selectors."""
    index, files = _served({
        "profiles/fcos.json": PROFILE_IGN,
        "groups/fcos.json": '{"id": "fcos", "profile": "fcos", "selector": {"os": "installed"},'
                            ' "metadata": {"greeting": "hello"}}\n',
        "ignition/fcos.ign": IGN,
        "generic/hello.txt": "{{.greeting}} {{ .os }}\n",
    })
    answer = boot.answer_boot("generic", index, files, {"os": "installed"}, "os=installed")
    assert (answer.status, answer.body) == (200, b"hello installed\n")
    assert files["generic/hello.txt"] == b"{{.greeting}} {{ .os }}\n"  # matchbox's layout, as committed


def _ignition_findings(text: str, name: str = "fcos.ign") -> list[tuple[str, str, int]]:
    result = validate(repo_builder.snapshot({f"ignition/{name}": text}))
    return [(i.code, i.severity.value, i.line) for i in result.issues if i.file == f"ignition/{name}"]


def test_ignition_json_is_checked_against_the_spec_version_it_declares() -> None:
    """What matchbox's ignition.go parses with Ignition's ParseCompatibleVersion, and Ignition
    itself refuses at boot: no version, an unknown version, a field of the wrong type (checked
    with Ignition's own 3.4 spec schema, vendored)."""
    assert _ignition_findings(IGN) == []
    assert _ignition_findings('{"passwd": {}}') == [("ignition-version", "error", 1)]
    assert _ignition_findings('{"ignition": {"version": "3.9.0"}}') == [("ignition-version", "error", 1)]
    wrong = '{\n  "ignition": {"version": "3.4.0"},\n  "passwd": {\n    "users": {"name": "core"}\n  }\n}\n'
    assert _ignition_findings(wrong) == [("ignition-invalid", "error", 4)]
    spec2 = '{"ignition": {"version": "2.2.0"}, "networkd": []}'
    assert _ignition_findings(spec2) == [("ignition-spec-2", "warning", 1), ("ignition-invalid", "error", 1)]
    unknown = '{"ignition": {"version": "3.3.0"},\n "passwd": {"users": [{"name": "core", "sshKeys": []}]}}'
    assert _ignition_findings(unknown) == [("ignition-unknown-key", "warning", 2)]
    assert _ignition_findings("{not json") == [("json-syntax", "error", 1)]


def test_a_butane_config_is_a_finding_that_says_it_is_not_translated() -> None:
    """matchbox translates a non-.ign `ignition_id` from Butane; without a butane binary we cannot."""
    findings = validate(repo_builder.snapshot({"ignition/fcos.yaml": "variant: fcos\nversion: 1.5.0\n"})).issues
    butane = [i for i in findings if i.code == "ignition-butane"]
    assert len(butane) == 1 and not butane[0].is_error and "butane" in butane[0].message


def test_a_generic_template_that_does_not_render_is_a_finding_at_its_line() -> None:
    """matchbox renders generic templates with missingkey=error (matchbox/http/render.go) and
    answers 404 when one fails (generic.go): here that is a validation error at the line."""
    result = validate(repo_builder.snapshot({
        "profiles/fcos.json": PROFILE_IGN,
        "groups/fcos.json": '{"id": "fcos", "profile": "fcos", "selector": {"os": "installed"}}\n',
        "ignition/fcos.ign": IGN,
        "generic/hello.txt": "ok\n{{.greeting}}\n",
    }))
    found = [(i.code, i.file, i.line) for i in result.errors]
    assert found == [("template-error", "generic/hello.txt", 2)]
    assert "greeting" in result.errors[0].message and "group 'fcos'" in result.errors[0].message


def test_an_ignition_id_naming_no_file_is_a_warning() -> None:
    """matchbox's IgnitionGet reads ignition/<ignition_id>; a missing file is a 404 at boot, and
    the rest of the data directory still serves (as under matchbox): a warning, with a did-you-mean."""
    result = validate(repo_builder.snapshot({"profiles/fcos.json": PROFILE_IGN, "ignition/fcos.ig": IGN,
                                              "generic/hello.txt": "x\n"}))
    assert result.state is not None, result.errors
    found = [(i.code, i.file, i.message) for i in result.warnings if i.code == "ref-ignition"]
    assert [(c, f) for c, f, _ in found] == [("ref-ignition", "profiles/fcos.json")]
    assert "did you mean 'fcos.ig'" in found[0][2]


def test_generic_fills_matchboxs_request_variables_per_request() -> None:
    """matchbox/http/parse.go `collectVariables` adds `request.query` (the labels) and
    `request.raw_query`; generic_test.go renders them. A missing query key is a 404, as matchbox's
    `missingkey=error` render failure is."""
    index, files = _served({
        "profiles/fcos.json": PROFILE_IGN,
        "groups/fcos.json": '{"id": "fcos", "profile": "fcos", "selector": {"os": "installed"}}\n',
        "ignition/fcos.ign": IGN,
        "generic/hello.txt": "foo={{.request.query.foo}} mac={{.request.query.mac}} raw={{.request.raw_query}}\n",
    })
    query = "os=installed&foo=some-param&mac=52-54-00-a1-9c-ae"
    answer = boot.answer_boot("generic", index, files, boot.labels_from_query(query), query)
    assert (answer.status, answer.body.decode()) == (200, f"foo=some-param mac=52:54:00:a1:9c:ae raw={query}\n")
    missing = boot.answer_boot("generic", index, files, {"os": "installed"}, "os=installed")
    assert missing.status == 404 and "'foo'" in missing.reason


def test_a_generic_template_printing_past_the_file_bound_is_a_finding_at_its_line() -> None:
    """Go templates are bounded like Jinja ones (issue 21 item 4): `{{.big}}` 600 times over 2 KB of
    metadata would render 1.2 MB; `{{.}}` a hundred thousand times over a large group, gigabytes."""
    result = validate(repo_builder.snapshot({
        "profiles/fcos.json": PROFILE_IGN,
        "groups/fcos.json": '{"id": "fcos", "profile": "fcos", "selector": {"os": "installed"}, '
                            f'"metadata": {{"big": "{"x" * 2000}"}}}}\n',
        "ignition/fcos.ign": IGN,
        "generic/hello.txt": "ok\n" + "{{.big}}" * 600 + "\n",
    }))
    found = [(i.code, i.file, i.line) for i in result.errors]
    assert found == [("template-error", "generic/hello.txt", 2)]
    assert "over 1048576 characters" in result.errors[0].message


def test_a_request_cannot_fill_a_generic_template_past_the_file_bound() -> None:
    """A deferred `.request` field repeated 600 times, filled with a 2 KB query, would answer 1.2 MB
    per request (built in the serving process): a 404 saying why, as for any template that does not
    render for a request."""
    index, files = _served({
        "profiles/fcos.json": PROFILE_IGN,
        "groups/fcos.json": '{"id": "fcos", "profile": "fcos", "selector": {"os": "installed"}}\n',
        "ignition/fcos.ign": IGN,
        "generic/hello.txt": "{{.request.raw_query}}" * 600 + "\n",
    })
    short = "os=installed"
    assert boot.answer_boot("generic", index, files, {"os": "installed"}, short).status == 200
    query = "os=installed&pad=" + "p" * 2000
    answer = boot.answer_boot("generic", index, files, boot.labels_from_query(query), query)
    assert answer.status == 404 and "over 1048576 characters" in answer.reason
