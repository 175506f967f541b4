"""The deployment examples in contrib/ (issue 26 point 4) kept from rotting: the Kubernetes
manifests match the Kubernetes API's own types (the `kubernetes` client's models: every field
known, every value of its type), the DaemonSet runs as DHCP needs and no more, the compose file
is a valid Compose file (the Compose Specification's JSON Schema, tests/peers/compose-spec/),
every daemon option any of them passes is accepted by the real CLI parser and listed by
`run --help`, and what they build or run exists in this repository.

No container engine runs on the test machine (docker's client is installed, its daemon is not;
podman is not installed): the Containerfile is built only where `docker info` or `podman info`
answers, and otherwise checked line by line (known instructions, FROM first, every COPY source
present, the entry point the package installs), and the test says so in a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import subprocess
import tomllib
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s

from reconciler.adapters.sqldb import describe
from reconciler.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "contrib" / "kubernetes"
COMPOSE = ROOT / "contrib" / "compose" / "compose.yaml"
CONTAINERFILE = ROOT / "contrib" / "Containerfile"
COMPOSE_SCHEMA = ROOT / "tests" / "peers" / "compose-spec" / "compose-spec.json"
DHCP_CAPABILITIES = {"NET_BIND_SERVICE", "NET_RAW", "NET_ADMIN"}
MODELS = {("v1", "Namespace"): "V1Namespace", ("v1", "Secret"): "V1Secret", ("v1", "Service"): "V1Service",
          ("apps/v1", "DaemonSet"): "V1DaemonSet"}
# what the manifests' $(VAR) references stand for when their arguments are parsed
PLACEHOLDERS = {"NETBOOT_REPO": "git@git.example.org:infra/provisioning.git",
                "NETBOOT_STORE": "postgresql://netboot@db/netboot", "NODE_NAME": "node-a"}


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
            for p in sorted(KUBE.glob("*.yaml")) if p.name != "kustomization.yaml"}


def daemonsets() -> list[dict[str, Any]]:
    return [d for docs in manifests().values() for d in docs if d["kind"] == "DaemonSet"]


def check_typed(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    """`value` against an OpenAPI type of the kubernetes client ('V1Container', 'List[...]',
    'Dict[str, ...]'; older clients write 'list[...]', 'dict(str, ...)')."""
    if type_name.lower().startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            check_typed(item, type_name[5:-1], f"{path}[{i}]", errors)
    elif type_name.lower().startswith(("dict(", "dict[")):
        inner = type_name[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return
        for key, item in value.items():
            check_typed(item, inner, f"{path}.{key}", errors)
    elif type_name == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, found {value!r}")
    elif type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, found {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, found {value!r}")
    elif type_name == "object":
        pass  # IntOrString and free-form values
    else:
        model = getattr(k8s, type_name)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping ({type_name})")
            return
        fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
        for key, item in value.items():
            if key not in fields:
                errors.append(f"{path}.{key}: no such field of {type_name}")
                continue
            check_typed(item, model.openapi_types[fields[key]], f"{path}.{key}", errors)


def parse_run(args: list[str]) -> argparse.Namespace:
    """The real parser on `run ARGS`; a refusal fails the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(["run", *args])
    except SystemExit:
        pytest.fail(f"netboot-reconcile run refuses {args}: {err.getvalue()}")


def run_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    return out.getvalue()


def check_options(args: list[str]) -> argparse.Namespace:
    parsed = parse_run(args)
    listed = run_help()
    for arg in args:
        option = arg.split("=", 1)[0]
        if option.startswith("--"):
            assert re.search(rf"(^|\s){re.escape(option)}[\s,=]", listed), f"run --help does not list {option}"
    return parsed


# -- Kubernetes --------------------------------------------------------------------------------


def test_every_manifest_is_of_the_kubernetes_api_types() -> None:
    found = manifests()
    assert sorted(found) == ["daemonset-lyon.yaml", "daemonset-paris.yaml", "namespace.yaml", "postgres.yaml",
                             "secret.yaml"]
    errors: list[str] = []
    for name, docs in found.items():
        for doc in docs:
            model = MODELS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
            assert model is not None, f"{name}: unexpected {doc.get('apiVersion')} {doc.get('kind')}"
            check_typed(doc, model, name, errors)
    assert errors == []
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(found)


def test_the_type_check_finds_a_misspelt_field() -> None:
    """The check above is no formality: a field Kubernetes does not know is found."""
    errors: list[str] = []
    doc = daemonsets()[0]
    doc["spec"]["template"]["spec"]["hostNetwrok"] = True
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "67"
    check_typed(doc, "V1DaemonSet", "ds", errors)
    assert sorted(errors) == ["ds.spec.template.spec.containers[0].ports[0].containerPort: expected an integer, "
                              "found '67'", "ds.spec.template.spec.hostNetwrok: no such field of V1PodSpec"]


