"""Triton kernels of fastcells (installed as fastcells.kernels)."""
