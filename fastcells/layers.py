"""Multi-layer sequence modules in the style of ``nn.LSTM``.

``forward(x, state=None) -> (output, last_states)`` with ``x`` of shape (B, T, Cin, H, W)
(``batch_first=True``, the default) or (T, B, Cin, H, W); ``output`` holds the top layer's
hidden state at every step, same layout; ``last_states`` is a list with one state tuple per
layer, which can be passed back as ``state`` to continue the sequence.

``batch_input_projection``: on the fused backends the first layer's input convolution can
run once over all T frames instead of T times (the whole input sequence is known up front).
``None`` (default) decides by device: on for CUDA; off on CPU, where oneDNN measured slower
on one (B*T)-frame convolution than on T small ones (benchmarks/NOTES.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_int, check_nonempty, check_tensor
from .cells import (CausalLSTMCell, ConvLSTMCell, ConvTTLSTMCell, GradientHighwayUnit, MIMBlock,
                    MIMNCell, MKLSTMCell, SpatioTemporalLSTMCell)
from .cells.convttlstm import RingHistory


class _StackedCells(nn.Module):
    cell_class: type = None

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 batch_first: bool = True, backend: str = "auto",
                 memory_efficient: bool = False, batch_input_projection: bool | None = None,
                 **cell_kwargs):
        super().__init__()
        self.batch_input_projection = batch_input_projection
        num_layers = check_int("num_layers", num_layers)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.batch_first = num_layers, batch_first
        self.cells = nn.ModuleList(
            self.cell_class(input_size if i == 0 else hidden_size, hidden_size, backend=backend,
                            memory_efficient=memory_efficient, **cell_kwargs)
            for i in range(num_layers))

    @property
    def backend(self) -> str:
        """The backend the cells resolve to for the current parameters."""
        return self.cells[0].backend

    def forward(self, x: Tensor, state=None):
        first = self.cells[0]
        layout = ("B", "T") if self.batch_first else ("T", "B")
        check_tensor(x, "x", (*layout, *first._frame(self.input_size)[1:]), first._any_param())
        if not self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[1] < 1:
            raise ValueError("x: the sequence is empty (T = 0)")
        check_nonempty(x, "x", (*layout, *first._frame(self.input_size)[1:]))
        frame0 = x[:, 0]
        if state is None:
            states = [None] * self.num_layers
        elif isinstance(state, (list, tuple)) and len(state) == self.num_layers:
            states = list(state)
        else:
            raise ValueError(f"state: expected a list of {self.num_layers} per-layer state tuples "
                             f"(as returned in last_states), got {type(state).__name__}")
        # state shapes depend on the frame's batch and spatial size, not on its channels
        states = [self._internal_state(self._resolve_layer_state(i, frame0, s))
                  for i, s in enumerate(states)]

        # unbind, not x[:, t]: the backward of T selects would zero-fill and accumulate a
        # full (B, T, ...) gradient per step (O(T^2) traffic); unbind stacks them once.
        frames = x.unbind(1)
        zx = [None] * len(frames)
        if self._batches_projection(frame0):
            zx = _unbind_frames(first.input_projection(x))
        outputs = []
        for t, inp in enumerate(frames):
            for i, cell in enumerate(self.cells):
                new = cell._run(inp, self._incoming(states, i), zx[t] if i == 0 else None)
                inp, states[i] = self._after_layer(i, states[i], new)
            outputs.append(inp)
        output = torch.stack(outputs, dim=1)
        states = [self._public_state(s) for s in states]
        return (output if self.batch_first else output.transpose(0, 1)), states

    def _batches_projection(self, frame: Tensor) -> bool:
        first = self.cells[0]
        if first._backend_for(frame) == "reference" or first.memory_efficient:
            return False  # the reference stays a plain loop; memeff recomputes per step
        if self.batch_input_projection is None:
            return frame.device.type == "cuda"
        return self.batch_input_projection

    def _incoming(self, states: list, i: int) -> tuple:
        """The state layer ``i`` starts the step from (ST-LSTM overrides it for zigzag m)."""
        return states[i]

    def _resolve_layer_state(self, i: int, frame: Tensor, state) -> tuple:
        """Layer ``i``'s given state checked, or zeros (PredRNN++ adds its highway's z)."""
        return self.cells[i]._resolve_state(frame, state)

    def _after_layer(self, i: int, old: tuple, new: tuple) -> tuple:
        """(input of the next layer, state kept for layer ``i``) after its step."""
        return new[0], new

    # How a layer's state is kept during the sequence, and handed back (Conv-TT-LSTM keeps
    # its history in a ring buffer).
    def _internal_state(self, state: tuple) -> tuple:
        return state

    def _public_state(self, state: tuple) -> tuple:
        return state

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, batch_first={self.batch_first}"


def _unbind_frames(zx):
    """Per-step views of an input projection (a tensor, or a tuple of them for MK-LSTM)."""
    if isinstance(zx, tuple):
        return list(zip(*(z.unbind(1) for z in zx)))
    return zx.unbind(1)


class ConvLSTM(_StackedCells):
    """Stacked :class:`ConvLSTMCell` layers over a sequence.

    ``ConvLSTM(input_size, hidden_size, kernel_size=3, num_layers=1, batch_first=True,
    bias=True, backend="auto", memory_efficient=False, batch_input_projection=None,
    forget_bias=0.0, peephole=False, fused_conv=False)``; ``fused_conv=True`` (with
    ``backend="triton"``) runs each step's convolution and gates as one Triton kernel,
    adding the batched input projection of the first layer in its epilogue.
    State per layer: ``(h, c)``.
    """

    cell_class = ConvLSTMCell

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 num_layers: int = 1, batch_first: bool = True, bias: bool = True,
                 backend: str = "auto", memory_efficient: bool = False,
                 batch_input_projection: bool | None = None, **cell_kwargs):
        super().__init__(input_size, hidden_size, num_layers, batch_first, backend,
                         memory_efficient, batch_input_projection, kernel_size=kernel_size,
                         bias=bias, **cell_kwargs)


class SpatioTemporalLSTM(_StackedCells):
    """Stacked :class:`SpatioTemporalLSTMCell` layers with PredRNN's zigzag memory flow.

    At each step the spatiotemporal memory ``m`` rises through the layers; the bottom layer
    receives the top layer's ``m`` from the previous step. State per layer ``(h, c, m)``
    holds the ``m`` that layer produced; only the top layer's ``m`` is read back when a
    state is passed in.
    """

    cell_class = SpatioTemporalLSTMCell

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 num_layers: int = 1, batch_first: bool = True, bias: bool = False,
                 layer_norm: bool = False, spatial_size=None, backend: str = "auto",
                 memory_efficient: bool = False, batch_input_projection: bool | None = None):
        super().__init__(input_size, hidden_size, num_layers, batch_first, backend,
                         memory_efficient, batch_input_projection, kernel_size=kernel_size,
                         bias=bias, layer_norm=layer_norm, spatial_size=spatial_size)

    def _incoming(self, states: list, i: int) -> tuple:
        h, c, _ = states[i]
        return h, c, states[i - 1][2]  # i = 0 reads the top layer's m (index -1)


class MKLSTM(_StackedCells):
    """Stacked :class:`MKLSTMCell` layers (MS-LSTM's TMS-LSTM stack). State per layer
    ``(h, c1, c2)``."""

    cell_class = MKLSTMCell

    def __init__(self, input_size: int, hidden_size: int, kernel_sizes=(3, 5),
                 num_layers: int = 1, batch_first: bool = True, backend: str = "auto",
                 memory_efficient: bool = False, batch_input_projection: bool | None = None):
        super().__init__(input_size, hidden_size, num_layers, batch_first, backend,
                         memory_efficient, batch_input_projection, kernel_sizes=kernel_sizes)


class ConvTTLSTM(_StackedCells):
    """Stacked :class:`ConvTTLSTMCell` layers. State per layer ``(h, c, history)``.

    During the sequence each layer's history is a :class:`RingHistory` (a step overwrites
    the oldest slot and advances the head; the kernels read the slots where they are);
    ``last_states`` hands it back as the tuple oldest first.
    """

    cell_class = ConvTTLSTMCell

    def __init__(self, input_size: int, hidden_size: int, order: int = 3, steps: int = 3,
                 rank: int = 8, kernel_size: int = 5, num_layers: int = 1,
                 batch_first: bool = True, backend: str = "auto",
                 memory_efficient: bool = False, batch_input_projection: bool | None = None):
        super().__init__(input_size, hidden_size, num_layers, batch_first, backend,
                         memory_efficient, batch_input_projection, order=order, steps=steps,
                         rank=rank, kernel_size=kernel_size)

    def _internal_state(self, state: tuple) -> tuple:
        h, c, history = state
        # A fresh ring (its own list of slots): the caller's state is never modified.
        ring = history.as_tuple() if isinstance(history, RingHistory) else history
        return h, c, RingHistory(ring)

    def _public_state(self, state: tuple) -> tuple:
        h, c, ring = state
        return h, c, ring.as_tuple()


class CausalLSTM(_StackedCells):
    """Stacked :class:`CausalLSTMCell` layers (PredRNN++): PredRNN's zigzag memory and the
    gradient highway unit between the first and second layers.

    ``CausalLSTM(input_size, hidden_size, kernel_size=3, num_layers=1, batch_first=True,
    bias=False, layer_norm=False, spatial_size=None, highway=None, backend="auto",
    memory_efficient=False, batch_input_projection=None)``. ``highway`` (default: on when
    ``num_layers >= 2``, as in PredRNN++) puts a :class:`GradientHighwayUnit` on the first
    layer's output: the second layer reads its ``z``. State per layer ``(h, c, m)`` (the
    ``m`` that layer produced; the bottom layer reads the top layer's); with the highway, the
    first layer's state is ``(h, c, m, z)``.
    """

    cell_class = CausalLSTMCell

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 num_layers: int = 1, batch_first: bool = True, bias: bool = False,
                 layer_norm: bool = False, spatial_size=None, highway: bool | None = None,
                 backend: str = "auto", memory_efficient: bool = False,
                 batch_input_projection: bool | None = None):
        super().__init__(input_size, hidden_size, num_layers, batch_first, backend,
                         memory_efficient, batch_input_projection, kernel_size=kernel_size,
                         bias=bias, layer_norm=layer_norm, spatial_size=spatial_size)
        if highway is None:
            highway = self.num_layers >= 2
        if highway and self.num_layers < 2:
            raise ValueError(f"highway=True: the gradient highway sits between the first and "
                             f"second layers, so num_layers must be >= 2, got {num_layers}")
        self.highway = (GradientHighwayUnit(hidden_size, hidden_size, kernel_size, bias=bias,
                                            layer_norm=layer_norm, spatial_size=spatial_size,
                                            backend=backend, memory_efficient=memory_efficient)
                        if highway else None)

    def _resolve_layer_state(self, i: int, frame: Tensor, state) -> tuple:
        if i != 0 or self.highway is None:
            return super()._resolve_layer_state(i, frame, state)
        if state is None:
            hcm = self.cells[0]._resolve_state(frame, None)
            return (*hcm, torch.zeros_like(hcm[0]))
        if not isinstance(state, (tuple, list)) or len(state) != 4:
            raise ValueError("state: with the highway, the first layer's state is (h, c, m, z), "
                             f"got {type(state).__name__} of length "
                             f"{len(state) if isinstance(state, (tuple, list)) else '?'}")
        hcm = self.cells[0]._resolve_state(frame, tuple(state[:3]))
        check_tensor(state[3], "state[0][3] (z)", tuple(hcm[0].shape), hcm[0])
        return (*hcm, state[3])

    def _incoming(self, states: list, i: int) -> tuple:
        h, c = states[i][:2]
        return h, c, states[i - 1][2]  # i = 0 reads the top layer's m (index -1)

    def _after_layer(self, i: int, old: tuple, new: tuple) -> tuple:
        if i != 0 or self.highway is None:
            return new[0], new
        z = self.highway(new[0], old[3])
        return z, (*new, z)


class MIM(nn.Module):
    """MIM (Memory In Memory) layers over a sequence: an ST-LSTM first layer, then
    :class:`MIMBlock` layers, each fed by a :class:`MIMNCell` "diff" module that models the
    change of the layer below's hidden state; PredRNN's zigzag memory ``m`` (OpenSTL's
    ``MIM_Model``, without its frame embedding and head).

    ``MIM(input_size, hidden_size, spatial_size, kernel_size=3, num_layers=2,
    batch_first=True, bias=False, layer_norm=False, backend="auto", memory_efficient=False)``;
    ``spatial_size`` (H, W) is required: the MIM cells have per-pixel peepholes.

    ``forward(x, state=None) -> (output, state)`` with ``x`` (B, T, Cin, H, W) (or (T, B, ...)
    with ``batch_first=False``) and ``output`` the top layer's ``h`` at every step. ``state``
    is ``(layers, m, diffs)``: ``layers[0] = (h, c)``, ``layers[i] = (h, c, n)`` for the
    blocks (``n`` the stationarity module's cell state, OpenSTL's ``convlstm_c``), ``m`` the
    top layer's memory, ``diffs`` the diff modules' ``(h, c)`` or None before the first step
    (as in OpenSTL, the diff modules first run at the second step). Like OpenSTL, ``n`` is
    detached before each use.
    """

    def __init__(self, input_size: int, hidden_size: int, spatial_size, kernel_size: int = 3,
                 num_layers: int = 2, batch_first: bool = True, bias: bool = False,
                 layer_norm: bool = False, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__()
        num_layers = check_int("num_layers", num_layers)
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2 (an ST-LSTM and at least one MIM "
                             f"block), got {num_layers}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.batch_first = num_layers, batch_first
        opts = dict(kernel_size=kernel_size, bias=bias, layer_norm=layer_norm, backend=backend,
                    memory_efficient=memory_efficient)
        first = SpatioTemporalLSTMCell(input_size, hidden_size,
                                       spatial_size=spatial_size if layer_norm else None, **opts)
        self.cells = nn.ModuleList(
            [first] + [MIMBlock(hidden_size, hidden_size, spatial_size=spatial_size, **opts)
                       for _ in range(num_layers - 1)])
        self.diffs = nn.ModuleList(MIMNCell(hidden_size, hidden_size, spatial_size=spatial_size,
                                            **opts) for _ in range(num_layers - 1))

    @property
    def backend(self) -> str:
        """The backend the cells resolve to for the current parameters."""
        return self.cells[1].backend

    def forward(self, x: Tensor, state=None):
        block = self.cells[1]
        layout = ("B", "T") if self.batch_first else ("T", "B")
        expected = (*layout, self.input_size, *block.spatial_size)
        check_tensor(x, "x", expected, block._any_param())
        if not self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[1] < 1:
            raise ValueError("x: the sequence is empty (T = 0)")
        check_nonempty(x, "x", expected)
        if state is None:
            b = x.shape[0]
            zero = x.new_zeros(b, self.hidden_size, *block.spatial_size)
            state = ([(zero, zero)] + [(zero, zero, zero)] * (self.num_layers - 1), zero, None)
        outputs = []
        for frame in x.unbind(1):
            out, state = self.step(frame, state)
            outputs.append(out)
        output = torch.stack(outputs, dim=1)
        return (output if self.batch_first else output.transpose(0, 1)), state

    def step(self, x: Tensor, state) -> tuple:
        """One step of every layer: ``x`` (B, Cin, H, W), ``state`` as in ``forward`` (not
        None). Returns ``(h of the top layer, new state)``."""
        return mim_step(self.cells, self.diffs, x, state)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, batch_first={self.batch_first}"


def mim_step(cells, diffs_modules, x: Tensor, state) -> tuple:
    """One step of MIM's stack (OpenSTL ``MIM_Model``'s loop body), shared by :class:`MIM` and
    the zoo's ``mim``: ``cells`` = [ST-LSTM, MIMBlock, ...], ``diffs_modules`` the MIMN
    cells, ``state = (layers, m, diffs)`` as in :class:`MIM`. Returns ``(top h, state)``."""
    layers, m, diffs = state
    h_prev0, c0 = layers[0]
    h0, c0, m = cells[0](x, (h_prev0, c0, m))
    new_layers, new_diffs = [(h0, c0)], []
    below = h0
    for i, (cell, (h, c, n)) in enumerate(zip(cells[1:], layers[1:])):
        diff_h = None  # the first step: no change to model yet (zeros)
        if diffs is not None:
            # the diff module of block i reads the change of layer 0's h (i = 0) or the
            # output of the diff module below, just updated
            source = h0 - h_prev0 if i == 0 else new_diffs[i - 1][0]
            new_diffs.append(diffs_modules[i](source, diffs[i]))
            diff_h = new_diffs[i][0]
        # OpenSTL detaches the stationarity state before each use (convlstm_c.detach())
        h, c, m, n = cell(below, diff_h, (h, c, m, n.detach()))
        new_layers.append((h, c, n))
        below = h
    if diffs is None:
        # from the second step on, each diff module starts from zeros (OpenSTL's None)
        zero = h0.new_zeros(h0.shape)
        new_diffs = [(zero, zero)] * len(diffs_modules)
    return below, (new_layers, m, new_diffs)
