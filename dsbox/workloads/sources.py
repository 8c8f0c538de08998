"""Access to the data files that PyPI packages ship (ShareGPT, HumanEval).

No data set can be downloaded at run time, so each workload reads a file inside an
installed package; a missing package is reported with the ``pip install`` that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable

__all__ = ["DataFile", "MissingDataPackageError", "data_file"]


class MissingDataPackageError(ImportError):
    """A workload's data package is not installed."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """A data file inside an installed package, with what identifies its content."""

    resource: Traversable
    pip_name: str
    version: str
    size: int

    def read_bytes(self) -> bytes:
        return self.resource.read_bytes()

    def read_text(self) -> str:
        return self.resource.read_text(encoding="utf-8")


def data_file(workload: str, package: str, pip_name: str, *parts: str) -> DataFile:
    """The file ``parts`` inside ``package``; clear errors when it is not installed."""
    hint = f"workload {workload!r} needs the PyPI package {pip_name!r}: pip install {pip_name}"
    try:
        resource = resources.files(package).joinpath(*parts)
    except ImportError as exc:  # ModuleNotFoundError included
        raise MissingDataPackageError(hint) from exc
    if not resource.is_file():
        raise MissingDataPackageError(f"{hint} ({'/'.join(parts)} is missing from {package})")
    try:
        version = metadata.version(pip_name)
    except metadata.PackageNotFoundError:
        version = "unknown"
    with resources.as_file(resource) as path:
        size = path.stat().st_size
    return DataFile(resource, pip_name, version, size)
