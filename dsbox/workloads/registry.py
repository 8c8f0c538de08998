"""``load_workload``: the named workloads (sharegpt, humaneval, longdoc) behind one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from dsbox.engine.model.tokenizer import Tokenizer, bundled_tokenizer
from dsbox.workloads.humaneval import humaneval_requests
from dsbox.workloads.longdoc import longdoc_requests
from dsbox.workloads.sharegpt import sharegpt_requests
from dsbox.workloads.spec import RequestSpec

__all__ = ["WORKLOAD_NAMES", "UnknownWorkloadError", "load_workload"]

_Builder = Callable[[Tokenizer, bool], list[RequestSpec]]

#: Workload names and what each stands for in the paper.
WORKLOAD_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "sharegpt": "chatbot (ShareGPT, DistServe's rule)",
        "humaneval": "code completion (HumanEval)",
        "longdoc": "summarization (long ShareGPT documents, standing in for LongBench)",
    }
)


class UnknownWorkloadError(ValueError):
    """No workload has that name."""


def _builder(name: str) -> _Builder:
    builders: dict[str, _Builder] = {
        "sharegpt": sharegpt_requests,
        "humaneval": humaneval_requests,
        "longdoc": longdoc_requests,
    }
    try:
        return builders[name]
    except KeyError:
        known = ", ".join(WORKLOAD_NAMES)
        raise UnknownWorkloadError(f"unknown workload {name!r}; known: {known}") from None


def load_workload(
    name: str, tokenizer: Tokenizer | None = None, *, with_text: bool = True
) -> list[RequestSpec]:
    """The requests of workload ``name``, token counts from ``tokenizer`` (default: bundled).

    ``with_text=False`` leaves ``prompt`` as None, which lets a cached workload load
    without reading its data file (the simulator needs only lengths). Raises
    :class:`UnknownWorkloadError` for an unknown name and
    :class:`~dsbox.workloads.sources.MissingDataPackageError` when the data package is
    not installed.
    """
    builder = _builder(name.strip().lower())
    return builder(tokenizer or bundled_tokenizer(), with_text)
