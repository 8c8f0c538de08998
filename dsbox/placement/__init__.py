"""Placement search (DistServe section 4): latency model, simulator, goodput, Alg. 1 / Alg. 2.

- ``profile``/``latency``: step-time fits per (model, device, TP) and instance step times;
  ``fitting``/``profiler``: measuring the engine (``dsbox profile``).
- ``simulator``: discrete-event simulation driving the engine's scheduler classes, with the
  same lifecycle stamps as a real run (``lazy_decode``: its fast path).
- ``goodput``: binary search of the highest rate meeting the SLO attainment target.
- ``alg_low`` (Alg. 2), ``alg_high`` (Alg. 1), ``colocated`` (vLLM++), ``plan`` (all),
  ``verdict`` (which mode wins, by how much, why), ``auto`` (``--placement auto``).
- ``analytic``/``gpus``: derived profiles for any model and GPU of the table;
  ``profile_source``: finding a model's profile.

No UI or server packages are needed here.
"""

from dsbox.placement.auto import PlacementChoice, choose_placement
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.goodput import GoodputSearch, SearchSettings
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.plan import make_context, plan_search
from dsbox.placement.plan_types import PhasePlan, PlanResult
from dsbox.placement.profile import LatencyProfile, StepFit, StepOverhead
from dsbox.placement.profile_source import load_profile
from dsbox.placement.sim_setup import EngineLimits, build_setup
from dsbox.placement.sim_types import SimInstance, SimResult, SimSetup, SimTrace
from dsbox.placement.simulator import simulate
from dsbox.placement.verdict import Verdict
from dsbox.placement.workload import RequestSample, sample_requests

__all__ = [
    "ClusterSpec",
    "EngineLimits",
    "GoodputSearch",
    "InstanceLatency",
    "LatencyProfile",
    "PhasePlan",
    "PlacementChoice",
    "PlanResult",
    "RequestSample",
    "SearchSettings",
    "SimInstance",
    "SimResult",
    "SimSetup",
    "SimTrace",
    "StepFit",
    "StepOverhead",
    "Verdict",
    "build_setup",
    "choose_placement",
    "load_profile",
    "make_context",
    "plan_search",
    "sample_requests",
    "simulate",
]
