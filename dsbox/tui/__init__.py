"""The ``dsbox run`` app: a Textual dashboard of the engine beside a chat pane.

``make_app(client, ...)`` (:mod:`dsbox.tui.app`) builds it for the CLI and the tests alike.
The data it shows comes from :mod:`dsbox.tui.feed` (stats snapshots and the metrics report
over a sliding window); :mod:`dsbox.tui.resources` samples the GPUs or the CPU. The
dashboard's load comes from :mod:`dsbox.workloads.load_generator`. Textual is imported only
by ``app``, ``screens`` and ``widgets``, so the rest of dsbox never needs it.
"""
