"""Conv-TT-LSTM cell (Su et al. 2020) with the linear-time CTT recurrence, CELLS.md section 4."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_state, check_tensor
from ..ops.ctt import ctt_chain_ref, ctt_chain_triton
from ._conv import conv, input_hidden_conv
from .base import CellBase
from .._checks import check_int
from .convlstm import _check_odd


class RingHistory:
    """The last M hidden states as a ring buffer: M slots and ``head``, the slot of the
    oldest state. :meth:`push` puts the newest state in the oldest one's slot and advances
    ``head``: O(1) per step, where a tuple of M references would be rebuilt every step.

    Slots hold references (a step's ``h``); nothing is written into a tensor, so a state
    that autograd saved for backward is never modified. The ring is mutable: a cell that
    is given one advances it in place and returns it (``ConvTTLSTM`` keeps one per layer
    for the length of a sequence; the public state is the tuple of :meth:`as_tuple`).

    ``ring[i]`` is logical state i, 0 the oldest; ``slots`` are in storage order.
    """

    __slots__ = ("slots", "head")

    def __init__(self, states, head: int = 0):
        self.slots = list(states)
        self.head = int(head) % max(len(self.slots), 1)

    @classmethod
    def over(cls, slots: list, head: int) -> "RingHistory":
        """A ring whose slots *are* ``slots`` (shared, not copied): pushing writes into that
        list, as NVlabs' cell does with its ``hidden_states`` and ``hidden_pointer``."""
        ring = cls((), 0)
        ring.slots, ring.head = slots, int(head) % len(slots)
        return ring

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int) -> Tensor:
        m = len(self.slots)
        if not -m <= i < m:
            raise IndexError(f"history index {i} out of range for {m} states")
        return self.slots[(self.head + i) % m]

    def push(self, h: Tensor) -> None:
        """Drops the oldest state; ``h`` becomes the newest."""
        self.slots[self.head] = h
        self.head = (self.head + 1) % len(self.slots)

    def as_tuple(self) -> tuple:
        """The states oldest first (the public ``history`` of a state tuple)."""
        return tuple(self[i] for i in range(len(self.slots)))

    def __repr__(self) -> str:
        return f"RingHistory({len(self.slots)} states, head={self.head})"


