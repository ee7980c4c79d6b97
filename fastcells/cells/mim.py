"""MIM, memory in memory (Wang et al. 2019), CELLS.md section 7: OpenSTL's ``MIMN`` and
``MIMBlock`` (chengtan9907/OpenSTL ``openstl/modules/mim_modules.py``).

Quirks of the public code kept here (a patched model must give its outputs):

- ``ct_weight`` (2C, H, W) and ``oc_weight`` (C, H, W) are *spatial* peepholes: one weight per
  channel and pixel, so the cells are built for one frame size (``spatial_size`` is required)
  and initialised to zeros, as OpenSTL does.
- In ``MIMBlock`` the inner stationarity module (OpenSTL's ``MIMS`` method) reads the block's
  previous *cell* state ``c_{t-1}`` as its hidden state, and ``diff_h`` as its input.
- OpenSTL keeps that module's own cell state in the attribute ``convlstm_c``, carried across
  calls (even across batches) and detached before each use. Here it is the explicit fourth
  state ``n``: the cell neither stores nor detaches it; the model decides
  (:class:`fastcells.models.mim.MIM` detaches it between steps, as OpenSTL does). The
  drop-in of :mod:`fastcells.patch` keeps the attribute as the original does.
- ``diff_h=None`` means zeros, which still pass through ``conv_x_concat`` (and its
  LayerNorm, whose bias then shows), as OpenSTL's ``_init_state`` does.
- ``MIMN`` builds a ``conv_last`` it never calls (``unused_conv_last=True`` keeps it, for
  OpenSTL's checkpoints and parameter counts).
- OpenSTL declares ``conv_t_cc`` (applied to h) with ``in_channel`` inputs, ``conv_x_cc``
  (applied to x) and ``MIMN.conv_h_concat`` (applied to h) with the other channel count; the
  code only runs when they are equal, as in its model. Here each convolution takes the
  channels of what it is applied to, which gives OpenSTL's shapes in that case.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_nonempty, check_tensor
from ._conv import conv
from .base import CellBase
from .convlstm import _check_odd


class _MIMBase(CellBase):
    """Convolutions (each an ``nn.Sequential`` with an optional LayerNorm, OpenSTL's names),
    the per-pixel peepholes and the spatial-size checks shared by the two MIM cells."""

    kind = "mim"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size, hidden_size, kernel_size, spatial_size, bias, layer_norm,
                 backend, memory_efficient):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        _check_odd(kernel_size)
        if spatial_size is None:
            raise ValueError(
                f"spatial_size: {type(self).__name__} has per-pixel peepholes (ct_weight "
                f"(2C, H, W), oc_weight (C, H, W)), so spatial_size=(H, W) (or H for a square "
                f"frame) is required")
        if isinstance(spatial_size, int):
            spatial_size = (spatial_size, spatial_size)
        if (not isinstance(spatial_size, (tuple, list)) or len(spatial_size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                           for s in spatial_size)):
            raise ValueError(f"spatial_size: expected an int >= 1 or a pair (H, W) of them, "
                             f"got {spatial_size!r}")
        self.spatial_size = tuple(spatial_size)
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.layer_norm = bool(layer_norm)
        self._bias = bool(bias)
        C = hidden_size
        # OpenSTL's order of registration (state_dict order): the peepholes first.
        self.ct_weight = nn.Parameter(torch.zeros(2 * C, *self.spatial_size))
        self.oc_weight = nn.Parameter(torch.zeros(C, *self.spatial_size))

    def _block(self, cin: int, cout: int) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, self.kernel_size, padding=self.padding, bias=self._bias)
        if self.layer_norm:
            return nn.Sequential(conv, nn.LayerNorm([cout, *self.spatial_size]))
        return nn.Sequential(conv)

    def _conv(self, backend: str, p: dict, name: str, x: Tensor) -> Tensor:
        z = conv(backend, x, p[f"{name}.0.weight"], p.get(f"{name}.0.bias"), self.padding)
        if self.layer_norm:
            z = F.layer_norm(z, z.shape[1:], p[f"{name}.1.weight"], p[f"{name}.1.bias"])
        return z

    def _check_frame(self, t: Tensor, name: str, channels: int) -> None:
        if isinstance(t, Tensor) and t.dim() == 4 and tuple(t.shape[2:]) != self.spatial_size:
            raise ValueError(
                f"{name}: spatial size {tuple(t.shape[2:])} differs from the cell's "
                f"spatial_size {self.spatial_size} (its per-pixel peepholes ct_weight and "
                f"oc_weight are built for that frame size); expected shape "
                f"(B, {channels}, {self.spatial_size[0]}, {self.spatial_size[1]})")
        check_tensor(t, name, self._frame(channels), self._any_param())
        check_nonempty(t, name, self._frame(channels))

    def check_input(self, x: Tensor, name: str = "x") -> None:
        self._check_frame(x, name, self.input_size)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}, "
                f"spatial_size={self.spatial_size}"
                + (", bias=True" if self._bias else "")
                + (", layer_norm=True" if self.layer_norm else ""))


class MIMNCell(_MIMBase):
    r"""MIM's stationarity module, as OpenSTL's ``MIMN``: a ConvLSTM with per-pixel
    peepholes and forget bias 1 (CELLS.md section 7).

    .. math::
        i = \sigma(i_h + i_x + ct_i \odot c_{t-1}),\quad
        f = \sigma(f_h + f_x + ct_f \odot c_{t-1} + 1),\quad g = \tanh(g_h + g_x)\\
        c_t = f \odot c_{t-1} + i \odot g,\quad
        h_t = \sigma(o_h + o_x + oc \odot c_t) \odot \tanh(c_t)

    with ``conv_h_concat(h)`` giving ``i_h, g_h, f_h, o_h`` and ``conv_x_concat(x)`` giving
    ``i_x, g_x, f_x, o_x`` (gate order i, g, f, o).

    Args:
        input_size: channels of ``x`` (Cin).
        hidden_size: channels of ``h`` and ``c`` (C).
        kernel_size: odd kernel size of both convolutions ("same" padding).
        spatial_size: ``(H, W)`` (or ``H``), required: the peepholes are per pixel.
        bias: biases on the convolutions (OpenSTL has none).
        layer_norm: LayerNorm over (4C, H, W) after each convolution.
        unused_conv_last: also build OpenSTL's ``conv_last`` (C, 2C, 1, 1), which its
            forward never calls (kept so its checkpoints load and its parameter count holds).
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.

    Shapes:
        - x: (B, Cin, H, W), or None: no input terms (OpenSTL's ``x == None``); ``state``
          is then required
        - state: ``(h, c)``, each (B, C, H, W); None means zeros
        - returns the new ``(h, c)``

    Parameters (OpenSTL's names): ``ct_weight`` (2C, H, W) and ``oc_weight`` (C, H, W)
    (zeros at construction), ``conv_h_concat.0`` (4C, C, k, k), ``conv_x_concat.0``
    (4C, Cin, k, k), their LayerNorms ``conv_*.1``, and ``conv_last`` when
    ``unused_conv_last``.
    """

    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 spatial_size=None, bias: bool = False, layer_norm: bool = False,
                 unused_conv_last: bool = False, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, kernel_size, spatial_size, bias, layer_norm,
                         backend, memory_efficient)
        C = hidden_size
        self.conv_h_concat = self._block(C, 4 * C)
        self.conv_x_concat = self._block(input_size, 4 * C)
        self.conv_last = (nn.Conv2d(2 * C, C, 1, bias=bias) if unused_conv_last else None)

    def forward(self, x: Tensor | None, state=None):
        if x is None:
            if state is None:
                raise ValueError("state: x=None (no input terms) needs the state (h, c) to "
                                 "know the batch size; got state=None")
            if not isinstance(state, (tuple, list)) or not state:
                raise ValueError(f"state: expected a tuple (h, c) of tensors each of shape "
                                 f"{self._frame(self.hidden_size)}, got "
                                 f"{type(state).__name__}")
            self._check_frame(state[0], "state[0] (h)", self.hidden_size)
            return self._run(None, self.check_state(state, state[0]))
        self.check_input(x)
        return self._run(x, self._resolve_state(x, state))

    def check_state(self, state, x: Tensor) -> tuple:
        if isinstance(state, (tuple, list)):
            for i, t in enumerate(state):
                self._check_frame(t, f"state[{i}] ({self.state_names[i]})"
                                  if i < len(self.state_names) else f"state[{i}]",
                                  self.hidden_size)
        return super().check_state(state, x)

    def _step(self, backend, p, x, zx, h, c):
        z_x = None
        if x is not None:
            z_x = zx if zx is not None else self._conv(backend, p, "conv_x_concat", x)
        return self._gates(backend).mims(self._conv(backend, p, "conv_h_concat", h), z_x, c,
                                         p["ct_weight"], p["oc_weight"])

    def extra_repr(self) -> str:
        return super().extra_repr() + (", unused_conv_last=True" if self.conv_last is not None
                                       else "")


class MIMBlock(_MIMBase):
    r"""MIM's memory-in-memory block, as OpenSTL's ``MIMBlock`` (CELLS.md section 7).

    .. math::
        m_t = \sigma(f_x + f_s + 1) \odot m + \sigma(i_x + i_s) \odot \tanh(g_x + g_s)\\
        (n_h, n_t) = \mathrm{MIMS}(\mathit{diff\_h}, c_{t-1}, n_{t-1})\\
        c_t = n_h + \sigma(i_x + i_t) \odot \tanh(g_x + g_t)\\
        h_t = \sigma(o_x + o_t + o_s) \odot \tanh(\mathrm{conv\_last}([c_t; m_t]))

    ``conv_x_cc(x)`` gives ``i_x, g_x, f_x, o_x``, ``conv_t_cc(h)`` gives ``i_t, g_t, o_t``,
    ``conv_s_cc(m)`` gives ``i_s, g_s, f_s, o_s``. MIMS is the stationarity module of
    :class:`MIMNCell` with ``conv_h_concat`` applied to ``c_{t-1}`` (sic) and
    ``conv_x_concat`` to ``diff_h``, and its own cell state ``n`` (OpenSTL's ``convlstm_c``;
    see the module docstring for how OpenSTL carries and detaches it).

    Args:
        input_size: channels of ``x`` (Cin; OpenSTL's model has Cin = C).
        hidden_size: channels of ``h``, ``c``, ``m``, ``n`` and ``diff_h`` (C).
        kernel_size, spatial_size, bias, layer_norm, backend, memory_efficient: as
            :class:`MIMNCell` (``spatial_size`` required).

    Shapes:
        - x: (B, Cin, H, W)
        - diff_h: (B, C, H, W), the hidden output of the MIMN below; None means zeros
        - state: ``(h, c, m, n)``, each (B, C, H, W), where ``m`` is the *incoming*
          spatiotemporal memory (the zigzag flow, as in PredRNN); None means zeros
        - returns the new ``(h, c, m, n)``

    Parameters (OpenSTL's names and order): ``ct_weight`` (2C, H, W), ``oc_weight``
    (C, H, W), ``conv_t_cc.0`` (3C, C, k, k), ``conv_s_cc.0`` (4C, C, k, k),
    ``conv_x_cc.0`` (4C, Cin, k, k), ``conv_h_concat.0`` (4C, C, k, k), ``conv_x_concat.0``
    (4C, C, k, k), ``conv_last`` (C, 2C, 1, 1); ``conv_*.1`` are the LayerNorms.
    """

    state_names = ("h", "c", "m", "n")

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 spatial_size=None, bias: bool = False, layer_norm: bool = False,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, kernel_size, spatial_size, bias, layer_norm,
                         backend, memory_efficient)
        C = hidden_size
        self.conv_t_cc = self._block(C, 3 * C)
        self.conv_s_cc = self._block(C, 4 * C)
        self.conv_x_cc = self._block(input_size, 4 * C)
        self.conv_h_concat = self._block(C, 4 * C)
        self.conv_x_concat = self._block(C, 4 * C)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=bias)

    def check_state(self, state, x: Tensor) -> tuple:
        if isinstance(state, (tuple, list)):
            for i, t in enumerate(state[:len(self.state_names)]):
                self._check_frame(t, f"state[{i}] ({self.state_names[i]})", self.hidden_size)
        return super().check_state(state, x)

    def forward(self, x: Tensor, diff_h: Tensor | None = None, state=None):
        self.check_input(x)
        state = self._resolve_state(x, state)
        if diff_h is None:
            b, _, h, w = x.shape
            diff_h = torch.zeros((b, self.hidden_size, h, w), dtype=x.dtype, device=x.device)
        else:
            self._check_frame(diff_h, "diff_h", self.hidden_size)
            if diff_h.shape[0] != x.shape[0]:
                raise ValueError(f"diff_h: batch {diff_h.shape[0]} differs from x's "
                                 f"{x.shape[0]}")
        # diff_h travels with the state so that the memory-efficient mode saves it as an
        # input (and gives it a gradient); _step unpacks it.
        return self._run(x, (diff_h, *state))

    def _step(self, backend, p, x, zx, diff_h, h, c, m, n):
        gates = self._gates(backend)
        C = self.hidden_size
        if zx is None:
            zx = self._conv(backend, p, "conv_x_cc", x)
        zt = self._conv(backend, p, "conv_t_cc", h)
        zs = self._conv(backend, p, "conv_s_cc", m)
        # the stationarity module: hidden state c_{t-1}, input diff_h, cell state n
        n_h, n = gates.mims(self._conv(backend, p, "conv_h_concat", c),
                            self._conv(backend, p, "conv_x_concat", diff_h), n,
                            p["ct_weight"], p["oc_weight"])
        c, m, cm, o_partial = gates.mim_block(zx, zt, zs, m, n_h)
        zl = conv(backend, cm, p["conv_last.weight"], p.get("conv_last.bias"))
        h = gates.output(o_partial, zs[:, 3 * C:], zl)
        return h, c, m, n
