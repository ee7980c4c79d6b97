"""Triton kernels of the ``triton`` backend (installed as ``fastcells.kernels``).

One module per fused op, each with its forward and backward kernels and the Python
launchers that allocate outputs and launch them; the autograd Functions and torch.library
registrations that wrap the launchers are in :mod:`fastcells.ops`, beside the ``*_ref``
eager functions. The LSTM math shared by the kernels is in :mod:`.lstm_math`, the strided
addressing of (B, C, H, W) tensors in :mod:`.layout`.

Importing this package imports triton; :mod:`fastcells.ops` does so lazily, at the first
call of a Triton op, so fastcells works without triton installed. Set ``TRITON_INTERPRET=1``
before the first import to run the kernels on CPU tensors (how the tests run without a GPU).
"""
