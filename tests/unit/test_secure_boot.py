"""Secure Boot policy: `secure_boot` in netboot.yaml and profiles, from the repository to the DHCP
answer, the TFTP files, the GRUB configs, the findings and `diff`.

Everything here runs the real validator and renderer on small repositories (`repo_builder`); the
end-to-end proof with OVMF's Secure Boot firmware is tests/e2e/test_secure_boot.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.bootfiles import GRUB_NAME, SHIM_NAME, signed_files
from reconciler.core.model import DesiredState
from reconciler.core.plan import compare, side
from reconciler.core.render import render_generation
from reconciler.core.securecheck import missing_binaries
from reconciler.core.validate import Validation, validate
from reconciler.protocol import dhcp as d
from reconciler.protocol import tftp as proto
from reconciler.protocol.dhcp_decide import AnswerMemo, Decision, decide, plan_dhcp
from reconciler.protocol.tftp_serve import FromAssets, FromGeneration, FromRoot, RootPolicy, asset_url_path, resolve
from tests import repo_builder
from tests.dhcp_fixtures import MemoryLeases, client_message, pxe_options

SITE = repo_builder.BASE["netboot.yaml"]
SECURE_SITE = SITE + "secure_boot: true\n"
NODE_1, NODE_2 = "52:54:00:aa:bb:01", "52:54:00:aa:bb:02"
# node-2 boots its own profile, `plain`, which overrides the site's choice
PLAIN = {
    "profiles/plain.yaml": repo_builder.BASE["profiles/install.yaml"],
    "nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nip: 10.10.10.202\nprofile: plain\n",
}


def checked(edits: Mapping[str, str | None], revision: str = "rev1") -> Validation:
    return validate(repo_builder.snapshot(edits, revision=revision))


def state_of(edits: Mapping[str, str | None], revision: str = "rev1") -> DesiredState:
    result = checked(edits, revision)
    assert result.state is not None, result.errors
    return result.state


def boot_file(state: DesiredState, mac: str, arch: int, memo: AnswerMemo | None = None,
              http: bool = False, ipxe: bool = False) -> str:
    plan = plan_dhcp(state)
    message = client_message(d.DISCOVER, mac, options=pxe_options(arch, ipxe=ipxe, http=http))
    decision: Decision = decide(message, plan, MemoryLeases(), 1000.0, memo=memo)
    assert decision.reply is not None, decision.reason
    return (decision.reply.options.get(d.OPT_BOOTFILE) or decision.reply.file).decode()


def with_profile(profile: str, extra: str) -> dict[str, str]:
    return {f"profiles/{profile}.yaml": repo_builder.BASE["profiles/install.yaml"] + extra}


# --- DHCP ---------------------------------------------------------------------------------


def test_secure_site_hands_uefi_pxe_the_shim_and_keeps_ipxe_for_the_rest() -> None:
    state = state_of({"netboot.yaml": SECURE_SITE})
    assert boot_file(state, NODE_1, 7) == SHIM_NAME
    assert boot_file(state, NODE_1, 9) == SHIM_NAME
    assert boot_file(state, NODE_1, 0) == "undionly.kpxe"  # BIOS has no Secure Boot
    assert boot_file(state, NODE_1, 7, ipxe=True) == "http://10.10.10.12/boot.ipxe"
    assert boot_file(state, NODE_1, 16, http=True).endswith("/assets/ipxe/ipxe.efi")


def test_without_secure_boot_uefi_pxe_gets_ipxe() -> None:
    assert boot_file(state_of({}), NODE_1, 7) == "ipxe.efi"


def test_a_profile_overrides_the_site_both_ways_even_through_the_answer_memo() -> None:
    secure = state_of({"netboot.yaml": SECURE_SITE, **PLAIN, **with_profile("plain", "secure_boot: false\n")})
    memo = AnswerMemo(plan_dhcp(secure))
    # the same request signature from both machines: the memo must not hand one's chain to the other
    assert boot_file(secure, NODE_1, 7) == SHIM_NAME
    assert boot_file(secure, NODE_2, 7) == "ipxe.efi"
    plan = memo.plan
    for mac, want in ((NODE_1, SHIM_NAME), (NODE_2, "ipxe.efi"), (NODE_1, SHIM_NAME)):
        message = client_message(d.DISCOVER, mac, options=pxe_options(7))
        reply = decide(message, plan, MemoryLeases(), 1000.0, memo=memo).reply
        assert reply is not None and reply.file.decode() == want
    plain = state_of({**PLAIN, **with_profile("plain", "secure_boot: true\n")})
    assert boot_file(plain, NODE_1, 7) == "ipxe.efi"
    assert boot_file(plain, NODE_2, 7) == SHIM_NAME


def test_external_dhcp_configs_give_the_shim_site_wide() -> None:
    files = render_generation(state_of({"netboot.yaml": SECURE_SITE}))
    assert f'filename "{SHIM_NAME}";' in files["dhcpd.conf"].decode()
    assert SHIM_NAME in files["kea-dhcp4.conf"].decode()
    assert f",{SHIM_NAME}," in files["dnsmasq.conf"].decode()


# --- the generation's GRUB configs --------------------------------------------------------


def test_grub_configs_fetch_kernel_and_initrd_over_tftp_from_the_pinned_revision() -> None:
    files = render_generation(state_of({"netboot.yaml": SECURE_SITE, **PLAIN,
                                        **with_profile("plain", "secure_boot: false\n")}, "abc123"))
    top = files["tftp/grub/grub.cfg"].decode()
    assert 'source "$prefix/grub.cfg-$net_default_mac"' in top
    own = files[f"tftp/grub/grub.cfg-{NODE_1}"].decode()
    assert "linux '(tftp,10.10.10.12)/r/abc123/assets/vmlinuz' 'autoinstall'" in own
    assert "initrd '(tftp,10.10.10.12)/r/abc123/assets/initrd'" in own
    assert "'ds=nocloud;s=http://10.10.10.12/r/abc123/cloud-init/52:54:00:aa:bb:01/;dsmode=net'" in own
    assert "set netboot_node='node-1'" in own
    # node-2's profile keeps iPXE, yet it has its own config: an external DHCP server hands the shim
    # to every machine, and a known machine must not fall through to the default group's
    assert "set netboot_node='node-2'" in files[f"tftp/grub/grub.cfg-{NODE_2}"].decode()


def test_unknown_machines_get_the_default_groups_profile_over_tftp() -> None:
    default = {"groups/default.yaml": "profile: rescue\n", "netboot.yaml": SECURE_SITE,
               "profiles/rescue.yaml": "boot: {kernel: /assets/vmlinuz, initrd: [/assets/initrd], args: [rescue]}\n"}
    files = render_generation(state_of(default, "abc123"))
    top = files["tftp/grub/grub.cfg"].decode()
    assert top.index("grub.cfg-$net_default_mac") < top.index("grub.cfg-default") < top.index("no configuration")
    fallback = files["tftp/grub/grub.cfg-default"].decode()
    assert "linux '(tftp,10.10.10.12)/r/abc123/assets/vmlinuz'" in fallback
    assert "set netboot_node='default'" in fallback
    # a default group booting the local disk: GRUB exits to the firmware's next boot option
    local = render_generation(state_of({"netboot.yaml": SECURE_SITE}))["tftp/grub/grub.cfg-default"].decode()
    assert "exit" in local and "linux" not in local


def test_no_secure_boot_no_grub_tftp_files() -> None:
    assert not any(p.startswith("tftp/grub/") for p in render_generation(state_of({})))


# --- TFTP ---------------------------------------------------------------------------------


def _realpath(path: str) -> str:
    return path  # a tree without symlinks


def test_tftp_serves_the_signed_binaries_and_assets_by_revision() -> None:
    state = state_of({"netboot.yaml": SECURE_SITE})
    signed = signed_files(state)
    policy = RootPolicy("/srv/tftp", assets="/srv/assets")

    def rrq(name: str) -> proto.ReadRequest:
        return proto.ReadRequest(name, "octet", ())

    shim = resolve(rrq("/shimx64.efi"), {}, policy, _realpath, signed)
    assert isinstance(shim, FromRoot) and shim.path == "/usr/lib/shim/shimx64.efi.signed"
    grub = resolve(rrq(GRUB_NAME), {}, policy, _realpath, signed)
    assert isinstance(grub, FromRoot) and grub.path == "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
    generation = {"tftp/grub/grub.cfg": b"cfg"}
    assert isinstance(resolve(rrq("/grub/grub.cfg"), generation, policy, _realpath, signed), FromGeneration)
    pinned = resolve(rrq("/r/abc123/assets/vmlinuz"), {}, policy, _realpath, signed)
    assert isinstance(pinned, FromAssets)
    assert pinned.paths == ("/srv/assets/.netboot/generations/abc123/vmlinuz", "/srv/assets/vmlinuz")
    plain = resolve(rrq("assets/boot/initrd"), {}, policy, _realpath, signed)
    assert isinstance(plain, FromAssets) and plain.paths == ("/srv/assets/boot/initrd",)
    # without secure boot in the generation the names are plain files of the root
    unsigned = resolve(rrq(SHIM_NAME), {}, policy, _realpath, signed_files(state_of({})))
    assert isinstance(unsigned, FromRoot) and unsigned.path == "/srv/tftp/shimx64.efi"


def test_tftp_asset_requests_are_recorded_as_the_assets_they_name() -> None:
    assert asset_url_path("/r/abc123/assets/e2e/vmlinuz") == "/assets/e2e/vmlinuz"
    assert asset_url_path("assets/e2e/initrd") == "/assets/e2e/initrd"
    assert asset_url_path("grubx64.efi") is None
    assert asset_url_path("../assets/x") is None


def test_tftp_asset_requests_cannot_leave_the_assets_root() -> None:
    policy = RootPolicy("/srv/tftp", assets="/srv/assets")

    def outside(path: str) -> str:
        return "/etc/shadow" if path.endswith("/link") else path

    for name in ("assets/link", "r/abc/assets/link", "assets/.netboot/store/x", "r/../assets/x"):
        try:
            found = resolve(proto.ReadRequest(name, "octet", ()), {}, policy, outside)
        except proto.TftpError as error:
            assert error.code == proto.ERR_ACCESS
        else:
            raise AssertionError(f"{name} resolved to {found}")


# --- findings -----------------------------------------------------------------------------


def test_a_remote_kernel_under_secure_boot_is_an_error_naming_file_and_line() -> None:
    remote = {"profiles/install.yaml": repo_builder.BASE["profiles/install.yaml"].replace(
        "kernel: /assets/vmlinuz", "kernel: http://mirror.example/vmlinuz")}
    assert not checked(remote).errors  # fine for iPXE, which fetches over HTTP
    errors = checked({"netboot.yaml": SECURE_SITE, **remote}).errors
    assert [(e.file, e.line, e.code) for e in errors] == [("profiles/install.yaml", 3, "secure-boot-remote-file")]
    assert "http://mirror.example/vmlinuz" in errors[0].message


def test_schema_refuses_a_relative_shim_path_and_a_non_boolean() -> None:
    bad = checked({"netboot.yaml": SITE + "secure_boot: yes please\nboot_files: {shim_x64: shim.efi}\n"})
    assert {e.code for e in bad.errors} == {"schema"}
    assert len(bad.errors) == 2


def test_missing_signed_binaries_are_named_with_their_package() -> None:
    state = state_of({"netboot.yaml": SECURE_SITE})
    found = missing_binaries(state, lambda path: "shim" in path)
    assert [i.code for i in found] == ["secure-boot-file-missing"]
    assert "grub-efi-amd64-signed" in found[0].message and found[0].file == "netboot.yaml"
    assert missing_binaries(state_of({}), lambda path: False) == ()


# --- diff ---------------------------------------------------------------------------------


def test_diff_shows_the_change_of_boot_chain() -> None:
    base = checked({}, "a" * 40)
    head = checked({"netboot.yaml": SECURE_SITE}, "b" * 40)
    plan = compare(side("a" * 40, base.state, base.issues), side("b" * 40, head.state, head.issues))
    changes = {n.name: [(c.what, c.before, c.after) for c in n.changes] for n in plan.nodes}
    assert changes["node-1"] == [("boot chain (UEFI PXE)", "iPXE", "shim + signed GRUB (Secure Boot)")]
