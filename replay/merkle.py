"""Merkle trees as RFC 6962 section 2.1 (restated in RFC 9162 section 2.1) defines them.

    leaf hash  SHA-256(0x00 || d)             d = one leaf's data
    node hash  SHA-256(0x01 || left || right)
    MTH({})    SHA-256("")
    MTH(D[n])  node(MTH(D[0:k]), MTH(D[k:n])) with k the largest power of two below n

For the ledger a leaf's data is the 32 raw bytes of a record's chain hash, leaf i being
position i + 1, so a tree of size n covers positions 1..n. An inclusion proof (audit path)
of leaf m lists the sibling subtree hashes from the leaf up; ``verify_inclusion`` is the
RFC 9162 section 2.1.3.2 algorithm. ``Tree`` keeps every level as one bytes blob (32 bytes
per node), so a million leaves take about 64 MB.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()
HASH_BYTES = 32


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def root_of(leaves: Iterable[bytes]) -> tuple[bytes, int]:
    """(MTH, size) of the leaves' data, streamed with O(log n) memory."""
    stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes strictly decreasing powers of two
    size = 0
    for data in leaves:
        node, width = _sha256(b"\x00" + data).digest(), 1
        while stack and stack[-1][0] == width:
            node, width = _sha256(b"\x01" + stack.pop()[1] + node).digest(), width * 2
        stack.append((width, node))
        size += 1
    if not stack:
        return EMPTY_ROOT, 0
    root = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        root = node_hash(left, root)
    return root, size


class Tree:
    """Every level of the tree over ``leaves`` (their data), for the root and inclusion proofs."""

    def __init__(self, leaves: Iterable[bytes]) -> None:
        level = b"".join(_sha256(b"\x00" + d).digest() for d in leaves)
        self.size = len(level) // HASH_BYTES
        self.levels = [level]
        while len(level) > HASH_BYTES:
            count = len(level) // HASH_BYTES
            parents = bytearray()
            for i in range(0, count - 1, 2):
                parents += _sha256(b"\x01" + level[i * HASH_BYTES:(i + 2) * HASH_BYTES]).digest()
            if count % 2:
                parents += level[-HASH_BYTES:]  # an odd last node is carried up unchanged (RFC 6962's split)
            level = bytes(parents)
            self.levels.append(level)

    @property
    def root(self) -> bytes:
        return self.levels[-1] if self.size else EMPTY_ROOT

    def proof(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index`` (0-based), from the leaf up."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is not in a tree of {self.size}")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling * HASH_BYTES < len(level):
                path.append(level[sibling * HASH_BYTES:(sibling + 1) * HASH_BYTES])
            index //= 2
        return path


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """Whether ``path`` proves the leaf hash ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root``."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
