"""Which torch device each rank of each instance runs on, from the ``device`` setting and
the placement's device ids (a pure function, so it is tested without a GPU).

- On the CPU every rank runs on ``cpu``.
- ``device="cuda"`` (no index): a placement's device ids are visible GPU ids, rank by rank
  (``prefill:tp=1@1;decode:tp=1@0`` puts prefill on ``cuda:1``).
- ``device="cuda:N"``: when the whole engine runs on one GPU (one instance on one device,
  as ``LLM(device="cuda:1")`` runs in-process; or, with ``share_devices``, every instance on
  one device each, all sharing it) everything runs on ``cuda:N``. A placement on several
  GPUs keeps its device ids as visible GPU ids and the index is not used (the caller
  warns): ``@`` ids choose the GPUs of such a placement.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsbox.config.placement import InstanceSpec


def uses_one_device(instances: Sequence[InstanceSpec], share: bool) -> bool:
    """Whether the engine runs on one device: one instance of one device, or with
    ``share`` (instances sharing GPUs) instances of one device each."""
    if all(i.tp * i.pp == 1 for i in instances):
        return len(instances) == 1 or share
    return False


def device_names(kind: str, index: int | None, instances: Sequence[InstanceSpec],
                 num_visible: int, *, share: bool = False) -> list[tuple[str, ...]]:
    """Per instance (in order), the device of each rank: ``"cpu"`` or ``"cuda:K"``.

    ``kind``/``index``: the engine's device (``"cuda"``, 1 for ``cuda:1``); ``instances``:
    one per running instance, device ids assigned (and already mapped onto the visible
    GPUs); ``num_visible``: how many GPUs this process sees. ValueError for an index
    that is not a visible GPU.
    """
    if kind == "cpu":
        return [("cpu",) * (i.tp * i.pp) for i in instances]
    if kind != "cuda":
        raise ValueError(f"device kind must be cpu or cuda, got {kind!r}")
    if index is not None:
        if not 0 <= index < num_visible:
            raise ValueError(f"device cuda:{index} asked for, but {num_visible} GPU(s) are "
                             f"visible (cuda:0..cuda:{num_visible - 1})")
        if uses_one_device(instances, share):
            return [(f"cuda:{index}",) for _ in instances]
    for inst in instances:
        if inst.devices is None:
            raise ValueError(f"{inst.format()}: devices are not assigned")
    return [tuple(f"cuda:{d}" for d in inst.devices) for inst in instances]
