"""Stacked recurrent cells between a 1x1 embedding and a 1x1 head: ``convlstm`` (the MS-LSTM
paper's ConvLSTM baseline) and ``tms_lstm`` (stacked MK-LSTM), as in mazhf/MS-RNN; and, with
``cell_layout="openstl"``, OpenSTL's ConvLSTM model (``openstl/models/convlstm_model.py``:
patches, the first cell reading the patched frame, a bias-free 1x1 ``conv_last`` head)."""
from __future__ import annotations

from torch import Tensor, nn

from ._cells import cell_factory, embed_head
from .predrnn import reshape_patch, reshape_patch_back
from .rollout import RecurrentForecaster

CELL_LAYOUTS = ("fastcells", "openstl")


def cell_options(cell: str, kernel_size: int, kernel_sizes) -> dict:
    """The kernel option of the ConvLSTM (one kernel) or MK-LSTM (two kernels) cell."""
    if cell == "mklstm":
        return {"kernel_sizes": tuple(kernel_sizes)}
    if cell == "convlstm":
        return {"kernel_size": kernel_size}
    raise ValueError(f"cell must be 'convlstm' or 'mklstm', got {cell!r}")


class StackedForecaster(RecurrentForecaster):
    """``embed (1x1) -> num_layers cells at full resolution -> head (1x1)`` per step.

    Args:
        frame_channels: C of the frames.
        hidden_size: channels of every cell (the MS-LSTM paper: 32).
        num_layers: number of stacked cells (the paper: 6).
        cell: ``"convlstm"`` (ConvLSTM, ``kernel_size``) or ``"mklstm"`` (MK-LSTM,
            ``kernel_sizes``).
        patch_size: thuml's/OpenSTL's patch reshaping (:func:`reshape_patch`); H and W must
            be divisible by it.
        embed: True (MS-RNN): 1x1 embedding and head convolutions with bias; False
            (OpenSTL): the first cell reads the (patched) frame and a bias-free 1x1
            ``conv_last`` maps the top h back.
        cell_layout: ``"fastcells"`` (:class:`fastcells.ConvLSTMCell`) or ``"openstl"``
            (ConvLSTM only: :class:`fastcells.SplitConvLSTMCell` in OpenSTL's layout, bias-free,
            with the unused ``conv_o``/``conv_last`` OpenSTL's parameter counts include).
        frame_size, input_len, pred_len, backend: see :class:`Forecaster`.
        memory_efficient: passed to every cell.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W); any H, W (divisible by
    ``patch_size``) unless ``frame_size`` fixes them. State per step: one cell state tuple per
    layer.
    """

    def __init__(self, frame_channels: int, hidden_size: int = 32, num_layers: int = 6,
                 cell: str = "convlstm", kernel_size: int = 3, kernel_sizes=(3, 5),
                 patch_size: int = 1, embed: bool = True, cell_layout: str = "fastcells",
                 frame_size=None, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be an int >= 1, got {patch_size!r}")
        if cell_layout not in CELL_LAYOUTS:
            raise ValueError(f"cell_layout must be one of {CELL_LAYOUTS}, got {cell_layout!r}")
        self.patch_size = patch_size
        if self.frame_size is not None:
            self._check_spatial(*self.frame_size)
        options = cell_options(cell, kernel_size, kernel_sizes)
        if cell_layout == "openstl":
            if cell != "convlstm":
                raise ValueError(f"cell_layout='openstl' is a ConvLSTM layout; cell={cell!r} "
                                 f"has only fastcells' layout")
            cell, options = "split_convlstm", dict(options, unused_convs=True)
        make = cell_factory(cell, backend, memory_efficient, **options)
        patched = frame_channels * patch_size ** 2
        if embed:
            self.embed, self.head = embed_head(patched, hidden_size)
        else:
            self.embed = None
            self.head = nn.Conv2d(hidden_size, patched, 1, bias=False)  # OpenSTL's conv_last
        first = hidden_size if embed else patched
        self.cells = nn.ModuleList(make(first if i == 0 else hidden_size, hidden_size)
                                   for i in range(num_layers))

    def _check_spatial(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frames: H and W must be divisible by patch_size={p}, got "
                             f"{height}x{width}")

    def step(self, frame: Tensor, state, need_aux: bool = False):
        states = [None] * len(self.cells) if state is None else state
        x = reshape_patch(frame, self.patch_size)
        if self.embed is not None:
            x = self.embed(x)
        new = []
        for cell, s in zip(self.cells, states):
            s = cell(x, s)
            x = s[0]
            new.append(s)
        return reshape_patch_back(self.head(x), self.patch_size), new, None
