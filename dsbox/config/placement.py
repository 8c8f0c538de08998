"""Placement: which instances run where (role, TP, PP, replicas, devices), and its text form.

An *instance* holds one copy of the weights on ``tp * pp`` devices and plays one role:
``prefill``, ``decode`` or ``colocated`` (both phases, the vLLM-style baseline). A
placement is either all colocated, or at least one prefill and one decode instance.

Text form (parsed and printed by this module, so it round-trips)::

    colocated:tp=2
    prefill:tp=2;decode:tp=1
    prefill:tp=1*2;decode:tp=2,pp=2      # *N: N replicas of that instance
    prefill:tp=2@0,1;decode:tp=2@4-5     # @: explicit device ids (ranges allowed)

Without ``@`` devices are assigned in order, skipping any given explicitly. Device ids of a
replica are listed stage by stage: stage 0's ``tp`` devices, then stage 1's, and so on; an
instance with replicas lists replica 0's devices first. On a cluster of N nodes x G GPUs
the ids are global: ``node * G + local``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsbox.config.model_spec import ModelSpec

ROLES = ("prefill", "decode", "colocated")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_INSTANCE_RE = re.compile(
    r"^\s*(?P<role>[a-z]+)\s*(?::(?P<params>[^*@]*))?"
    r"(?:\*\s*(?P<replicas>[^@]*))?(?:@(?P<devices>.*))?$")


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{what}: {text.strip()!r} is not an integer") from None


def parse_devices(text: str) -> tuple[int, ...]:
    """``"0,1,4-7"`` -> ``(0, 1, 4, 5, 6, 7)``."""
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"device list {text!r}: empty item")
        if "-" in item:
            lo_text, hi_text = item.split("-", 1)
            lo, hi = _parse_int(lo_text, "device range"), _parse_int(hi_text, "device range")
            if hi < lo:
                raise ValueError(f"device range {item!r} runs backwards")
            out.extend(range(lo, hi + 1))
        else:
            out.append(_parse_int(item, "device id"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """``replicas`` identical instances of one role, each on ``tp * pp`` devices."""

    role: str
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    devices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"instance role must be one of {ROLES}, got {self.role!r}")
        for attr in ("tp", "pp", "replicas"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{self.role} instance: {attr} must be an integer >= 1, "
                                 f"got {value!r}")
        if self.devices is not None:
            devices = tuple(self.devices)
            object.__setattr__(self, "devices", devices)
            if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in devices):
                raise ValueError(f"{self.role} instance: device ids must be integers >= 0, "
                                 f"got {devices}")
            if len(devices) != self.num_devices:
                raise ValueError(
                    f"{self.role} instance tp={self.tp} pp={self.pp} x{self.replicas} needs "
                    f"{self.num_devices} devices, {len(devices)} given: {devices}")
            if len(set(devices)) != len(devices):
                raise ValueError(f"{self.role} instance lists a device twice: {devices}")

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def num_devices(self) -> int:
        return self.tp * self.pp * self.replicas

    def replica_devices(self, replica: int) -> tuple[int, ...]:
        """Devices of one replica, stage by stage (needs explicit or assigned devices)."""
        if self.devices is None:
            raise ValueError("devices are not assigned; call Placement.assigned() first")
        if not 0 <= replica < self.replicas:
            raise IndexError(f"replica {replica} out of range 0..{self.replicas - 1}")
        n = self.devices_per_replica
        return self.devices[replica * n:(replica + 1) * n]

    def stage_devices(self, replica: int, stage: int) -> tuple[int, ...]:
        """The ``tp`` devices holding pipeline stage ``stage`` of one replica."""
        if not 0 <= stage < self.pp:
            raise IndexError(f"stage {stage} out of range 0..{self.pp - 1}")
        devs = self.replica_devices(replica)
        return devs[stage * self.tp:(stage + 1) * self.tp]

    def split(self) -> list[InstanceSpec]:
        """One spec per replica (devices split accordingly when known)."""
        return [InstanceSpec(self.role, self.tp, self.pp, 1,
                             None if self.devices is None else self.replica_devices(r))
                for r in range(self.replicas)]

    def format(self, with_devices: bool = True) -> str:
        text = f"{self.role}:tp={self.tp}"
        if self.pp != 1:
            text += f",pp={self.pp}"
        if self.replicas != 1:
            text += f"*{self.replicas}"
        if with_devices and self.devices is not None:
            text += "@" + ",".join(str(d) for d in self.devices)
        return text

    @classmethod
    def parse(cls, text: str) -> InstanceSpec:
        match = _INSTANCE_RE.match(text)
        if match is None or not text.strip():
            raise ValueError(f"instance {text!r}: expected ROLE[:tp=N,pp=N][*REPLICAS][@DEVICES]")
        role = match["role"]
        if role not in ROLES:
            raise ValueError(f"instance {text.strip()!r}: role must be one of {ROLES}")
        values = {"tp": 1, "pp": 1, "replicas": 1}
        params = (match["params"] or "").strip()
        if match["params"] is not None and not params:
            raise ValueError(f"instance {text.strip()!r}: nothing after ':'")
        seen = set()
        for item in filter(None, (p.strip() for p in params.split(","))) if params else ():
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in values:
                raise ValueError(f"instance {text.strip()!r}: bad parameter {item!r} "
                                 f"(expected tp=N, pp=N or replicas=N)")
            if key in seen:
                raise ValueError(f"instance {text.strip()!r}: {key} given twice")
            seen.add(key)
            values[key] = _parse_int(value, f"instance {text.strip()!r}: {key}")
        if match["replicas"] is not None:
            if "replicas" in seen:
                raise ValueError(f"instance {text.strip()!r}: replicas given twice")
            values["replicas"] = _parse_int(match["replicas"], f"instance {text.strip()!r}: *N")
        devices = None if match["devices"] is None else parse_devices(match["devices"])
        return cls(role, values["tp"], values["pp"], values["replicas"], devices)


@dataclass(frozen=True, slots=True)
class Placement:
    """The instances of one deployment. Build with :meth:`parse` or from ``InstanceSpec``s."""

    instances: tuple[InstanceSpec, ...]

    def __post_init__(self) -> None:
        instances = tuple(self.instances)
        object.__setattr__(self, "instances", instances)
        if not instances:
            raise ValueError("a placement needs at least one instance")
        if any(not isinstance(i, InstanceSpec) for i in instances):
            raise ValueError("placement instances must be InstanceSpec values")
        roles = {i.role for i in instances}
        if "colocated" in roles and roles != {"colocated"}:
            raise ValueError("a placement is either all colocated or prefill + decode, "
                             f"not a mix: {self.format()}")
        if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
            missing = ({"prefill", "decode"} - roles).pop()
            raise ValueError(f"a disaggregated placement needs a {missing} instance: "
                             f"{self.format()}")
        explicit = [d for i in instances if i.devices is not None for d in i.devices]
        if len(set(explicit)) != len(explicit):
            dup = sorted({d for d in explicit if explicit.count(d) > 1})
            raise ValueError(f"placement uses device(s) {dup} more than once: {self.format()}")

    # --- text form -----------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Placement:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty placement text")
        parts = [p for p in (s.strip() for s in text.split(";")) if p]
        return cls(tuple(InstanceSpec.parse(p) for p in parts))

    def format(self, with_devices: bool = True) -> str:
        return ";".join(i.format(with_devices) for i in self.instances)

    def __str__(self) -> str:
        return self.format()

    # --- queries -------------------------------------------------------------------------
    @property
    def disaggregated(self) -> bool:
        return self.instances[0].role != "colocated"

    @property
    def num_devices(self) -> int:
        return sum(i.num_devices for i in self.instances)

    def of_role(self, role: str) -> list[InstanceSpec]:
        return [i for i in self.instances if i.role == role]

    def assigned(self) -> Placement:
        """The same placement with every device id filled in (in order, skipping explicit)."""
        used = {d for i in self.instances if i.devices is not None for d in i.devices}
        nxt = 0
        out = []
        for inst in self.instances:
            if inst.devices is None:
                devs = []
                while len(devs) < inst.num_devices:
                    if nxt not in used:
                        devs.append(nxt)
                    nxt += 1
                inst = replace(inst, devices=tuple(devs))
            out.append(inst)
        return Placement(tuple(out))

    def expanded(self) -> list[InstanceSpec]:
        """One spec per running instance (replicas split), devices assigned."""
        return [one for inst in self.assigned().instances for one in inst.split()]

    # --- validation ----------------------------------------------------------------------
    def validate_for(self, model: ModelSpec, device_memory_bytes: int, *,
                     num_devices: int | None = None, dtype: str = "float16",
                     min_kv_tokens: int | None = None,
                     memory_utilization: float = 0.9) -> None:
        """Raise ``ValueError`` unless every instance can run ``model``.

        Checks: attention heads divisible by ``tp`` and layers by ``pp``; device ids below
        ``num_devices`` (when given) and no more devices than that; and per device, the
        weight shard plus the KV of ``min_kv_tokens`` tokens (default: one sequence of the
        model's full length) fit in ``memory_utilization`` of ``device_memory_bytes``.
        """
        if dtype not in _DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPE_BYTES)}, got {dtype!r}")
        if device_memory_bytes <= 0:
            raise ValueError("device_memory_bytes must be positive")
        if not 0 < memory_utilization <= 1:
            raise ValueError("memory_utilization must be in (0, 1]")
        min_kv = model.max_position_embeddings if min_kv_tokens is None else min_kv_tokens
        if num_devices is not None:
            if self.num_devices > num_devices:
                raise ValueError(f"placement {self.format()} needs {self.num_devices} devices, "
                                 f"only {num_devices} available")
            for inst in self.assigned().instances:
                bad = [d for d in inst.devices if d >= num_devices]
                if bad:
                    raise ValueError(f"{inst.format()}: device ids {bad} out of range "
                                     f"0..{num_devices - 1}")
        budget = device_memory_bytes * memory_utilization
        for inst in self.instances:
            if model.num_heads % inst.tp:
                raise ValueError(f"{inst.format(False)}: {model.name} has {model.num_heads} "
                                 f"attention heads, not divisible by tp={inst.tp}")
            if model.num_layers % inst.pp:
                raise ValueError(f"{inst.format(False)}: {model.name} has {model.num_layers} "
                                 f"layers, not divisible by pp={inst.pp}")
            shards = inst.tp * inst.pp
            weights = model.weight_bytes(dtype) / shards
            kv = min_kv * model.kv_bytes_per_token(dtype) / shards
            if weights + kv > budget:
                raise ValueError(
                    f"{inst.format(False)}: {model.name} needs {weights / 1e9:.1f} GB of "
                    f"weights + {kv / 1e9:.2f} GB of KV ({min_kv} tokens) per device, more "
                    f"than {memory_utilization:.0%} of {device_memory_bytes / 2**30:.0f} GiB")


def map_to_visible_devices(instances: Sequence[InstanceSpec], num_visible: int, *,
                           share: bool = False) -> list[InstanceSpec]:
    """The running instances (replicas split) with their device ids mapped onto the
    ``num_visible`` GPUs of this machine: taken modulo ``num_visible`` with ``share`` (several
    instances on fewer GPUs, e.g. a prefill and a decode worker on one), else kept as they
    are (each must be below ``num_visible``).

    Raises ``ValueError`` when two ranks of one instance would land on one GPU: NCCL rejects
    that ("Duplicate GPU detected"), and one GPU would hold two shards of the same weights.
    Instances of their own may share a GPU; ranks of one instance may not.
    """
    if num_visible < 1:
        raise ValueError("no visible GPU to map the placement onto")
    out = []
    for spec in instances:
        for inst in spec.split():
            if inst.devices is None:
                raise ValueError(f"{inst.format()}: devices are not assigned; map "
                                 "Placement.expanded() instances")
            if share:
                mapped = tuple(d % num_visible for d in inst.devices)
            else:
                bad = [d for d in inst.devices if d >= num_visible]
                if bad:
                    raise ValueError(f"{inst.format()}: device ids {bad} out of range, "
                                     f"{num_visible} GPU(s) visible")
                mapped = inst.devices
            seen: dict[int, int] = {}
            for rank, d in enumerate(mapped):
                if d in seen:
                    raise ValueError(
                        f"{inst.format()}: ranks {seen[d]} and {rank} of one instance both "
                        f"map to GPU {d} ({num_visible} visible"
                        f"{', ids taken modulo that' if share else ''}); NCCL rejects two "
                        "ranks of one instance on one GPU (\"Duplicate GPU detected\"). Give "
                        f"the instance {len(mapped)} distinct GPUs or use a smaller tp x pp")
                seen[d] = rank
            out.append(replace(inst, devices=mapped))
    return out


def node_of(device: int, gpus_per_node: int) -> int:
    """The node of a global device id on a cluster of ``gpus_per_node`` GPUs per node."""
    return device // gpus_per_node


def layer_nodes(inst: InstanceSpec, replica: int, num_layers: int,
                gpus_per_node: int) -> list[set[int]]:
    """For each layer, the nodes holding it in one replica (one node unless TP spans nodes)."""
    per_stage = num_layers // inst.pp
    return [{node_of(d, gpus_per_node) for d in inst.stage_devices(replica, layer // per_stage)}
            for layer in range(num_layers)]
