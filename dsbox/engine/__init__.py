"""The dsbox engine, in three sub-packages:

- ``model``: what runs on one device: the OPT model, weights and where they come from, the
  tokenizer, the paged KV pool, attention backends, sampling and the model runner;
- ``core``: the torch-free scheduling core shared with the simulator: sequences and sampling
  parameters, the block manager, the schedulers, request tracking and routing;
- ``runtime``: the engine that serves requests through the instances of a placement, in
  this process or in worker processes (one per device), with KV handoff between them.
"""
