"""chengtan9907/OpenSTL MIM (``openstl/modules/mim_modules.py``): ``MIMBlock(in_channel,
num_hidden, height, width, filter_size, stride, layer_norm)`` with
``forward(x, diff_h, h, c, m) -> (h, c, m)``, and ``MIMN`` (same constructor) with
``forward(x, h_t, c_t) -> (h, c)``. None states (and ``diff_h``) mean zeros like ``x``.

Kept as OpenSTL has them:

- ``MIMBlock.convlstm_c``, the cell state of the block's stationarity module, is an attribute
  carried from one call to the next (across sequences and batches too): each call reads it,
  detached, and writes the new one back, with its autograd history, as OpenSTL does.
  (A stored state of batch 1 broadcasts against a larger batch in OpenSTL's arithmetic; the
  drop-in expands it likewise. Any other batch change fails in OpenSTL, and the drop-in
  raises a ValueError naming the state.)
- ``MIMN.conv_last`` is built and never called; it stays in the module and its checkpoints.
- The per-pixel peepholes ``ct_weight`` (2C, H, W) and ``oc_weight`` (C, H, W) are the
  cells' own parameters, before the convolutions in ``state_dict``.

OpenSTL's MIM model (``MIM_Model``) also holds an ST-LSTM (its layer 0), which is OpenSTL's
``SpatioTemporalLSTMCell``: :mod:`fastcells.patching.thuml` converts it.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ..cells import MIMBlock, MIMNCell
from .dropin import (
    DropIn,
    Family,
    Skip,
    expect_channels,
    odd_square_kernel,
    plain_leaf,
    randn,
    required_attrs,
    same_bias,
)

_PEEPHOLES = ("ct_weight", "oc_weight")


class _OpenSTLMIM(DropIn):
    """What the two drop-ins share: the adopted per-pixel peepholes, OpenSTL's names."""

    def __init__(self, *args, peepholes: dict[str, nn.Parameter], **kwargs):
        super().__init__(*args, **kwargs)
        # the original's own Parameter objects, in its registration order (state_dict order)
        for name in _PEEPHOLES:
            del self._parameters[name]
        for name, p in peepholes.items():
            self.register_parameter(name, p)

    @classmethod
    def adopt_mim(cls, original: nn.Module, modules: dict[str, nn.Module], backend: str,
                  memory_efficient: bool, **cell_kwargs):
        peepholes = {n: p for n, p in original._parameters.items() if n in _PEEPHOLES}
        # DropIn.adopt refuses a module with parameters of its own (the drop-in would not
        # carry them); these two it does carry, so they are out of its sight meanwhile.
        with _without_parameters(original, _PEEPHOLES):
            return cls.adopt(original, modules, backend, memory_efficient,
                             peepholes=peepholes, **cell_kwargs)

    def _params(self) -> dict[str, Tensor]:
        return dict(self.named_parameters())  # OpenSTL's names are the cells' own

    def _zeros(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)  # OpenSTL's _init_state


@contextlib.contextmanager
def _without_parameters(module: nn.Module, names):
    saved = dict(module._parameters)
    for name in names:
        module._parameters.pop(name, None)
    try:
        yield
    finally:
        module._parameters.clear()
        module._parameters.update(saved)  # the same dict, in its order


class OpenSTLMIMBlock(_OpenSTLMIM, MIMBlock):
    """Drop-in for OpenSTL's MIMBlock: ``forward(x, diff_h, h, c, m) -> (h, c, m)`` with the
    stationarity state in the attribute ``convlstm_c``."""

    family = "chengtan9907/OpenSTL MIMBlock"

    def forward(self, x, diff_h, h, c, m):
        """x (B, C, H, W); diff_h, h, c, m (B, C, H, W) or None (zeros like x). Returns
        ``(h, c, m)``; ``self.convlstm_c`` becomes the new stationarity cell state."""
        self.check_input(x)
        carried = self.convlstm_c
        if carried is None:
            n = self._zeros(x)
        else:
            n = carried.detach()  # OpenSTL: self.convlstm_c.detach()
            if n.dim() == 4 and n.shape[0] == 1 and x.shape[0] > 1:
                n = n.expand(x.shape[0], *n.shape[1:])  # OpenSTL's arithmetic broadcasts it
        state = tuple(self._zeros(x) if t is None else t for t in (h, c, m))
        h, c, m, self.convlstm_c = MIMBlock.forward(self, x, diff_h, (*state, n))
        return h, c, m


