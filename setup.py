"""Build step (metadata is in pyproject.toml): the JSON Schemas live in the top-level `schemas/`
(where editors and other tools find them) and ship inside the package as `reconciler.schemas`
package data, mapped at build time: no copy, no symlink."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["reconciler*"]), "reconciler.schemas"],
    package_dir={"reconciler.schemas": "schemas"},
    package_data={"reconciler": ["py.typed"], "reconciler.schemas": ["*.json", "ignition/*.json"]},
)
