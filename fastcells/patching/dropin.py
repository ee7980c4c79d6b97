"""How a fastcells cell takes the place of a public implementation's cell.

A drop-in cell *adopts* the original's submodules under their original names, so
``state_dict()`` keys and shapes, ``named_parameters()`` and any optimizer built before
patching are unchanged (they are the same Parameter objects), and ``unpatch`` can hand the
original back with whatever training happened in between. ``_params`` maps the adopted
names to the names the fastcells step function reads.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..cells.base import CellBase


class Skip(Exception):
    """A module with a recognised class name that fastcells cannot reproduce exactly."""


# Attributes every nn.Module has, and the ones fastcells' own cells rely on: never carried.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_PROTECTED = frozenset({"input_size", "hidden_size", "requested_backend", "memory_efficient"})


class DropIn:
    """Mixin placed before a fastcells cell class in a drop-in's bases.

    ``family`` names the public implementation; ``_module_aliases`` maps adopted module
    names to the fastcells cell's canonical ones (parameters are renamed by prefix).
    """

    family: str = ""
    _module_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def adopt(cls, original: nn.Module, modules: dict[str, nn.Module], backend: str,
              memory_efficient: bool = False, **cell_kwargs):
        """A drop-in for ``original`` running on its ``modules`` (name -> submodule).

        Raises :class:`Skip` when ``original`` holds anything the drop-in would not carry
        over: other submodules, parameters or buffers of its own, hooks.
        """
        check_whole(original, modules)
        # The fastcells cell is built on the meta device (no memory, no init), then its own
        # submodules are replaced by the adopted ones.
        with torch.device("meta"):
            cell = cls(backend=backend, memory_efficient=memory_efficient, **cell_kwargs)
        own = set(vars(cell))
        for name in list(cell._modules):
            delattr(cell, name)
        # in the original's registration order, so state_dict and parameters() keep their
        # order too (optimizer state is matched to parameters by position)
        for name in sorted(modules, key=list(original._modules).index):
            setattr(cell, name, modules[name])
        if any(p.is_meta for p in cell.parameters()):
            raise Skip("its parameters are on the meta device (materialize the model first)")
        for name, value in vars(original).items():
            if (name in _MODULE_INTERNALS or name in _PROTECTED or name.startswith("_fastcells")
                    or hasattr(type(cell), name)):
                continue
            # lists (Conv-TT-LSTM's ring buffer) are copied so the two modules do not alias
            setattr(cell, name, copy.copy(value) if isinstance(value, (list, dict)) else value)
        cell.train(original.training)
        object.__setattr__(cell, "_fastcells_original", original)  # not a submodule
        object.__setattr__(cell, "_fastcells_own", own - set(vars(original)))
        return cell

    def _params(self) -> dict[str, Tensor]:
        params = {}
        for name, p in self.named_parameters():
            prefix, _, leaf = name.rpartition(".")
            params[f"{self._module_aliases.get(prefix, prefix)}.{leaf}"] = p
        return params

    def restore_original(self) -> nn.Module:
        """The module this drop-in replaced, with the drop-in's attribute values (state,
        ring-buffer pointer, ...) copied back; its parameters are the shared ones."""
        original = self._fastcells_original
        for name, value in vars(self).items():
            # everything but fastcells' own bookkeeping: carried attributes and the state
            # the family's forward created (e.g. NVlabs' ring buffer after first_step)
            if (name in _MODULE_INTERNALS or name in _PROTECTED or name in self._fastcells_own
                    or name.startswith("_fastcells") or hasattr(type(self), name)):
                continue
            setattr(original, name, value)
        original.train(self.training)
        return original

    def extra_repr(self) -> str:
        return f"drop-in for {self.family}, " + super().extra_repr()


def is_drop_in(module: nn.Module) -> bool:
    return isinstance(module, DropIn) and isinstance(module, CellBase)


# -- structural checks -------------------------------------------------------------------------
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
          "_load_state_dict_post_hooks")


def check_whole(original: nn.Module, adopted: dict[str, nn.Module]) -> None:
    """The drop-in reproduces ``original`` only if the adopted submodules are all it has."""
    extra = sorted(set(original._modules) - set(adopted))
    if extra:
        raise Skip(f"it has submodules the public cell does not ({', '.join(extra)})")
    own = sorted({*original._parameters, *original._buffers})
    if own:
        raise Skip(f"it holds parameters/buffers of its own ({', '.join(own)})")
    for name, module in [("", original), *((n, m) for key, a in adopted.items()
                                           for n, m in a.named_modules(prefix=key))]:
        hooks = [h.strip("_") for h in _HOOKS if getattr(module, h, None)]
        if hooks:
            raise Skip(f"{name or 'the cell'} has hooks ({', '.join(hooks)}) that the fused "
                       f"step would bypass")


def plain_leaf(module: nn.Module, name: str) -> None:
    """Only ``weight``/``bias`` parameters and no buffers: no weight_norm, spectral_norm,
    pruning or parametrization reshaping the weight behind the module's back."""
    names = set(module._parameters) | set(module._buffers)
    if not names <= {"weight", "bias"} or hasattr(module, "parametrizations"):
        raise Skip(f"{name} carries {sorted(names)} (weight reparametrized, e.g. weight_norm, "
                   f"spectral_norm or pruning)")