class OpenSTLMIMN(_OpenSTLMIM, MIMNCell):
    """Drop-in for OpenSTL's MIMN: ``forward(x, h_t, c_t) -> (h, c)``; ``x`` None drops the
    input terms; its ``conv_last`` is kept, unused."""

    family = "chengtan9907/OpenSTL MIMN"

    def forward(self, x, h_t, c_t):
        """x (B, C, H, W) or None; h_t, c_t (B, C, H, W) or None (zeros like x).
        Returns ``(h, c)``."""
        if x is None and (h_t is None or c_t is None):
            raise ValueError("x: OpenSTL's MIMN makes its missing states as zeros like x, so "
                             "x=None needs both h_t and c_t")
        if x is not None:
            self.check_input(x)
        h_t = self._zeros(x) if h_t is None else h_t
        c_t = self._zeros(x) if c_t is None else c_t
        return MIMNCell.forward(self, x, (h_t, c_t))


# -- structure ----------------------------------------------------------------------------------
_BLOCK_CONVS = {"conv_t_cc": 3, "conv_s_cc": 4, "conv_x_cc": 4, "conv_h_concat": 4,
                "conv_x_concat": 4}
_MIMN_CONVS = {"conv_h_concat": 4, "conv_x_concat": 4}


def _check_peepholes(module: nn.Module, C: int):
    """(H, W) of the per-pixel peepholes, after checking them."""
    own = list(module._parameters)
    if own != list(_PEEPHOLES):
        raise Skip(f"its own parameters are {own}, expected {list(_PEEPHOLES)}")
    ct, oc = module.ct_weight, module.oc_weight
    if ct.dim() != 3 or oc.dim() != 3 or ct.shape[0] != 2 * C or oc.shape[0] != C \
            or ct.shape[1:] != oc.shape[1:]:
        raise Skip(f"ct_weight {tuple(ct.shape)} and oc_weight {tuple(oc.shape)} are not "
                   f"(2C, H, W) and (C, H, W) with C = num_hidden = {C}")
    return tuple(ct.shape[1:])


def _check_convs(module: nn.Module, convs: dict[str, int], C: int, spatial, inputs: dict):
    """Checks each conv block (an nn.Sequential of a Conv2d and an optional LayerNorm over
    (channels, H, W)); returns (kernel, layer_norm, bias)."""
    kernels, norms, conv_modules = set(), [], {}
    for name, gates in convs.items():
        seq = getattr(module, name)
        if type(seq) is not nn.Sequential or len(seq) not in (1, 2):
            raise Skip(f"{name} is not an nn.Sequential of a Conv2d and an optional LayerNorm")
        conv = seq[0]
        kernels.add(odd_square_kernel(conv, f"{name}[0]"))
        expect_channels(conv, f"{name}[0]", inputs.get(name, C), gates * C)
        conv_modules[f"{name}[0]"] = conv
        norm = seq[1] if len(seq) == 2 else None
        norms.append(norm)
        if norm is None:
            continue
        if type(norm) is not nn.LayerNorm:
            raise Skip(f"{name}[1] is {type(norm).__name__}, not nn.LayerNorm")
        plain_leaf(norm, f"{name}[1]")
        if tuple(norm.normalized_shape) != (gates * C, *spatial):
            raise Skip(f"{name}[1] normalizes {tuple(norm.normalized_shape)}, not "
                       f"{(gates * C, *spatial)} (channels and the peepholes' H, W)")
        if not norm.elementwise_affine or norm.bias is None or norm.eps != 1e-5:
            raise Skip(f"{name}[1] is a LayerNorm without affine weight and bias or with eps "
                       f"{norm.eps} (fastcells: affine, eps 1e-5)")
    if len(kernels) != 1:
        raise Skip(f"{', '.join(convs)} have different kernels {sorted(kernels)}")
    if any(n is None for n in norms) and any(n is not None for n in norms):
        raise Skip(f"LayerNorm after some of {', '.join(convs)} but not all")
    return kernels.pop(), norms[0] is not None, conv_modules


def _common(module: nn.Module):
    required_attrs(module, ("num_hidden", *_PEEPHOLES))
    C = int(module.num_hidden)
    if float(getattr(module, "_forget_bias", 1.0)) != 1.0:
        raise Skip(f"_forget_bias is {module._forget_bias}; MIM's forget bias is 1.0")
    return C, _check_peepholes(module, C)


