"""Exact, device-independent accounting of what autograd keeps for backward.

``saved_tensors_hooks`` sees every tensor saved for backward (by ATen ops, custom ops and
autograd Functions alike). Counting unique storages gives the bytes the graph holds
between forward and backward, whatever the device or allocator.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


class SavedTensorCounter(torch.autograd.graph.saved_tensors_hooks):
    """Context manager recording the unique storages saved for backward inside it.

    Storages of ``exclude`` (typically ``model.parameters()``) are not counted.
    ``counter.bytes`` is the total size of the unique storages seen.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}
        self.tensors: list[torch.Tensor] = []  # keep them alive so pointers stay unique
        super().__init__(self._pack, self._unpack)

    def __enter__(self) -> "SavedTensorCounter":
        super().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        # The hooks are bound methods of self (a reference cycle), so without this the saved
        # tensors would live until Python's cyclic collector ran: gigabytes at large sizes.
        self.tensors.clear()

    def _pack(self, t: torch.Tensor):
        # Detached: a saved *output* packed as itself would reference its own grad_fn from
        # the node that saves it, a cycle through C++ that no collector frees (the whole
        # graph leaked). Autograd restores the autograd metadata when it unpacks.
        t = t.detach()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.excluded and ptr != 0:
            self.storages.setdefault(ptr, storage.nbytes())
            self.tensors.append(t)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the unique storages autograd saves while running ``fn()``."""
    counter = SavedTensorCounter(exclude)
    with counter:
        out = fn()
    del out
    return counter.bytes
