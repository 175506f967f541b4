"""What the rendered boot files tell a machine: iPXE, GRUB, NoCloud and matchbox, per node."""

from __future__ import annotations

import dataclasses
import json
import random

import yaml

from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from tests.render_support import REVISION, example_snapshot, example_state, valid_state

PINNED = f"http://10.10.10.12/r/{REVISION}"


def test_node_ipxe_script_boots_pinned_kernel_with_named_initrd_and_rendered_args() -> None:
    script = render_generation(example_state())["ipxe/node-1.ipxe"].decode()
    assert script.startswith("#!ipxe\n")
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    words = kernel_line.split()
    assert words[1] == f"{PINNED}/assets/ubuntu/2204/vmlinuz"
    assert "initrd=initrd" in words
    assert f"ds=nocloud;s={PINNED}/cloud-init/52:54:00:aa:bb:01/;dsmode=net" in words
    assert f"initrd --name initrd {PINNED}/assets/ubuntu/2204/initrd && goto initrd0_ok ||" in script
    assert "\nboot ||\n" in script
    assert "echo netboot-reconcile: fetching kernel" in script


def test_local_disk_profile_exits_to_firmware() -> None:
    files = render_generation(example_state())
    assert files["ipxe/legacy-1.ipxe"].decode().splitlines()[-1] == "exit"
    grub = files["grub/legacy-1.cfg"].decode()
    assert "chainloader +1" in grub and "exit" in grub
    assert "linux " not in grub


def test_grub_config_quotes_every_word_and_uses_http_device() -> None:
    grub = render_generation(example_state())["grub/node-1.cfg"].decode()
    linux = next(line.strip() for line in grub.splitlines() if line.strip().startswith("linux "))
    assert linux.startswith(f"linux '(http,10.10.10.12)/r/{REVISION}/assets/ubuntu/2204/vmlinuz' 'autoinstall'")
    assert f"'ds=nocloud;s={PINNED}/cloud-init/52:54:00:aa:bb:01/;dsmode=net'" in linux
    assert f"initrd '(http,10.10.10.12)/r/{REVISION}/assets/ubuntu/2204/initrd'" in grub


def test_nocloud_seed_per_node() -> None:
    files = render_generation(example_state())
    base = "cloud-init/52:54:00:aa:bb:10/"
    user_data = yaml.safe_load(files[base + "user-data"])
    assert user_data["autoinstall"]["identity"]["hostname"] == "db-1"
    meta = yaml.safe_load(files[base + "meta-data"])
    assert meta["local-hostname"] == "db-1"
    assert meta["instance-id"].startswith("iid-")
    assert files[base + "vendor-data"] == b""
    assert not any(p.startswith("cloud-init/52:54:00:aa:bb:20/") for p in files)  # local-disk: no seed


def _instance_id(state: DesiredState, mac: str) -> str:
    meta = yaml.safe_load(render_generation(state)[f"cloud-init/{mac}/meta-data"])
    return str(meta["instance-id"])


def test_instance_id_ignores_the_revision_but_follows_the_node() -> None:
    mac = "52:54:00:aa:bb:01"
    first = _instance_id(example_state("a" * 40), mac)
    assert _instance_id(example_state("b" * 40), mac) == first
    snap = example_snapshot()
    files = dict(snap.files)
    files["nodes/node-1.yaml"] += b"reinstall: 1\n"
    assert _instance_id(valid_state(dataclasses.replace(snap, files=files)), mac) != first
    files = dict(snap.files)
    files["cloud-init/ubuntu-autoinstall.yaml"] += b"  timezone: UTC\n"
    assert _instance_id(valid_state(dataclasses.replace(snap, files=files)), mac) != first


def test_matchbox_node_group_and_profile() -> None:
    files = render_generation(example_state())
    group = json.loads(files["groups/node.node-1.json"])
    assert group["selector"] == {"mac": "52:54:00:aa:bb:01"}
    assert group["profile"] == "node.node-1"
    assert group["metadata"]["labels"] == {"rack": "r1", "role": "worker"}
    profile = json.loads(files[f"profiles/{group['profile']}.json"])
    assert profile["boot"]["kernel"] == f"{PINNED}/assets/ubuntu/2204/vmlinuz"
    assert profile["boot"]["initrd"] == [f"{PINNED}/assets/ubuntu/2204/initrd"]
    repo_profile = json.loads(files["profiles/ubuntu-2204-install.json"])
    assert "ds=nocloud;s={{ cloud_init_url }};dsmode=net" in repo_profile["boot"]["args"]
    assert json.loads(files["groups/default.json"]) == {
        "id": "default",
        "name": "Unknown machines boot from their local disk",
        "profile": "local-disk",
    }
    env = files["metadata/node-1.env"].decode().splitlines()
    assert "MAC=52:54:00:aa:bb:01" in env and "LABELS_RACK=r1" in env


