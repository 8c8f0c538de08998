"""The dsbox engine: OPT model, weights, tokenizer, paged KV cache, schedulers and runners."""
