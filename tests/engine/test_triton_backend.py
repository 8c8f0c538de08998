"""The engine on the Triton kernels (interpreter on CPU) gives the torch backend's tokens.

It runs in its own interpreter with CUDA hidden and ``TRITON_INTERPRET=1``: the interpreter
is a per-process choice, and a test process on a GPU machine runs its kernels compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import json, sys
    from dsbox import LLM, SamplingParams

    prompts = [[2, 100], [2] + list(range(300, 337)), [2] + list(range(1000, 1019))]
    # a small pool forces a preemption, so a re-prefill runs over the paged cache too
    per_block = 2 * 3 * 16 * 64 * 4
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    result = {}
    for backend in ("torch", "triton"):
        llm = LLM(model=sys.argv[1], dtype="float32", device="cpu",
                  attention_backend=backend, kv_cache_memory=4 * per_block,
                  max_model_len=64)
        assert llm.client.local_worker().runner.backend.name == backend
        outs = llm.generate(prompts, params)
        result[backend] = {"tokens": [o.token_ids for o in outs],
                           "preemptions": sum(o.lifecycle.num_preemptions for o in outs)}
    print(json.dumps(result))
""")


def test_triton_backend_matches_torch_backend(preln_ckpt):
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", CODE, str(preln_ckpt)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["triton"]["tokens"] == result["torch"]["tokens"]
    assert result["triton"]["preemptions"] > 0
