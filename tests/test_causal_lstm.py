"""PredRNN++ (CELLS.md section 6): the reference cells against a re-creation of OpenSTL's
``CausalLSTMCell`` / ``GHU`` / ``PredRNNpp_Model``, and the gradient highway unit's backend
matrix (the causal LSTM cell is in tests/helpers.py's CELL_CONFIGS, so the shared matrices
of test_cells, test_compile and test_cuda_backend cover it). The GHU has its own state
convention (``forward(x, z) -> z``, a tensor, with input_size == hidden_size), hence its
twin of test_cells' matrix here."""
import pytest
import torch

import fastcells as fc
import fastcells.models as M
from fastcells import _ext

from .conftest import requires_cpp, requires_triton
from .helpers import RTOL, assert_close, randomize
from .public import openstl

C = 4
GHU_CONFIGS = {"ghu": {}, "ghu_bias_ln": dict(bias=True, layer_norm=True, kernel_size=5)}
VARIANTS = {
    "cpp": ("cpp", {}),
    "cpp_memeff": ("cpp", {"memory_efficient": True}),
    "reference_memeff": ("reference", {"memory_efficient": True}),
    "triton": ("triton", {}),
    "triton_memeff": ("triton", {"memory_efficient": True}),
}


# ============================================================================ OpenSTL equivalence
def _openstl_pair(layer_norm, dtype=torch.float64, cin=3, size=(7, 6)):
    pub = openstl.CausalLSTMCell(cin, C, *size, 3, 1, layer_norm).to(dtype)
    randomize(pub)
    ours = fc.CausalLSTMCell(cin, C, 3, layer_norm=layer_norm, spatial_size=size,
                             unused_conv_o=True, backend="reference").to(dtype)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in pub.state_dict().items()]
    ours.load_state_dict(pub.state_dict())
    return pub, ours


