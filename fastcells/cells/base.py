"""What every fastcells cell shares: backend selection, state handling, memory-efficient mode."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .. import backends
from .._checks import check_int, check_nonempty, check_state, check_tensor, frame_shape, zeros_state
from ..ops import GATES
from .recompute import recompute_step


class CellBase(nn.Module):
    """Base of the four cells.

    Subclasses define ``state_names`` and ``_step(backend, params, x, zx, *state)``, a pure
    function of the parameters (``params`` maps ``named_parameters()`` names to tensors) so
    that the memory-efficient mode can rerun it in backward. ``zx`` is the input projection
    when a sequence layer computed it for all frames at once (fused backends), else None.
    """

    state_names: Sequence[str] = ()
    kind: str = "convlstm"

    def __init__(self, input_size: int, hidden_size: int, backend: str, memory_efficient: bool):
        super().__init__()
        self.input_size = check_int("input_size", input_size)
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.requested_backend = backends.validate_backend(backend)
        self.memory_efficient = bool(memory_efficient)

    # -- backend -----------------------------------------------------------------------------
    def _any_param(self) -> Tensor:
        return next(self.parameters())

    @property
    def backend(self) -> str:
        """The backend that runs for the parameters' current device and dtype."""
        p = self._any_param()
        return backends.resolve(self.requested_backend, p.device, p.dtype, self.kind)

    def _backend_for(self, x: Tensor) -> str:
        backend = backends.resolve(self.requested_backend, x.device, x.dtype, self.kind)
        backends.check_supported(backend, x.device, x.dtype)
        return backend

    # -- shapes and state --------------------------------------------------------------------
    spatial_size: tuple[int, int] | None = None

    def _frame(self, channels: int, batch="B") -> tuple:
        return frame_shape(channels, self.spatial_size, batch)

    def check_input(self, x: Tensor, name: str = "x") -> None:
        check_tensor(x, name, self._frame(self.input_size), self._any_param())
        check_nonempty(x, name, self._frame(self.input_size))

    def init_state(self, x: Tensor) -> tuple:
        """Zero state for a batch like ``x`` (B, Cin, H, W)."""
        b, _, h, w = x.shape
        return zeros_state(len(self.state_names), (b, self.hidden_size, h, w), x)

    def check_state(self, state, x: Tensor) -> tuple:
        b, _, h, w = x.shape
        return check_state(state, self.state_names, (b, self.hidden_size, h, w), x)

    def _resolve_state(self, x: Tensor, state) -> tuple:
        return self.init_state(x) if state is None else self.check_state(state, x)

    # -- running -----------------------------------------------------------------------------
    def forward(self, x: Tensor, state=None):
        self.check_input(x)
        return self._run(x, self._resolve_state(x, state))

    def _params(self) -> dict[str, Tensor]:
        """The parameters under the names ``_step`` reads. The drop-in cells of
        :mod:`fastcells.patch` keep a public implementation's module names and map them here."""
        return dict(self.named_parameters())

    def _run(self, x: Tensor, state: tuple, zx=None, memory_efficient: bool | None = None,
             **options):
        """One step without input checks (the sequence layers check once per sequence).

        ``memory_efficient`` overrides the module's setting for this call. ``x`` may be None
        for a cell whose step allows no input (MIMNCell); the state then sets device/dtype."""
        like = x if x is not None else state[0]
        if torch.is_autocast_enabled(like.device.type):
            # Like autocast's float32 ops (layer_norm, softmax, ...): the step runs in the
            # parameters' dtype with its inputs cast to it, and returns that dtype.
            dtype = self._any_param().dtype
            with torch.autocast(like.device.type, enabled=False):
                return self._run(_cast(x, dtype), _cast(state, dtype), _cast(zx, dtype),
                                 memory_efficient, **options)
        backend = self._backend_for(like)
        params = self._params()
        if memory_efficient is None:
            memory_efficient = self.memory_efficient
        if memory_efficient and torch.is_grad_enabled():
            # zx is recomputed from x inside the step rather than kept alive.
            def run(inputs, p):
                return self._step(backend, p, inputs[0], None, *inputs[1:], **options)

            outputs = recompute_step(run, (x, *self._flatten(state)), params)
        else:
            outputs = self._step(backend, params, x, zx, *self._flatten(state), **options)
        return self._pack(outputs, state)

    # States that are nested (Conv-TT-LSTM's history) are flattened for the step function.
    def _flatten(self, state: tuple) -> tuple:
        return state

    def _pack(self, outputs: tuple, state: tuple) -> tuple:
        return tuple(outputs)

    @staticmethod
    def _gates(backend: str):
        return GATES[backend]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, backend={self.requested_backend!r}"
                + (", memory_efficient=True" if self.memory_efficient else ""))


def _cast(value, dtype):
    """``value`` (a tensor, or nested tuples/lists of them, or None) in ``dtype``."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value