def odd_square_kernel(module: nn.Module, name: str) -> int:
    """Checks ``module`` is a plain stride-1 'same'-padded conv and returns its kernel size."""
    kind = nn.Conv3d if isinstance(module, nn.Conv3d) else nn.Conv2d
    if type(module) is not kind:
        raise Skip(f"{name} is {type(module).__name__}, not a plain nn.Conv2d")
    plain_leaf(module, name)
    k = module.kernel_size[0]
    if module.kernel_size[:2] != (k, k) or k % 2 == 0:
        raise Skip(f"{name} has kernel {module.kernel_size}: fastcells needs odd square kernels")
    if any(s != 1 for s in module.stride) or any(d != 1 for d in module.dilation):
        raise Skip(f"{name} has stride {module.stride} / dilation {module.dilation}; "
                   f"fastcells cells are stride 1, dilation 1")
    if module.groups != 1 or module.padding_mode != "zeros":
        raise Skip(f"{name} has groups={module.groups}, padding_mode={module.padding_mode!r}")
    if isinstance(module.padding, str) or tuple(module.padding[:2]) != (k // 2, k // 2):
        raise Skip(f"{name} has padding {module.padding}; fastcells uses 'same' padding "
                   f"{k // 2} for kernel {k}")
    return k


def expect_channels(module: nn.Module, name: str, cin: int, cout: int) -> None:
    if (module.in_channels, module.out_channels) != (cin, cout):
        raise Skip(f"{name} maps {module.in_channels} -> {module.out_channels} channels, "
                   f"expected {cin} -> {cout}")


def same_bias(convs: dict[str, nn.Module]) -> bool:
    has = {name: conv.bias is not None for name, conv in convs.items()}
    if len(set(has.values())) != 1:
        raise Skip(f"mixed biases {has}: fastcells' cell has all or none")
    return next(iter(has.values()))


def required_attrs(module: nn.Module, names) -> None:
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise Skip(f"has no attribute(s) {', '.join(missing)}")


# -- the numerical probe ------------------------------------------------------------------------
# The probe's inputs: batch, height, width. Small, so that a probe of a model's real cells
# (128 channels, kernel 5: tens of float64 convolutions) costs milliseconds, yet still a
# non-square frame (a forward that swaps or flips H and W shows) whose three rows each see
# a different part of a kernel up to 5.
PROBE_SHAPE = (1, 3, 4)
# Random probe weights are drawn from a pool of this (prime) many values, tiled: drawing
# millions of float64 normals took longer than the whole probe. A prime period never
# divides a gate block (C * Cin * k * k values), so no two gates get the same weights.
_POOL = 10007


class _ProbeMode:
    """float64 by default, no autograd, one thread (restored after): the probe's tiny
    convolutions ran 3-4 times slower split over threads than on one."""

    def __enter__(self):
        self.saved = torch.get_default_dtype(), torch.get_num_threads()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved[0])
        torch.set_num_threads(self.saved[1])
        self.no_grad.__exit__(*exc)


class _DefaultDtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


