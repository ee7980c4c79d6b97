"""Shared test helpers: tolerances, comparisons, cell factories."""
from __future__ import annotations

import torch

import fastcells as fc

# CELLS.md: float32 on CPU within 1e-5 relative error of the reference; float64 is exact
# up to rounding. Relative error is ||a - b|| / ||b|| over the whole tensor (as in fla's
# assert_close), so saturated elements with tiny values cannot dominate.
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}

CELL_CONFIGS = {
    "convlstm": (fc.ConvLSTMCell, {}),
    "convlstm_peephole": (fc.ConvLSTMCell, dict(peephole=True, forget_bias=1.0, kernel_size=5)),
    "stlstm": (fc.SpatioTemporalLSTMCell, {}),
    # forget bias 0: MS-RNN's PredRNN cells
    "stlstm_bias_ln": (fc.SpatioTemporalLSTMCell, dict(bias=True, layer_norm=True,
                                                       forget_bias=0.0)),
    "mklstm": (fc.MKLSTMCell, {}),
    "mklstm_1_3": (fc.MKLSTMCell, dict(kernel_sizes=(1, 3))),
    "convttlstm": (fc.ConvTTLSTMCell, {}),
    "convttlstm_lags": (fc.ConvTTLSTMCell, dict(order=2, steps=4, rank=3, kernel_size=3)),
    # OpenSTL's layout (its never-called conv_o: no gradient on any backend)
    "causal_lstm": (fc.CausalLSTMCell, dict(unused_conv_o=True)),
    "causal_lstm_bias_ln": (fc.CausalLSTMCell, dict(bias=True, layer_norm=True, forget_bias=0.0,
                                                    kernel_size=5)),
    # the no-LayerNorm path is the same gate code; tests/test_patch_families.py runs it
    "split_convlstm_bias_ln": (fc.SplitConvLSTMCell, dict(bias=True, layer_norm=True,
                                                          forget_bias=1.0)),
}


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    denom = expected.norm().item()
    diff = (actual - expected).norm().item()
    return diff / denom if denom > 0 else diff


def assert_close(actual, expected, rtol: float, name: str = "") -> None:
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (unwritten output?)"
    err = rel_error(actual, expected)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.1e}"


def make_cells(name: str, variants, cin: int = 3, hidden: int = 5, spatial=(9, 11),
               dtype=torch.float32):
    """One cell per ``(backend, extra_kwargs)`` variant, all with the same random weights."""
    cls, kwargs = CELL_CONFIGS[name]
    if kwargs.get("layer_norm"):
        kwargs = dict(kwargs, spatial_size=spatial)
    cells = [cls(cin, hidden, backend=b, **kwargs, **extra).to(dtype) for b, extra in variants]
    randomize(cells[0])
    for c in cells[1:]:
        c.load_state_dict(cells[0].state_dict())
    return cells


def randomize(module: torch.nn.Module) -> None:
    """Fresh random values for every parameter, including those that start constant
    (peepholes at 0, LayerNorm at 1 / 0). Convolution weights get a fan-in scaling like
    PyTorch's default init (unit-variance pre-activations), so float32 rounding is not
    amplified by saturated, ill-conditioned gates."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.5)


def flat_outputs(out):
    """The tensors of an op's output, in order (deltas tuples flattened, None dropped)."""
    if isinstance(out, torch.Tensor):
        return [out]
    flat = []
    for o in out:
        flat.extend(flat_outputs(o) if isinstance(o, (tuple, list))
                    else ([o] if o is not None else []))
    return flat


def assert_lookalikes_reported(items) -> None:
    """``patch`` leaves every ``(module, reason)`` look-alike in place and names it, with a
    line containing ``reason``, in one PatchWarning."""
    import pytest
    from torch import nn

    from fastcells.patching import PatchWarning

    model = nn.ModuleList(m for m, _ in items)
    with pytest.warns(PatchWarning) as record:
        assert fc.patch(model) == []
    message = str(record[0].message)
    for i, ((module, reason), kept) in enumerate(zip(items, model)):
        assert kept is module
        line = next(line for line in message.splitlines() if line.strip().startswith(f"{i} ("))
        assert reason in line, line
    assert len(record) == 1
