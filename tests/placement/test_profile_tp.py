"""``dsbox profile --tp 1,2`` on the CPU: TP 2 is measured on a TP group of the runtime's
worker processes (gloo), and both TP fits predict steps they were not fitted on."""

from __future__ import annotations

from typer.testing import CliRunner

from dsbox.cli import make_app
from dsbox.placement.fitting import median_error, point_from_dict
from dsbox.placement.profile_source import load_profile
from dsbox.placement.profiler import split_held_out


def _profile(tmp_path):
    out = tmp_path / "opt-tiny.json"
    result = CliRunner().invoke(make_app(), [
        "profile", "opt-tiny", "--quick", "--repeats", "3", "--device", "cpu",
        "--threads", "1", "--tp", "1,2", "--no-overhead", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "profiling TP 2" in result.output and "TP 2 (worker processes)" in result.output
    return load_profile(out, "opt-tiny")


def _held_out_error(prof, tp: int) -> float:
    records = (prof.measurements if tp == 1
               else prof.provenance["tp"][str(tp)]["measurements"])
    _train, held = split_held_out([point_from_dict(m) for m in records], 4)
    assert len(held) >= 5
    return median_error(prof.fit(tp), held)


def test_profile_fits_tp_1_and_2_through_the_workers(tmp_path):
    for _attempt in range(2):  # timing on a shared 2-core box: one retry against a burst
        prof = _profile(tmp_path)
        errors = {tp: _held_out_error(prof, tp) for tp in (1, 2)}
        if max(errors.values()) < 0.3:
            break
    assert prof.tps() == [1, 2]
    assert max(errors.values()) < 0.3, errors
    assert prof.provenance["tp"]["2"]["held_out_median_relative_error"] == errors[2]
    assert prof.token_budget(2) > 0
    # a TP group pays for its all-reduces: on one CPU core per rank, TP 2 is no free lunch,
    # and the fit says what it costs (it is a measurement, not TP 1 scaled)
    assert prof.fit(2) != prof.fit(1)
