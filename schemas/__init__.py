"""The JSON Schemas of the repository format (draft 2020-12), shipped as `reconciler.schemas`
(setup.py maps this directory there); read with importlib.resources by `core.schema`."""
