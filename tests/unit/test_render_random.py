"""Random valid repositories: rendering is deterministic, and every kernel argument stays one
word of the iPXE `kernel` line and one quoted word of GRUB's `linux` line."""

from __future__ import annotations

import random
import shlex

from hypothesis import given, settings

from reconciler.core.render import render_generation
from reconciler.core.snapshot import Snapshot
from tests.render_support import random_repo, valid_state


@settings(max_examples=25, deadline=None)
@given(files=random_repo(), seed=...)
def test_random_repo_renders_deterministically_and_args_stay_words(files: dict[str, bytes], seed: int) -> None:
    state = valid_state(Snapshot("c" * 40, files))
    out = render_generation(state)
    items = list(files.items())
    random.Random(seed).shuffle(items)
    assert render_generation(valid_state(Snapshot("c" * 40, dict(items)))) == out
    for node in state.nodes:
        args = state.profiles[node.profile].boot.args
        script = out[f"ipxe/{node.name}.ipxe"].decode()
        kernel = [line for line in script.splitlines() if line.startswith("kernel ")]
        grub = out[f"grub/{node.name}.cfg"].decode()
        linux = [line.strip() for line in grub.splitlines() if line.strip().startswith("linux ")]
        if not state.profiles[node.profile].boot.kernel:
            assert not kernel and not linux
            continue
        (line,) = kernel
        words = line.removesuffix(" && goto kernel_ok ||").split()
        assert len(words) == 3 + len(args)  # kernel URL initrd=NAME args...
        # GRUB's single quotes follow POSIX shell rules: shlex reads the words back.
        grub_words = shlex.split(linux[0])
        assert grub_words[2:] == words[3:]
