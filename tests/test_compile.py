"""torch.compile(fullgraph=True) traces the fused cells through the torch.library ops."""
import pytest
import torch

import fastcells as fc

from .conftest import requires_cpp, requires_triton
from .helpers import RTOL, assert_close, make_cells


@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=requires_cpp),
                                     pytest.param("triton", marks=requires_triton)])
@pytest.mark.parametrize("memory_efficient", [False, True], ids=["default", "memeff"])
@pytest.mark.parametrize("config", ["convlstm_peephole", "stlstm", "mklstm", "convttlstm",
                                    "causal_lstm"])
def test_fullgraph_aot_eager(config, memory_efficient, backend):
    """Dynamo captures the whole step, forward and backward, without a graph break. (In
    interpreter mode the Triton ops are opaque custom ops; on a GPU they are triton_ops
    that the compiler traces into: benchmarks/gpu_suite.py checks that case.)"""
    torch._dynamo.reset()
    ref, cpp = make_cells(config, [("reference", {}),
                                   (backend, {"memory_efficient": memory_efficient})])
    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    compiled = torch.compile(cpp, fullgraph=True, backend="aot_eager")
    out_c = compiled(x)[0]
    out_r = ref(x)[0]
    assert_close(out_c, out_r, RTOL[torch.float32])
    # allow_unused: the causal cell's conv_o (OpenSTL's, never called) has no gradient
    g_c = torch.autograd.grad(out_c.sum(), [x, *cpp.parameters()], allow_unused=True)
    g_r = torch.autograd.grad(out_r.sum(), [x, *ref.parameters()], allow_unused=True)
    for a, e in zip(g_c, g_r):
        assert (a is None) == (e is None)
        if e is not None:
            assert_close(a, e, RTOL[torch.float32])


@requires_cpp
def test_inductor_compiles_a_sequence_layer():
    torch._dynamo.reset()
    layer = fc.ConvLSTM(3, 4, num_layers=2, backend="cpp")
    ref = fc.ConvLSTM(3, 4, num_layers=2, backend="reference")
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(1, 3, 3, 8, 8)
    out = torch.compile(layer, fullgraph=True)(x)[0]
    assert_close(out, ref(x)[0], RTOL[torch.float32])
