"""A node's boot plan digest (core.bootplan): the same for a commit that changes nothing it boots."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.bootplan import targets
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from tests.repo_builder import BASE, snapshot

SECRET = b"s" * 32


def plans(revision: str, edits: Mapping[str, str | None] | None = None) -> dict[str, str]:
    result = validate(snapshot(edits, revision=revision))
    assert result.state is not None, result.issues
    files = render_generation(result.state, report_secret=SECRET)  # as the daemon renders: tokens and all
    return {t.node: t.plan for t in targets(result.state, files)}


def test_the_commit_hash_and_a_comment_do_not_change_a_plan() -> None:
    base = plans("a" * 40)
    assert len(set(base.values())) == 2 and all(len(p) == 16 for p in base.values())
    commented = plans("b" * 40, {"profiles/install.yaml": "# a comment\n" + BASE["profiles/install.yaml"],
                                 "nodes/node-2.yaml": BASE["nodes/node-2.yaml"] + "# moved racks soon\n"})
    assert commented == base
    # a label is not what the machine boots either
    assert plans("c" * 40, {"nodes/node-1.yaml": BASE["nodes/node-1.yaml"].replace("r1", "r7")}) == base


def test_kernel_args_seed_and_reinstall_change_the_plan() -> None:
    base = plans("a" * 40)
    args = plans("b" * 40, {"profiles/install.yaml": BASE["profiles/install.yaml"].replace(
        "    - autoinstall\n", "    - autoinstall\n    - console=ttyS0\n")})
    assert args["node-1"] != base["node-1"] and args["node-2"] != base["node-2"]
    reinstall = plans("c" * 40, {"nodes/node-1.yaml": BASE["nodes/node-1.yaml"] + "reinstall: 1\n"})
    assert reinstall["node-1"] != base["node-1"] and reinstall["node-2"] == base["node-2"]
    seed = plans("d" * 40, {"cloud-init/autoinstall.yaml": BASE["cloud-init/autoinstall.yaml"] + "  locale: C\n"})
    assert seed["node-1"] != base["node-1"]


def test_the_boot_chain_is_part_of_the_plan() -> None:
    """Issue 24 point 1 names the boot chain among what a plan is (fails on the old code: turning
    Secure Boot on kept every plan, so a machine that last booted through iPXE was "in sync" with a
    commit handing it shim and signed GRUB)."""
    base = plans("a" * 40)
    secure = plans("b" * 40, {"netboot.yaml": BASE["netboot.yaml"] + "secure_boot: true\n"})
    assert secure["node-1"] != base["node-1"] and secure["node-2"] != base["node-2"]
    # a profile that keeps iPXE under a Secure Boot site keeps its plan
    opted_out = plans("c" * 40, {"netboot.yaml": BASE["netboot.yaml"] + "secure_boot: true\n",
                                 "profiles/install.yaml": BASE["profiles/install.yaml"] + "secure_boot: false\n"})
    assert opted_out == base