def test_committed_matchbox_json_round_trips() -> None:
    snap = example_snapshot()
    profile = {
        "id": "coreos",
        "name": "Fedora CoreOS",
        "boot": {
            "kernel": "/assets/fcos/kernel",
            "initrd": ["--name main /assets/fcos/initramfs.img"],
            "args": ["initrd=main", "coreos.live.rootfs_url=http://10.10.10.12/assets/fcos/rootfs.img"],
        },
        "ignition_id": "worker.ign",
    }
    group = {"id": "workers", "name": "Workers", "profile": "coreos", "selector": {"os": "installed"}}
    files = dict(snap.files)
    files["profiles/coreos.json"] = json.dumps(profile).encode()
    files["groups/workers.json"] = json.dumps(group).encode()
    files.pop("assets.yaml")
    out = render_generation(valid_state(dataclasses.replace(snap, files=files)))
    assert json.loads(out["profiles/coreos.json"]) == profile
    assert json.loads(out["groups/workers.json"]) == group


def test_bootstrap_script_chains_with_matchbox_labels() -> None:
    files = render_generation(example_state())
    assert files["boot.ipxe"] == (
        b"#!ipxe\nchain http://10.10.10.12/ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}"
        b"&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n"
    )
    assert files["tftp/boot.ipxe"] == files["boot.ipxe"]


def test_same_state_same_bytes_whatever_the_input_order() -> None:
    state = example_state()
    first = render_generation(state)
    rng = random.Random(7)
    for _ in range(5):
        nodes = list(state.nodes)
        rng.shuffle(nodes)
        groups = list(state.groups)
        rng.shuffle(groups)
        profiles = list(state.profiles.items())
        rng.shuffle(profiles)
        shuffled_nodes = []
        for node in nodes:
            meta = list(node.metadata.items())
            rng.shuffle(meta)
            labels = list(node.labels.items())
            rng.shuffle(labels)
            shuffled_nodes.append(dataclasses.replace(node, metadata=dict(meta), labels=dict(labels)))
        shuffled = dataclasses.replace(
            state, nodes=tuple(shuffled_nodes), groups=tuple(groups), profiles=dict(profiles)
        )
        again = render_generation(shuffled)
        assert list(again) == list(first)
        assert again == first


def test_snapshot_file_order_does_not_matter() -> None:
    snap = example_snapshot()
    items = list(snap.files.items())
    random.Random(3).shuffle(items)
    shuffled = dataclasses.replace(snap, files=dict(items))
    assert render_generation(valid_state(shuffled)) == render_generation(valid_state(snap))


def test_matchbox_named_initrd_is_kept_and_pinned() -> None:
    snap = example_snapshot()
    files = dict(snap.files)
    files["profiles/local-disk.yaml"] = (
        b"boot:\n  kernel: /assets/fcos/kernel\n  initrd: ['--name main /assets/fcos/initramfs.img']\n"
        b"  args: [initrd=main, ignition.firstboot]\n"
    )
    files.pop("assets.yaml")
    out = render_generation(valid_state(dataclasses.replace(snap, files=files)))
    script = out["ipxe/legacy-1.ipxe"].decode()
    assert f"initrd --name main {PINNED}/assets/fcos/initramfs.img && goto" in script
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    assert kernel_line.split()[2:4] == ["initrd=main", "ignition.firstboot"]
    profile = json.loads(out["profiles/node.legacy-1.json"])
    assert profile["boot"]["initrd"] == [f"--name main {PINNED}/assets/fcos/initramfs.img"]
    assert f"initrd '(http,10.10.10.12)/r/{REVISION}/assets/fcos/initramfs.img'" in out["grub/legacy-1.cfg"].decode()


def test_instance_id_ignores_a_revision_used_inside_user_data() -> None:
    snap = example_snapshot()
    files = dict(snap.files)
    files["cloud-init/ubuntu-autoinstall.yaml"] += b"  timezone: UTC  # {{ revision[:7] }}\n"
    ids = {
        _instance_id(valid_state(dataclasses.replace(snap, files=files, revision=rev)), "52:54:00:aa:bb:02")
        for rev in ("a" * 40, "b" * 40)
    }
    assert len(ids) == 1
