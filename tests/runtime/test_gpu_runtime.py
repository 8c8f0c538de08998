"""On a CUDA GPU: a prefill and a decode worker share the GPU, KV moves by CUDA IPC."""

from __future__ import annotations

import pytest
import torch

from dsbox import SamplingParams
from dsbox.client import open_engine
from dsbox.config import EngineConfig
from tests.checkpoints import load_hf

pytestmark = pytest.mark.gpu


def test_disaggregated_on_one_gpu_equals_transformers(preln_ckpt):
    g = torch.Generator().manual_seed(3)
    prompts = [[2] + torch.randint(4, 50000, (n,), generator=g).tolist()
               for n in (1, 7, 30, 65, 129, 300)]
    hf = load_hf(preln_ckpt)
    ref = []
    with torch.no_grad():
        for p in prompts:
            out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p),
                              dtype=torch.long), max_new_tokens=10, min_new_tokens=10,
                              do_sample=False, eos_token_id=None, pad_token_id=1)
            ref.append(out[0, len(p):].tolist())
    for backend in ("torch", "triton"):
        cfg = EngineConfig(model=str(preln_ckpt), dtype="float32", device="cuda",
                           kv_cache_memory=64 << 20, attention_backend=backend,
                           placement="prefill:tp=1;decode:tp=1", share_devices=True)
        with open_engine(cfg) as ctl:
            outs = ctl.generate(prompts, SamplingParams(max_tokens=10, temperature=0,
                                                        ignore_eos=True))
            assert ctl.stats().kv_bytes_moved > 0
            assert ctl.stats().kv_blocks_used == 0
        assert [o.token_ids for o in outs] == ref, backend
