"""The model and everything that runs it on one device: OPT, weights, tokenizer, KV pool,
attention backends, sampling and the model runner. Knows nothing of parallelism."""
