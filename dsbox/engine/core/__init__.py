"""The torch-free scheduling core, shared by the runtime and the simulator: sequences,
sampling parameters, block manager, schedulers, request tracking and routing."""
