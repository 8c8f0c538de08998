"""dsbox: single-node LLM serving with disaggregated prefill and decode (DistServe).

The offline API::

    from dsbox import LLM, SamplingParams
    outs = LLM(model="opt-125m", dtype="float32", device="cpu").generate(
        ["Hello"], SamplingParams(max_tokens=32, temperature=0.0))
"""

from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.llm import LLM

__all__ = ["LLM", "RequestOutput", "SamplingParams"]
