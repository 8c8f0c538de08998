"""Convert DistServe's published A100 profile data into dsbox profile files.

Source: the DistServe repository (LLMServe/DistServe, OSDI'24 artifact),
``simdistserve/estimators/profile_data/``: ``profiler-a100-80g.distserve.json`` (their
engine), ``profiler-a100-80g.vllm.json`` (vLLM) and ``max_num_tokens.csv`` (KV capacity in
tokens per model, TP and PP). A copy sits in ``shared/data/distserve-a100/``. The built-in
``a100-80g`` profile was made with::

    python -m dsbox.placement.distserve_import ../shared/data/distserve-a100 \
        dsbox/data/profiles/a100-80g
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from dsbox.placement.profile import LatencyProfile, StepFit

SOURCE = {
    "source": "DistServe (Zhong et al., OSDI'24) published profiling fits for A100-SXM4-80GB",
    "repository": "https://github.com/LLMServe/DistServe",
    "files": [
        "simdistserve/estimators/profile_data/profiler-a100-80g.distserve.json",
        "simdistserve/estimators/profile_data/profiler-a100-80g.vllm.json",
        "simdistserve/estimators/profile_data/max_num_tokens.csv",
    ],
    "local_copy": "shared/data/distserve-a100/",
    "note": "figures copied unchanged; engine 'distserve' is DistServe's engine, 'vllm' is "
            "vLLM on the same GPUs; KV capacity is DistServe's max_num_tokens (tokens per "
            "instance)",
}
A100_80G_BYTES = 80 * 2**30


def _fits(data: dict, model_key: str) -> dict[int, StepFit]:
    out = {}
    for tp, entry in data.get(model_key, {}).items():
        out[int(tp)] = StepFit(entry["prefill"], entry["decoding_smallbs"],
                               entry["decoding_largebs"],
                               int(entry["decoding_large_small_bs_threshold"]))
    return out


def convert(distserve: dict, vllm: dict, kv_csv: str, model: str) -> LatencyProfile:
    """The dsbox profile of ``model`` (``opt-13b``) from DistServe's three files."""
    key = f"facebook/{model}"
    fits = {}
    for engine, data in (("distserve", distserve), ("vllm", vllm)):
        per_tp = _fits(data, key)
        if per_tp:
            fits[engine] = per_tp
    if not fits:
        raise ValueError(f"DistServe data has no fit for {key}")
    kv = {(int(r["tp"]), int(r["pp"])): int(r["max_num_tokens"])
          for r in csv.DictReader(io.StringIO(kv_csv)) if r["model"] == key}
    return LatencyProfile(
        model=model, device="a100-80g", device_name="NVIDIA A100-SXM4-80GB", fits=fits,
        default_engine="distserve", dtype="float16", device_memory_bytes=A100_80G_BYTES,
        kv_capacity_tokens=kv, provenance=dict(SOURCE))


def main(argv: list[str]) -> None:
    src, dst = Path(argv[0]), Path(argv[1])
    distserve = json.loads((src / "profiler-a100-80g.distserve.json").read_text())
    vllm = json.loads((src / "profiler-a100-80g.vllm.json").read_text())
    kv_csv = (src / "max_num_tokens.csv").read_text()
    models = sorted({k.removeprefix("facebook/") for k in distserve})
    for model in models:
        convert(distserve, vllm, kv_csv, model).save(dst / f"{model}.json")
        print(f"wrote {dst / f'{model}.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
