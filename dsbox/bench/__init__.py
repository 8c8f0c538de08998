"""``dsbox bench``: SLO attainment, goodput and latency breakdown on real prompts.

The same trace (a workload with Poisson arrivals, or a recorded trace) is replayed on up to
three targets behind one small interface (:mod:`dsbox.bench.targets`): the engine on this
box through the engine client, the placement simulator on a latency profile, and any
OpenAI-compatible server. Every figure comes from the shared metrics report
(:func:`dsbox.metrics.report.build_report`) over the per-request stamps.

- ``rates``, ``slo``, ``workload``, ``placements``, ``profiles``: what to run;
- ``targets``, ``engine_target``, ``sim_target``, ``endpoint_target``: where it runs;
- ``runner``: runs every placement x rate x target; ``goodput``: sweep plus binary search;
- ``results``: the runs and the JSON file; ``summary``: the printed tables;
  ``plots``: the PNG figures (matplotlib, imported only when asked for).
"""
