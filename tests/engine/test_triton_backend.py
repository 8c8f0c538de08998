"""The engine on the Triton kernels (interpreter on CPU) gives the torch backend's tokens."""

from __future__ import annotations

from dsbox import LLM, SamplingParams


def test_triton_backend_matches_torch_backend(preln_ckpt):
    prompts = [[2, 100], [2] + list(range(300, 337)), [2] + list(range(1000, 1019))]
    # a small pool forces a preemption, so a re-prefill runs over the paged cache too
    per_block = 2 * 3 * 16 * 64 * 4
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    outs = {}
    for backend in ("torch", "triton"):
        llm = LLM(model=str(preln_ckpt), dtype="float32", device="cpu",
                  attention_backend=backend, kv_cache_memory=4 * per_block,
                  max_model_len=64)
        assert llm.client.local_worker().runner.backend.name == backend
        outs[backend] = llm.generate(prompts, params)
    assert [o.token_ids for o in outs["triton"]] == [o.token_ids for o in outs["torch"]]
    assert sum(o.lifecycle.num_preemptions for o in outs["triton"]) > 0
