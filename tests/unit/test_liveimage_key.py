"""The e2e live image is rebuilt exactly when a package it is made of changes version (tests/e2e/liveimage.py)."""

from __future__ import annotations

from tests.e2e.liveimage import PACKAGES, cache_key

VERSIONS = {package: "1.0" for package in PACKAGES}


def test_same_versions_reuse_the_cached_image() -> None:
    assert cache_key(dict(VERSIONS)) == cache_key(dict(reversed(list(VERSIONS.items()))))


def test_any_package_update_builds_a_new_image() -> None:
    keys = {cache_key({**VERSIONS, package: "1.0+deb12u1"}) for package in PACKAGES}
    assert len(keys) == len(PACKAGES) and cache_key(VERSIONS) not in keys
