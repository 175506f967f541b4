"""The wheel ships the top-level `schemas/` as `reconciler/schemas/` (setup.py maps it; no
symlink, no copy in the tree): a plain `pip install .` validates without a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_every_schema(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("netboot_reconcile-*.whl")
    shipped = zipfile.ZipFile(wheel)
    sources = sorted(p for p in (ROOT / "schemas").rglob("*.json"))
    assert len(sources) >= 7
    for source in sources:
        name = "reconciler/schemas/" + source.relative_to(ROOT / "schemas").as_posix()
        assert shipped.read(name) == source.read_bytes(), name
    assert "reconciler/py.typed" in shipped.namelist()