def probe_copy(original: nn.Module, seed: int = 0, small_norms: bool = False) -> nn.Module:
    """A float64 CPU copy of ``original`` with random weights (its own are never copied).

    Convolution weights get unit-variance pre-activations (1/sqrt(fan-in)) and vectors
    (biases, LayerNorm affines) 0.5: saturated gates (0.3-scaled weights over 128 channels
    gave pre-activations of std ~17) would hide a changed forward behind a flat sigmoid.
    Call it inside the probe mode (no autograd). ``small_norms``: LayerNorms over
    (channels, H, W) of the copy normalize over (channels, 3, 4) at most (:class:`Family`'s
    ``probe_small_norms``)."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(_POOL, generator=gen, dtype=torch.float64)
    memo = {}
    for i, p in enumerate(original.parameters()):
        if id(p) in memo:
            continue
        n = p.numel()
        # a different phase per parameter, so equal-shaped ones differ too
        scale = p[0].numel() ** -0.5 if p.dim() > 1 else 0.5
        values = (pool.roll(-(i * 7919) % _POOL) * scale).repeat(n // _POOL + 1)[:n]
        memo[id(p)] = nn.Parameter(values.view(p.shape), requires_grad=p.requires_grad)
    for value in vars(original).values():  # tensors held as attributes (a cell's state)
        for t in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(t, Tensor) and not isinstance(t, nn.Parameter):
                memo[id(t)] = t.detach()
    ref = copy.deepcopy(original, memo).to("cpu", torch.float64)
    if small_norms:
        h, w = PROBE_SHAPE[1:]
        for norm in ref.modules():
            if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 3:
                c, nh, nw = norm.normalized_shape
                norm.normalized_shape = (c, min(nh, h), min(nw, w))
                for name in ("weight", "bias"):
                    p = getattr(norm, name)
                    if p is not None:
                        setattr(norm, name, nn.Parameter(p[:, :h, :w].clone()))
    return ref


def count_outputs(original: nn.Module, run) -> int:
    """How many tensors ``run`` gets from ``original``'s forward, found on the meta device:
    shapes only, no memory touched (zeroing a 128-channel cell's float64 weights took longer
    than its whole probe)."""
    memo = {id(p): nn.Parameter(torch.empty(p.shape, device="meta", dtype=torch.float64),
                                requires_grad=p.requires_grad) for p in original.parameters()}
    memo |= {id(b): torch.empty(b.shape, device="meta", dtype=b.dtype)
             for b in original.buffers()}
    for value in vars(original).values():
        for t in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(t, Tensor) and not isinstance(t, nn.Parameter):
                memo[id(t)] = torch.empty(t.shape, device="meta", dtype=t.dtype)
    shadow = copy.deepcopy(original, memo)
    _META[0] = True
    try:
        with torch.no_grad():
            return len(run(shadow, torch.Generator()))
    finally:
        _META[0] = False


_META = [False]  # count_outputs is running: randn() makes meta tensors


def verify(original: nn.Module, convert, run, tol: float = 1e-9,
           small_norms: bool = False) -> int:
    """Runs ``original`` and its drop-in on the same random float64 inputs and weights.

    ``convert(module, backend)`` builds a drop-in; ``run(module, generator)`` calls a module
    with the family's forward signature and returns its outputs as a flat list. Raises
    :class:`Skip` when the outputs differ (the module is a lookalike whose forward computes
    something else) or the original fails on the probe; returns how many outputs it gave.

    The probe runs in training and in eval mode (a forward that differs by mode, e.g. a
    functional dropout, is caught in one of them), on the reference backend: the fused
    backends are tested against the reference separately.
    """
    try:
        with _ProbeMode():
            ref = probe_copy(original, small_norms=small_norms)
            # The drop-in adopts ref's own submodules (no second copy: both only read them;
            # adopting leaves ref as it was, and ref's state attributes are copied).
            candidate = convert(ref, "reference")
            results = []
            for training in (True, False):
                ref.train(training)
                candidate.train(training)
                try:
                    want = run(ref, torch.Generator().manual_seed(1))
                except Exception as e:
                    raise Skip(f"its forward failed on a probe input "
                               f"({type(e).__name__}: {e})") from e
                results.append((training, want, run(candidate, torch.Generator().manual_seed(1))))
    except Skip:
        raise
    except Exception as e:  # a module fastcells cannot copy or run: leave it alone
        raise Skip(f"the numerical probe failed ({type(e).__name__}: {e})") from e
    for training, want, got in results:
        mode = "training" if training else "eval"
        if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
            raise Skip(f"the drop-in returns {len(got)} outputs of other shapes than the "
                       f"original's {len(want)} ({mode} mode)")
        for i, (g, w) in enumerate(zip(got, want)):
            err = ((g - w).norm() / w.norm().clamp_min(1e-30)).item()
            if not err < tol:
                raise Skip(f"its forward computes something else (output {i} differs by "
                           f"relative error {err:.1e} on a probe input, {mode} mode)")
    return len(results[0][1])


def _detached_copy(module: nn.Module) -> nn.Module:
    """deepcopy that takes tensors held as plain attributes (a stateful cell's state,
    possibly with autograd history) detached, so they never block the copy."""
    memo = {}
    for value in vars(module).values():
        for t in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(t, Tensor) and not isinstance(t, nn.Parameter):
                memo[id(t)] = t.detach()
    return copy.deepcopy(module, memo)


def randn(gen: torch.Generator, *shape) -> Tensor:
    """A probe input (float64 normal values; shapes only inside :func:`count_outputs`)."""
    if _META[0]:
        return torch.empty(shape, device="meta", dtype=torch.float64)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def flat_outputs(out) -> list[Tensor]:
    """Tensors of a (possibly nested) tuple/list output, in order."""
    if isinstance(out, Tensor):
        return [out]
    return [t for item in out for t in flat_outputs(item)]


@dataclass(frozen=True)
class Family:
    """One public implementation's cell: how to recognise, convert and probe it.

    ``markers`` are attributes that tell it apart from other cells with the same class name;
    ``convert(module, backend, memory_efficient)`` returns the drop-in or raises
    :class:`Skip`; ``run(module, generator)`` calls a module with this family's forward
    signature on random inputs (for :func:`verify`).
    """

    name: str
    class_name: str
    markers: tuple[str, ...]
    convert: Callable
    run: Callable
    # The cell's LayerNorms over (channels, H, W) may be cut to the probe's frame size in the
    # probe copy (they fix the spatial size; 16x16 frames of 128 channels made float64 probes
    # of seconds): for families whose forward reads H, W from nothing else.
    probe_small_norms: bool = False

    def claims(self, module: nn.Module) -> bool:
        return (type(module).__name__ == self.class_name
                and all(hasattr(module, a) for a in self.markers))