class ConvTTLSTMCell(CellBase):
    r"""Convolutional tensor-train LSTM cell, as in NVlabs/conv-tt-lstm ``ConvTTLSTMCell``.

    With order N, steps M >= N, rank R and lags D = M - N + 1, window ``l`` is the D hidden
    states starting M - l steps back (oldest first), and::

        v_0 = P_0 * win_0;   v_l = P_l * win_l + G_{l-1} * v_{l-1}   (l = 1 .. N-1)
        z   = G_last * [x; v_{N-1}]                 gate order i, f, o, g
        c'  = s(f) c + s(i) tanh(g);   h' = s(o) tanh(c')

    Args:
        input_size, hidden_size: Cin and C.
        order: N, the number of tensor-train factors (default 3).
        steps: M >= N, how many past hidden states the cell reads (default 3).
        rank: R, channels of the tensor-train factors (default 8).
        kernel_size: odd kernel of every convolution (default 5).
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.

    Shapes:
        - x: (B, Cin, H, W)
        - state: ``(h, c, history)`` with ``h`` and ``c`` (B, C, H, W) and ``history`` a
          tuple of the last M hidden states, oldest first (``history[-1]`` is ``h``);
          None means zeros. Returns the new ``(h, c, history)``. ``history`` may also be
          a :class:`RingHistory`, which the step advances in place and returns (no tuple
          rebuilt per step).

    Parameters: ``preprocess.{l}`` (P_l) are Conv3d with weight (R, C, K, K, D) over the
    stacked window, as NVlabs stores them; ``factors.{l}`` are Conv2d: G_l (R, R, K, K)
    for l < N-1 and G_last (4C, Cin + R, K, K) last. Shapes equal NVlabs' ``layers_`` and
    ``layers``.
    """

    state_names = ("h", "c", "history")
    kind = "convttlstm"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size: int, hidden_size: int, order: int = 3, steps: int = 3,
                 rank: int = 8, kernel_size: int = 5, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        _check_odd(kernel_size)
        order, steps, rank = (check_int(n, v) for n, v in (("order", order), ("steps", steps),
                                                           ("rank", rank)))
        if steps < order:
            raise ValueError(f"need order >= 1, steps >= order and rank >= 1, got order={order}, "
                             f"steps={steps}, rank={rank}")
        self.order, self.steps, self.rank = order, steps, rank
        self.lags = steps - order + 1
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        k, pad = kernel_size, kernel_size // 2
        self.preprocess = nn.ModuleList(
            nn.Conv3d(hidden_size, rank, (k, k, self.lags), padding=(pad, pad, 0))
            for _ in range(order))
        self.factors = nn.ModuleList(
            nn.Conv2d(rank, rank, k, padding=pad) for _ in range(order - 1))
        self.factors.append(nn.Conv2d(input_size + rank, 4 * hidden_size, k, padding=pad))

    # -- state: (h, c, history) with history a tuple of M tensors -----------------------------
    def init_state(self, x: Tensor) -> tuple:
        b, _, h, w = x.shape
        z = torch.zeros(b, self.hidden_size, h, w, dtype=x.dtype, device=x.device)
        return z, z, (z,) * self.steps

    def check_state(self, state, x: Tensor) -> tuple:
        b, _, h, w = x.shape
        shape = (b, self.hidden_size, h, w)
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise ValueError(f"state: expected (h, c, history) with history a tuple of "
                             f"{self.steps} tensors of shape {shape}, got {type(state).__name__}")
        check_tensor(state[0], "state[0] (h)", shape, x)
        check_tensor(state[1], "state[1] (c)", shape, x)
        names = [f"history[{i}]" for i in range(self.steps)]
        if isinstance(state[2], RingHistory):
            check_state(state[2].as_tuple(), names, shape, x)
            return state[0], state[1], state[2]
        history = check_state(state[2], names, shape, x)
        return state[0], state[1], history

    def _run(self, x: Tensor, state: tuple, zx=None, memory_efficient: bool | None = None,
             **options):
        # A ring's slots reach the step in storage order, with the head as an option.
        ring = state[2]
        if isinstance(ring, RingHistory):
            options["head"] = ring.head
            if torch.is_autocast_enabled(x.device.type):  # as CellBase._run casts tuples
                ring.slots = [t.to(self._any_param().dtype) for t in ring.slots]
        return super()._run(x, state, zx, memory_efficient, **options)

    def _flatten(self, state):
        _, c, history = state
        if isinstance(history, RingHistory):
            return (c, *history.slots)
        return (c, *history)

    def _pack(self, outputs, state):
        h, c = outputs
        history = state[2]
        if isinstance(history, RingHistory):
            history.push(h)
            return h, c, history
        return h, c, (*history[1:], h)

    # -- the step ------------------------------------------------------------------------------
    def _window_weight(self, p: dict, level: int) -> Tensor:
        """P_level as a 2-D convolution over the window's D*C channels (d-major)."""
        w = p[f"preprocess.{level}.weight"]  # (R, C, K, K, D)
        return w.permute(0, 4, 1, 2, 3).reshape(w.shape[0], -1, *w.shape[2:4])

    def input_projection(self, x: Tensor) -> Tensor:
        """The input part of G_last for every frame of x (B, T, Cin, H, W) at once."""
        b, t = x.shape[:2]
        p, last = self._params(), f"factors.{self.order - 1}"
        z = conv(self._backend_for(x), x.reshape(b * t, *x.shape[2:]),
                 p[f"{last}.weight"][:, : self.input_size], p.get(f"{last}.bias"), self.padding)
        return z.view(b, t, *z.shape[1:])

    def _step(self, backend, p, x, zx, c, *slots, head: int = 0):
        """One step; ``slots`` are the M history states in storage order, logical state i
        (0 the oldest) being ``slots[(head + i) % M]``."""
        D, pad, N, M = self.lags, self.padding, self.order, self.steps
        w_last, b_last = p[f"factors.{N - 1}.weight"], p.get(f"factors.{N - 1}.bias")
        chain = ([p[f"preprocess.{lv}.weight"] for lv in range(N)],
                 [p.get(f"preprocess.{lv}.bias") for lv in range(N)],
                 [p[f"factors.{lv}.weight"] for lv in range(N - 1)],
                 [p.get(f"factors.{lv}.bias") for lv in range(N - 1)])
        if backend == "reference":
            v = ctt_chain_ref(slots, *chain, head=head)
            z = F.conv2d(torch.cat([x, v], dim=1), w_last, b_last, padding=pad)
        else:
            if backend == "triton":  # the chain in Triton kernels (fastcells/kernels/ctt.py)
                v = ctt_chain_triton(slots, *chain, head=head)
            else:
                v = None
                history = [slots[(head + i) % M] for i in range(M)]
                for level in range(N):
                    # Sum of per-state convolutions: the window is never concatenated.
                    w, bias = chain[0][level], chain[1][level]
                    pre = conv(backend, history[level], w[..., 0], bias, pad)
                    for d in range(1, D):
                        pre = pre.add_(conv(backend, history[level + d], w[..., d], None, pad))
                    if v is None:
                        v = pre
                    else:
                        v = conv(backend, v, chain[2][level - 1], chain[3][level - 1], pad)
                        v = v.add_(pre)
            z = input_hidden_conv(backend, x, v, w_last, b_last, pad, zx)
        h, c = self._gates(backend).convlstm(z, c, None, 0.0)
        return h, c

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", order={self.order}, steps={self.steps}, "
                f"rank={self.rank}, kernel_size={self.kernel_size}")
