"""The saved-tensor counter is exact; the fused backends keep less than the reference.

The memory *targets* (ratios) are measured in benchmarks/; here only the accounting and
the direction are checked."""
import pytest
import torch

import fastcells as fc
from fastcells.utils import SavedTensorCounter, saved_tensor_bytes

from .conftest import requires_cpp


def test_counter_counts_unique_storages_and_excludes_parameters():
    w = torch.nn.Parameter(torch.randn(8))
    x = torch.randn(8, requires_grad=True)
    # mul saves x and w; sin saves its input y; the parameter w is excluded
    n = saved_tensor_bytes(lambda: torch.sin(x * w), exclude=[w])
    assert n == 2 * 8 * 4  # x and y = x * w
    # sin saves x, cos saves the view x[2:] (same storage: counted once), exp its result
    n = saved_tensor_bytes(lambda: x.sin().sum() + x[2:].cos().sum() + x[:3].exp().sum())
    assert n == 8 * 4 + 3 * 4


@requires_cpp
@pytest.mark.parametrize("layer", [
    lambda **kw: fc.ConvLSTM(8, 8, num_layers=2, **kw),
    lambda **kw: fc.SpatioTemporalLSTM(8, 8, num_layers=2, **kw),
    lambda **kw: fc.MKLSTM(8, 8, num_layers=2, **kw),
    lambda **kw: fc.ConvTTLSTM(8, 8, num_layers=2, **kw),
], ids=["convlstm", "stlstm", "mklstm", "convttlstm"])
def test_fused_saves_less(layer):
    x = torch.randn(2, 4, 8, 12, 12)
    counts = {}
    for name, kw in [("reference", {"backend": "reference"}), ("cpp", {"backend": "cpp"}),
                     ("memeff", {"backend": "cpp", "memory_efficient": True})]:
        m = layer(**kw)
        counts[name] = saved_tensor_bytes(lambda: m(x), exclude=m.parameters())
    assert counts["memeff"] < counts["cpp"] < counts["reference"]


def test_counter_releases_the_saved_tensors_on_exit():
    """Counting keeps nothing alive after the graph is gone: not through the counter (its
    hooks are bound methods, a Python cycle) and not through a saved *output* (sigmoid
    saves its result; packed as itself it would reference its own grad_fn, a cycle through
    C++ that no collector breaks)."""
    import gc
    import weakref

    x = torch.randn(16, requires_grad=True)
    gc.disable()
    try:
        with SavedTensorCounter() as counter:
            y = x * 2
            z = y.sin()  # saves its input y
            s = torch.sigmoid(x)  # saves its output s
        refs = [weakref.ref(y), weakref.ref(s)]
        del y, z, s
        assert all(r() is None for r in refs)
        assert counter.bytes == 2 * 16 * 4
    finally:
        gc.enable()
