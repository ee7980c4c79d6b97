"""MIM, memory in memory (Wang et al. 2019), as OpenSTL's ``MIM_Model``
(chengtan9907/OpenSTL ``openstl/models/mim_model.py``).

Layer 0 is an ST-LSTM (:class:`fastcells.SpatioTemporalLSTMCell`), layers 1.. are
:class:`fastcells.MIMBlock`; between layers i-1 and i a :class:`fastcells.MIMNCell` (the
"diff" stationarity module) reads the change of layer 0's hidden state (for i = 1) or the
diff output of the module below, and its hidden output is layer i's ``diff_h``. The
spatiotemporal memory ``m`` zigzags as in PredRNN. Frames are cut into patches as thuml's
``reshape_patch`` (:func:`fastcells.models.predrnn.reshape_patch`).

Following OpenSTL:

- at the first step the diff modules have no input yet and the blocks get ``diff_h`` zeros
  (OpenSTL calls each diff module on zeros at t = 0 and discards the result: it has no
  effect, so it is not computed here);
- the block's stationarity state ``n`` (OpenSTL's ``convlstm_c``) is detached between steps.

One difference: OpenSTL's ``convlstm_c`` is a module attribute that survives from one
``forward`` to the next (a new batch starts from the last batch's final state); here every
sequence starts from zeros, like every other state. (The drop-in of :mod:`fastcells.patch`
keeps OpenSTL's behaviour on OpenSTL's modules.)
"""
from __future__ import annotations

from torch import Tensor, nn

from ..cells import MIMBlock, MIMNCell, SpatioTemporalLSTMCell
from ..layers import mim_step
from ._cells import embed_head
from .predrnn import reshape_patch, reshape_patch_back
from .rollout import RecurrentForecaster


class MIM(RecurrentForecaster):
    """MIM (OpenSTL's structure).

    Args:
        frame_channels: C of the frames.
        hidden_size: channels of every layer (C; OpenSTL's num_hidden, all equal).
        num_layers: layers (>= 2): one ST-LSTM, then ``num_layers - 1`` MIM blocks, each with
            its diff module.
        kernel_size: the cells' kernel (OpenSTL's filter_size).
        patch_size: thuml's patch reshaping; H and W must be divisible by it.
        frame_size: (H, W), required: the MIM cells' peepholes are per pixel (of the
            patched frame, H/patch x W/patch).
        embed: False (OpenSTL): layer 0 reads the patched frame and a bias-free 1x1
            ``head`` (OpenSTL's conv_last) maps the top h back; True: 1x1 embedding and head
            with bias, as in the MS-LSTM authors' harness (the ``"mmnist"`` preset).
        bias, layer_norm: the cells' options (OpenSTL: no bias; layer_norm its config).
        unused_convs: also build the diff modules' ``conv_last``, which OpenSTL builds and
            never calls (its checkpoints and parameter counts include them).
        input_len, pred_len, backend, memory_efficient: as for all models.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W).
    """

    def __init__(self, frame_channels: int, hidden_size: int = 64, num_layers: int = 4,
                 kernel_size: int = 5, patch_size: int = 1, frame_size=None,
                 embed: bool = False, bias: bool = False, layer_norm: bool = False,
                 unused_convs: bool = False, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be an int >= 1, got {patch_size!r}")
        if not isinstance(num_layers, int) or num_layers < 2:
            raise ValueError(f"num_layers must be an int >= 2 (an ST-LSTM and at least one "
                             f"MIM block), got {num_layers!r}")
        if self.frame_size is None:
            raise ValueError("frame_size: MIM's cells have per-pixel peepholes, so "
                             "frame_size=(H, W) is required")
        self.patch_size = patch_size
        self._check_spatial(*self.frame_size)
        spatial = tuple(s // patch_size for s in self.frame_size)
        opts = dict(kernel_size=kernel_size, bias=bias, layer_norm=layer_norm,
                    spatial_size=spatial, backend=backend, memory_efficient=memory_efficient)
        patched = frame_channels * patch_size ** 2
        C = hidden_size
        if embed:
            self.embed, self.head = embed_head(patched, C)
            first = C
        else:
            self.embed = None
            self.head = nn.Conv2d(C, patched, 1, bias=False)  # OpenSTL's conv_last
            first = patched
        stlstm_opts = {k: v for k, v in opts.items() if k != "spatial_size"}
        self.cells = nn.ModuleList(
            [SpatioTemporalLSTMCell(first, C, spatial_size=spatial if layer_norm else None,
                                    **stlstm_opts)]
            + [MIMBlock(C, C, **opts) for _ in range(num_layers - 1)])
        self.diffs = nn.ModuleList(MIMNCell(C, C, unused_conv_last=unused_convs, **opts)
                                   for _ in range(num_layers - 1))

    def _check_spatial(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frames: H and W must be divisible by patch_size={p}, got "
                             f"{height}x{width}")

    def init_state(self, x: Tensor):
        """Zero (h, c) for layer 0, (h, c, n) for the blocks, zero m; no diff state yet."""
        b, _, h, w = x.shape
        z = x.new_zeros(b, self.cells[0].hidden_size, h, w)
        layers = [(z, z)] + [(z, z, z)] * (len(self.cells) - 1)
        return layers, z, None

    def step(self, frame: Tensor, state, need_aux: bool = False):
        x = reshape_patch(frame, self.patch_size)
        if self.embed is not None:
            x = self.embed(x)
        below, state = mim_step(self.cells, self.diffs, x,
                                self.init_state(x) if state is None else state)
        prediction = reshape_patch_back(self.head(below), self.patch_size)
        return prediction, state, None