def _in_channels(seq, default: int) -> int:
    """in_channels of a conv block's Conv2d (``default`` when it is not one: the structural
    check then says what it is)."""
    first = seq[0] if isinstance(seq, nn.Sequential) and len(seq) else None
    return int(getattr(first, "in_channels", default))


def convert_block(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, (*_BLOCK_CONVS, "conv_last", "convlstm_c"))
    C, spatial = _common(module)
    if _in_channels(module.conv_t_cc, C) != C:
        # OpenSTL builds conv_t_cc, which it applies to h, for in_channel inputs
        raise Skip(f"conv_t_cc reads {_in_channels(module.conv_t_cc, C)} channels but is "
                   f"applied to h (num_hidden = {C}): OpenSTL's MIMBlock only runs with "
                   f"in_channel == num_hidden")
    cin = _in_channels(module.conv_x_cc, C)
    k, layer_norm, convs = _check_convs(module, _BLOCK_CONVS, C, spatial, {"conv_x_cc": cin})
    last = module.conv_last
    if odd_square_kernel(last, "conv_last") != 1:
        raise Skip("conv_last is not a 1x1 convolution")
    expect_channels(last, "conv_last", 2 * C, C)
    bias = same_bias(convs | {"conv_last": last})
    return OpenSTLMIMBlock.adopt_mim(
        module, {name: getattr(module, name) for name in (*_BLOCK_CONVS, "conv_last")},
        backend, memory_efficient, input_size=cin, hidden_size=C, kernel_size=k,
        spatial_size=spatial, bias=bias, layer_norm=layer_norm)


def convert_mimn(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, _MIMN_CONVS)
    C, spatial = _common(module)
    if _in_channels(module.conv_h_concat, C) != C:
        # OpenSTL builds conv_h_concat, which it applies to h, for in_channel inputs
        raise Skip(f"conv_h_concat reads {_in_channels(module.conv_h_concat, C)} channels "
                   f"but is applied to h (num_hidden = {C}): OpenSTL's MIMN only runs "
                   f"over steps with in_channel == num_hidden")
    cin = _in_channels(module.conv_x_concat, C)
    k, layer_norm, convs = _check_convs(module, _MIMN_CONVS, C, spatial,
                                        {"conv_x_concat": cin})
    # conv_last is never called: whatever it is, it is carried as it is (checkpoints keep it)
    has_last = "conv_last" in module._modules
    names = [*_MIMN_CONVS] + (["conv_last"] if has_last else [])
    return OpenSTLMIMN.adopt_mim(
        module, {name: getattr(module, name) for name in names}, backend, memory_efficient,
        input_size=cin, hidden_size=C, kernel_size=k, spatial_size=spatial,
        bias=same_bias(convs), layer_norm=layer_norm, unused_conv_last=has_last)


# -- probes ----------------------------------------------------------------------------------
def _frame(module: nn.Module, gen: torch.Generator, channels: int) -> Tensor:
    # the frame size is the peepholes'; batch 1 keeps the float64 probe cheap
    return randn(gen, 1, channels, *module.ct_weight.shape[1:])


def run_block(module: nn.Module, gen: torch.Generator) -> list:
    """Two calls: from random states without convlstm_c, then from None states (zeros) and
    the convlstm_c the first call left (a forward that ignores or resets it differs there;
    the first must not start from zeros, which would leave convlstm_c zero)."""
    C = int(module.num_hidden)
    module.convlstm_c = None  # the probe's copy: the real module's state is untouched
    outputs = list(module(*(_frame(module, gen, C) for _ in range(5))))
    outputs.append(module.convlstm_c)
    outputs += module(_frame(module, gen, C), None, None, None, None)
    return [*outputs, module.convlstm_c]


def run_mimn(module: nn.Module, gen: torch.Generator) -> list:
    """From zero states, then without input (``x`` None, as OpenSTL allows)."""
    cin = module.conv_x_concat[0].in_channels
    h, c = module(_frame(module, gen, cin), None, None)
    return [h, c, *module(None, h, c)]


BLOCK = Family("chengtan9907/OpenSTL MIMBlock", "MIMBlock",
               ("num_hidden", "convlstm_c", *_PEEPHOLES, "conv_t_cc", "conv_s_cc", "conv_x_cc",
                "conv_h_concat", "conv_x_concat"), convert_block, run_block)
MIMN = Family("chengtan9907/OpenSTL MIMN", "MIMN",
              ("num_hidden", *_PEEPHOLES, "conv_h_concat", "conv_x_concat"), convert_mimn,
              run_mimn)