@pytest.mark.parametrize("daemonset", daemonsets(), ids=lambda d: d["metadata"]["name"])
def test_the_daemonset_serves_dhcp_on_each_node_with_only_the_capabilities_it_needs(daemonset: dict[str, Any]) -> None:
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) <= DHCP_CAPABILITIES
    assert security["allowPrivilegeEscalation"] is False and "privileged" not in security

    env = {e["name"]: e for e in container["env"]}
    site = env["NETBOOT_SITE"]["value"]
    assert pod["nodeSelector"] == {"netboot.example.org/site": site}  # the nodes of its site
    values = {**PLACEHOLDERS, "NETBOOT_SITE": site}
    used = set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
    assert used <= set(env), f"arguments use undefined variables {used - set(env)}"
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    parsed = check_options(args)
    assert parsed.site == site and parsed.store.startswith("postgresql://")

    # probes on the port the daemon's HTTP server listens on
    http_port = parsed.http_listen[1]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": http_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http_port}
    ports = {(p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {(parsed.dhcp_listen[1], "UDP"), (parsed.tftp_listen[1], "UDP"), (http_port, "TCP")}

    # the state dir is a volume; the repository's credentials and the store come from the Secret
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts.values()) <= set(volumes)
    assert mounts[str(parsed.state_dir)] == "state"
    git = volumes[mounts[str(parsed.ssh_key.parent)]]["secret"]
    assert {i["path"] for i in git["items"]} == {parsed.ssh_key.name, parsed.known_hosts.name}
    (secret,) = manifests()["secret.yaml"]
    keys = set(secret["stringData"])
    assert {i["key"] for i in git["items"]} <= keys
    # rollouts power machines only with --bmc-credentials: the file comes from the Secret, owner-only
    # (kubelet presents it as a symlink, which adapters.bmccreds follows), and its placeholder loads
    bmc = volumes[mounts[str(parsed.bmc_credentials.parent)]]["secret"]
    assert bmc["defaultMode"] == 0o400
    assert bmc["items"] == [{"key": "bmc-credentials", "path": parsed.bmc_credentials.name}]
    assert yaml.safe_load(secret["stringData"]["bmc-credentials"]) == {}
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert {r["key"] for r in refs} <= keys and {r["name"] for r in refs} == {secret["metadata"]["name"]}
    assert env["NETBOOT_GIT_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "git-token"  # the variable run reads

    # the store's password is never an argument (ps shows arguments to anyone on the node): the
    # URL names none, and libpq reads it from PGPASSWORD, out of the Secret
    assert describe(secret["stringData"]["store"]) == secret["stringData"]["store"]
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "store-password"

    # the store's host is the Service naming the external PostgreSQL
    (service,) = manifests()["postgres.yaml"]
    assert service["spec"]["type"] == "ExternalName"
    host = secret["stringData"]["store"].split("@", 1)[1].split(":", 1)[0]
    assert host == f"{service['metadata']['name']}.netboot.svc"


# -- Compose -------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_the_compose_file_is_a_valid_compose_file() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    broken = compose()
    broken["services"]["netboot-a"]["cap_ad"] = ["NET_ADMIN"]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))  # the schema does catch mistakes


def test_compose_runs_two_instances_of_one_store_with_the_options_the_cli_takes() -> None:
    doc = compose()
    instances = {name: s for name, s in doc["services"].items()
                 if "netboot-reconcile" in json.dumps(s.get("entrypoint"))}
    assert sorted(instances) == ["netboot-a", "netboot-b"]
    names = set()
    for service in instances.values():
        entry = service["entrypoint"]
        # the store URL names no password (arguments are readable by anyone on the host): libpq
        # reads it from PGPASSWORD, set from the secret file for this process only
        url = re.search(r"--store (\S+)", entry[2])
        assert url is not None and describe(url.group(1)) == url.group(1), entry[2]
        assert 'PGPASSWORD="$$(cat /run/secrets/postgres-password)" exec' in entry[2]
        assert "postgres-password" in service["secrets"]
        parsed = check_options(["--store", url.group(1), *service["command"]])
        names.add(parsed.instance)
        assert set(service["cap_add"]) <= DHCP_CAPABILITIES and service["cap_drop"] == ["ALL"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == CONTAINERFILE
    assert len(names) == 2  # two names in the one store
    assert doc["services"]["postgres"]["image"].startswith("docker.io/library/postgres:")


# -- Containerfile -------------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "VOLUME", "EXPOSE", "ENTRYPOINT", "CMD",
                "USER", "LABEL", "HEALTHCHECK", "SHELL", "STOPSIGNAL"}


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in joined.splitlines()) if line and not line.startswith("#")]


def working_engine() -> str | None:
    for engine in ("podman", "docker"):
        if shutil.which(engine) and subprocess.run([engine, "info"], capture_output=True, timeout=60,
                                                   check=False).returncode == 0:
            return engine
    return None


def test_the_containerfile_builds_or_is_checked_line_by_line() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    assert steps[0][0] == "FROM" and all(kind in INSTRUCTIONS for kind, _ in steps)
    for kind, rest in steps:
        if kind == "COPY":
            *sources, _ = rest.split()
            assert all((ROOT / s).exists() for s in sources), f"COPY {rest}: a source is not in the repository"
    entry = json.loads(next(rest for kind, rest in steps if kind == "ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry[0] in scripts and entry[1] == "run"
    copied = {s for kind, rest in steps if kind == "COPY" for s in rest.split()[:-1]}
    assert {"pyproject.toml", "setup.py", "README.md", "reconciler", "schemas"} <= copied  # what `pip install` reads
    engine = working_engine()
    if engine is None:
        warnings.warn("contrib/Containerfile checked line by line, not built: neither `podman info` nor "
                      "`docker info` answers on this machine (docker's client without a daemon)", stacklevel=1)
        return
    done = subprocess.run([engine, "build", "-f", str(CONTAINERFILE), "-t", "netboot-reconcile:test", str(ROOT)],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = subprocess.run([engine, "run", "--rm", "netboot-reconcile:test", "--help"], capture_output=True,
                           text=True, timeout=120, check=False)
    assert "--site NAME" in shown.stdout
