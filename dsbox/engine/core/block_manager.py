"""Paged KV cache block manager: plain Python, no torch.

Owns the free list of a KV pool of ``num_blocks`` blocks of ``block_size`` token slots and
the block table of every sequence that holds blocks. Callers ask by sequence id; the block
ids they get back index the pool tensors of the workers.
"""

from __future__ import annotations


class BlockManager:
    """Allocate, grow and free the block tables of sequences."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # a stack: pop from the end
        self._tables: dict[int, list[int]] = {}

    # --- queries -------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.block_size)

    def has(self, seq_id: int) -> bool:
        return seq_id in self._tables

    def block_table(self, seq_id: int) -> list[int]:
        return self._tables[seq_id]

    def num_slots(self, seq_id: int) -> int:
        return len(self._tables.get(seq_id, ())) * self.block_size

    def held_by(self) -> dict[int, int]:
        """Blocks held per sequence id (for invariants and the dashboard)."""
        return {sid: len(t) for sid, t in self._tables.items()}

    # --- allocation ----------------------------------------------------------------------
    def extra_blocks(self, seq_id: int, num_tokens: int) -> int:
        """Blocks to add so ``seq_id`` can hold ``num_tokens`` tokens (0 if it already can)."""
        return max(0, self.blocks_for(num_tokens) - len(self._tables.get(seq_id, ())))

    def can_reserve(self, seq_id: int, num_tokens: int, keep_free: int = 0) -> bool:
        return self.extra_blocks(seq_id, num_tokens) + keep_free <= len(self._free)

    def reserve(self, seq_id: int, num_tokens: int) -> list[int]:
        """Grow (or create) ``seq_id``'s table to hold ``num_tokens``; returns the table."""
        need = self.extra_blocks(seq_id, num_tokens)
        if need > len(self._free):
            raise MemoryError(
                f"KV cache out of blocks: sequence {seq_id} needs {need}, "
                f"{len(self._free)} free of {self.num_blocks}")
        table = self._tables.setdefault(seq_id, [])
        if need:
            taken = self._free[-need:]
            del self._free[-need:]
            table.extend(reversed(taken))
        return table

    def grow(self, seq_ids) -> None:
        """Add one block to the table of each of ``seq_ids`` (each already holds one):
        what ``reserve`` does for a sequence whose next token starts a new block."""
        free, tables = self._free, self._tables
        if len(seq_ids) > len(free):
            raise MemoryError(f"KV cache out of blocks: {len(seq_ids)} needed, "
                              f"{len(free)} free of {self.num_blocks}")
        for seq_id in seq_ids:
            tables[seq_id].append(free.pop())

    def free(self, seq_id: int) -> int:
        """Return all blocks of ``seq_id`` to the pool; returns how many (0 if none held)."""
        table = self._tables.pop(seq_id, None)
        if not table:
            return 0
        self._free.extend(table)
        return len(table)

    def slot(self, seq_id: int, position: int) -> int:
        """Flat slot index (block_id * block_size + offset) of a token position."""
        table = self._tables[seq_id]
        return table[position // self.block_size] * self.block_size + position % self.block_size