@pytest.mark.parametrize("layer_norm", [False, True])
def test_reference_cell_equals_openstl(layer_norm):
    """Several steps, zigzag-free (the state fed back), outputs and every gradient."""
    pub, ours = _openstl_pair(layer_norm)
    xs = [torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    init = [torch.randn(2, C, 7, 6, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    outs = []
    for cell, call in ((pub, lambda x, s: pub(x, *s)), (ours, lambda x, s: ours(x, s))):
        state, produced = tuple(init), []
        for x in xs:
            state = call(x, state)
            produced.extend(state)
        weights = [torch.ones_like(o) * (i + 1) for i, o in enumerate(produced)]
        grads = torch.autograd.grad(produced, [*xs, *init, *cell.parameters()], weights,
                                    allow_unused=True)
        outs.append((produced, grads))
    (po, pg), (oo, og) = outs
    for a, e in zip(oo, po):
        assert_close(a, e, RTOL[torch.float64])
    for a, e in zip(og, pg):
        assert (a is None) == (e is None)  # conv_o: built, never called, no gradient
        if e is not None:
            assert_close(a, e, RTOL[torch.float64])


def test_reference_ghu_equals_openstl():
    pub = openstl.GHU(C, C, 7, 6, 3, 1, False).double()
    ours = fc.GradientHighwayUnit(C, C, 3, backend="reference").double()
    assert list(ours.state_dict()) == list(pub.state_dict())  # z_concat first, as OpenSTL
    ours.load_state_dict(pub.state_dict())
    x, z = (torch.randn(2, C, 7, 6, dtype=torch.float64) for _ in range(2))
    assert_close(ours(x), pub(x, None), RTOL[torch.float64])
    assert_close(ours(x, z), pub(x, z), RTOL[torch.float64])


def test_openstl_ghu_layer_norm_crashes_ours_normalizes_2c():
    """OpenSTL's GHU(layer_norm=True) normalizes C channels of a 2C output: it cannot run.
    Ours normalizes the (2C, H, W) output of each convolution."""
    pub = openstl.GHU(C, C, 5, 5, 3, 1, True)
    with pytest.raises(RuntimeError):
        pub(torch.randn(1, C, 5, 5), None)
    ours = fc.GradientHighwayUnit(C, C, layer_norm=True, spatial_size=5, backend="reference")
    assert ours.x_concat[1].normalized_shape == (2 * C, 5, 5)
    assert ours(torch.randn(1, C, 5, 5)).shape == (1, C, 5, 5)


def test_ghu_argument_errors():
    with pytest.raises(ValueError, match="input_size must equal hidden_size"):
        fc.GradientHighwayUnit(3, 4)
    with pytest.raises(ValueError, match="spatial_size"):
        fc.GradientHighwayUnit(4, 4, layer_norm=True)
    with pytest.raises(ValueError, match="kernel_size"):
        fc.GradientHighwayUnit(4, 4, kernel_size=4)
    cell = fc.GradientHighwayUnit(4, 4, backend="reference")
    with pytest.raises(ValueError, match="z"):
        cell(torch.randn(1, 4, 5, 5), torch.randn(1, 3, 5, 5))
    with pytest.raises(TypeError, match="z"):
        cell(torch.randn(1, 4, 5, 5), (torch.randn(1, 4, 5, 5),))
    with pytest.raises(ValueError, match="spatial_size"):
        fc.CausalLSTMCell(3, 4, layer_norm=True)


def test_unused_conv_o_is_built_and_never_called():
    cell = fc.CausalLSTMCell(3, 4, 3, unused_conv_o=True)
    assert cell.conv_o[0].weight.shape == (4, 8, 3, 3)
    assert "conv_o.0.weight" not in fc.CausalLSTMCell(3, 4).state_dict()
    h, _, _ = cell(torch.randn(1, 3, 5, 5))
    h.sum().backward()
    assert cell.conv_o[0].weight.grad is None and cell.conv_x[0].weight.grad is not None


# ============================================================================ zoo model
def _openstl_model(patch, pre, aft, hidden=(4, 5, 5)):
    cfg = openstl.configs((pre + aft, 1, 8, 12), patch, 3, pre, aft)
    pub = openstl.PredRNNpp_Model(len(hidden), list(hidden), cfg).double()
    randomize(pub)
    return pub


def test_predrnn_pp_equals_openstl_model():
    """fastcells.models' predrnn_pp (reference backend) gives OpenSTL's rollout: scheduled
    sampling mask, patches, GHU between layers 1 and 2, zigzag memory. (OpenSTL's model
    takes one width per layer; the zoo's one width for all, so the re-creation uses 5, 5.)"""
    pre, aft, p = 3, 3, 2
    pub = _openstl_model(p, pre, aft, hidden=(5, 5, 5))
    ours = M.create("predrnn_pp", frame_channels=1, hidden_size=5, num_layers=3, kernel_size=3,
                    patch_size=p, unused_conv_o=True, input_len=pre, pred_len=aft,
                    backend="reference").double()
    mapping = {"gradient_highway": "gradient_highway", "cell_list": "cells", "conv_last": "head"}
    state = {}
    for k, v in pub.state_dict().items():
        head, rest = k.split(".", 1)
        state[f"{mapping[head]}.{rest}"] = v
    ours.load_state_dict(state)
    frames = torch.rand(2, pre + aft, 1, 8, 12, dtype=torch.float64)
    mask = (torch.rand(2, aft - 1) < 0.5).double()
    patched = openstl.reshape_patch(frames.permute(0, 1, 3, 4, 2), p)
    mask_pub = mask[:, :, None, None, None].expand(2, aft - 1, *patched.shape[2:])
    expected = openstl.reshape_patch_back(pub(patched, mask_pub), p).permute(0, 1, 4, 2, 3)
    full = torch.cat([torch.ones(2, pre - 1, dtype=torch.float64), mask], 1)
    got = ours.forward_train(frames, full).predictions
    assert_close(got, expected, RTOL[torch.float64])


def test_predrnn_pp_ghu_init_and_layers():
    model = M.create("predrnn_pp", frame_channels=1, hidden_size=4, num_layers=2,
                     backend="reference")
    w = model.gradient_highway.x_concat[0].weight
    assert w.abs().max() <= 0.001
    with pytest.raises(ValueError, match="num_layers"):
        M.create("predrnn_pp", frame_channels=1, num_layers=1)


# ============================================================================ GHU matrix
def _ghu_cells(config, variants, dtype=torch.float32, spatial=(9, 11)):
    kwargs = dict(GHU_CONFIGS[config])
    if kwargs.get("layer_norm"):
        kwargs["spatial_size"] = spatial
    cells = [fc.GradientHighwayUnit(C, C, backend=b, **kwargs, **extra).to(dtype)
             for b, extra in variants]
    randomize(cells[0])
    for c in cells[1:]:
        c.load_state_dict(cells[0].state_dict())
    return cells


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def _ghu_run(cell, xs, z0):
    out, z = [], z0
    for x in xs:
        z = cell(x, z)
        out.append(z)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("config", list(GHU_CONFIGS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("b,h,w", [(2, 9, 11), (1, 7, 5), (2, 1, 6)])
def test_ghu_matches_reference(variant, config, layout, b, h, w):
    backend, extra = VARIANTS[variant]
    if backend == "cpp" and not _ext.cpp_available():
        pytest.skip("C++ extension not built")
    if backend == "triton" and not (_ext.triton_available() and _ext.triton_interpreted()):
        pytest.skip("triton not installed, or not in interpreter mode (FASTCELLS_GPU_TESTS=1)")
    ref, other = _ghu_cells(config, [("reference", {}), (backend, extra)], spatial=(h, w))
    xs = [_layout(torch.randn(b, C, h, w), layout).requires_grad_() for _ in range(3)]
    z0 = _layout(torch.randn(b, C, h, w), layout).requires_grad_()
    out_ref, out_other = _ghu_run(ref, xs, z0), _ghu_run(other, xs, z0)
    for i, (a, e) in enumerate(zip(out_other, out_ref)):
        assert_close(a, e, RTOL[torch.float32], f"output {i}")
    weights = [torch.randn_like(o) for o in out_ref]
    g_ref = torch.autograd.grad(out_ref, [*xs, z0, *ref.parameters()], weights)
    g_other = torch.autograd.grad(out_other, [*xs, z0, *other.parameters()], weights)
    for i, (a, e) in enumerate(zip(g_other, g_ref)):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")


@requires_cpp
@pytest.mark.parametrize("config", list(GHU_CONFIGS))
def test_ghu_float64_and_zero_start(config):
    """float64 to rounding, starting from z=None (zeros) as OpenSTL's first step does."""
    ref, cpp, eff = _ghu_cells(config, [("reference", {}), ("cpp", {}),
                                        ("cpp", {"memory_efficient": True})], torch.float64)
    xs = [torch.randn(2, C, 9, 11, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    results = []
    for cell in (ref, cpp, eff):
        out = _ghu_run(cell, xs, None)
        grads = torch.autograd.grad(out, [*xs, *cell.parameters()],
                                    [torch.ones_like(o) * (i + 1) for i, o in enumerate(out)])
        results.append((out, grads))
    for out, grads in results[1:]:
        for a, e in zip([*out, *grads], [*results[0][0], *results[0][1]]):
            assert_close(a, e, RTOL[torch.float64])


@requires_cpp
def test_ghu_memory_efficient_gradcheck():
    (cell,) = _ghu_cells("ghu", [("cpp", {"memory_efficient": True})], torch.float64)
    x = torch.randn(1, C, 4, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(1, C, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, z: cell(x, z), (x, z))


@requires_cpp
def test_ghu_state_dict_is_backend_independent():
    ref, cpp = _ghu_cells("ghu_bias_ln", [("reference", {}), ("cpp", {})])
    assert [(k, v.shape) for k, v in cpp.state_dict().items()] == \
        [(k, v.shape) for k, v in ref.state_dict().items()]
    fresh = _ghu_cells("ghu_bias_ln", [("reference", {})])[0]
    fresh.load_state_dict(cpp.state_dict())
    x = torch.randn(2, C, 9, 11)
    assert_close(fresh(x), cpp(x), RTOL[torch.float32])


@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=requires_cpp),
                                     pytest.param("triton", marks=requires_triton)])
@pytest.mark.parametrize("memory_efficient", [False, True], ids=["default", "memeff"])
def test_ghu_fullgraph_aot_eager(memory_efficient, backend):
    torch._dynamo.reset()
    ref, cell = _ghu_cells("ghu", [("reference", {}),
                                   (backend, {"memory_efficient": memory_efficient})])
    x = torch.randn(2, C, 9, 11, requires_grad=True)
    z = torch.randn(2, C, 9, 11)
    out_c = torch.compile(cell, fullgraph=True, backend="aot_eager")(x, z)
    out_r = ref(x, z)
    assert_close(out_c, out_r, RTOL[torch.float32])
    for a, e in zip(torch.autograd.grad(out_c.sum(), [x, *cell.parameters()]),
                    torch.autograd.grad(out_r.sum(), [x, *ref.parameters()])):
        assert_close(a, e, RTOL[torch.float32])
