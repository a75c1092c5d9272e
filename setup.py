"""Package layout: the folders `plugins/` and `registry/` install under namespaced import names.

`plugins/readers` becomes `refractor_plugins.readers`, `registry/` becomes `refractor_registry`,
so nothing lands in site-packages as a bare `plugins` or `registry` package. Everything else
lives in pyproject.toml.
"""

from setuptools import find_packages, setup


def _mapped(folder: str, name: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=find_packages(include=["refractor_core", "refractor_core.*"])
    + _mapped("plugins", "refractor_plugins")
    + _mapped("registry", "refractor_registry"),
    package_dir={"refractor_plugins": "plugins", "refractor_registry": "registry"},
)
