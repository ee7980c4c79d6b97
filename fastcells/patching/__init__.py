"""Swap fastcells' fused cells into models built on the public implementations.

:func:`patch` walks a model and replaces, in place, every cell it recognises by class name
and structure with a fastcells drop-in that keeps the original's forward signature, return
values, statefulness, attributes and ``state_dict`` keys (it adopts the original's
convolution modules, so parameters, checkpoints and existing optimizers are unchanged).
:func:`unpatch` puts the originals back.

Recognised (:data:`FAMILIES`):

- ndrplz/ConvLSTM_pytorch ``ConvLSTMCell``
- thuml/predrnn-pytorch ``SpatioTemporalLSTMCell`` (current and older releases, and the
  PredRNN-v2 cell that also returns ``delta_c, delta_m``)
- NVlabs/conv-tt-lstm ``ConvLSTMCell`` and ``ConvTTLSTMCell``
- mazhf/MS-RNN ``MK_LSTM_Cell``, ``ConvLSTM_Cell``, ``PredRNN_Cell``, ``PredRNN_V2_Cell`` and
  ``PredRNN_Plus2_Cell`` (PredRNN++, with its gradient highway unit inside)
- chengtan9907/OpenSTL ``ConvLSTMCell``, ``SpatioTemporalLSTMCell`` (thuml's),
  ``SpatioTemporalLSTMCellv2`` (thuml's PredRNN-v2 cell) and PhyDNet's ``PhyD_ConvLSTM_Cell``
- chengtan9907/OpenSTL ``CausalLSTMCell`` and ``GHU`` (PredRNN++)
- chengtan9907/OpenSTL ``MIMBlock`` and ``MIMN`` (MIM; its layer-0 ``SpatioTemporalLSTMCell``
  is thuml's)
- mazhf/MS-RNN ``MIM_Cell`` (its own MIM: :class:`fastcells.MIMCell`)

A module with one of these class names whose structure differs (gate count, stride,
dilation, padding, kernels, normalization, ...) or whose forward computes something else is
left alone and reported in a :class:`PatchWarning`. So is any other module that looks like a
recurrent cell (a class name containing LSTM, RNN, GRU or Cell, holding convolutions) and
was not converted, and a model in which nothing at all was converted: patch() is never
silent about what it did not do. By default every conversion is checked
numerically: the original and its drop-in run on the same random float64 inputs and must
agree to 1e-9 (``verify=False`` skips this probe).
"""
from __future__ import annotations

import re
import warnings

from torch import nn

from .. import backends
from ..cells.base import CellBase
from . import (msrnn, msrnn_mim, msrnn_predrnnpp, ndrplz, nvlabs, openstl, openstl_mim,
               openstl_predrnnpp, thuml)
from .dropin import DropIn, Family, Skip, is_drop_in, verify

FAMILIES: tuple[Family, ...] = (ndrplz.FAMILY, nvlabs.CONVLSTM, nvlabs.CONVTTLSTM, thuml.FAMILY,
                                msrnn.FAMILY, openstl.CONVLSTM, openstl.PREDRNN_V2,
                                openstl.PHYD_CONVLSTM, msrnn.CONVLSTM, msrnn.PREDRNN,
                                msrnn.PREDRNN_V2, openstl_predrnnpp.CAUSAL_LSTM,
                                openstl_predrnnpp.GHU, openstl_mim.BLOCK, openstl_mim.MIMN,
                                msrnn_mim.FAMILY, msrnn_predrnnpp.FAMILY)
_CLASS_NAMES = {f.class_name for f in FAMILIES}


class PatchWarning(UserWarning):
    """Raised (as a warning) by :func:`patch` for the recurrent-looking modules it left alone
    (recognised class names that failed a check, and cells of unknown families)."""


# How the public code names its recurrent cells (ConvLSTMCell, PredRNN_Cell, MAUCell, ...):
# the unrecognised ones are reported, whatever families fastcells knows.
_RECURRENT_NAME = re.compile(r"lstm|rnn|gru|cell", re.IGNORECASE)


def _family(module: nn.Module) -> Family:
    """The family of a module whose class name is a recognised one; raises Skip if none."""
    for family in FAMILIES:
        if family.claims(module):
            return family
    wanted = "; ".join(f"{f.name}: {', '.join(f.markers)}" for f in FAMILIES
                       if f.class_name == type(module).__name__)
    raise Skip(f"its attributes match no recognised layout ({wanted})")


def convert(module: nn.Module, backend: str = "auto", *, verify_numerics: bool = True,
            memory_efficient: bool = False) -> nn.Module:
    """The fastcells drop-in for one recognised cell (what :func:`patch` puts in its place).

    Raises ``ValueError`` saying why when ``module`` cannot be converted exactly.
    """
    backends.validate_backend(backend)
    try:
        return _convert(module, backend, verify_numerics, memory_efficient)
    except Skip as e:
        raise ValueError(f"{type(module).__name__} cannot be converted: {e}") from None


def _convert(module, backend, verify_numerics, memory_efficient):
    family = _family(module)
    cell = family.convert(module, backend, memory_efficient)  # structure first: cheap
    if verify_numerics:
        verify(module, family.convert, family.run, small_norms=family.probe_small_norms)
    return cell


def patch(model: nn.Module, backend: str = "auto", *, verify: bool = True,
          memory_efficient: bool = False) -> list[str]:
    """Replaces every recognised recurrent cell in ``model`` by a fastcells drop-in.

    Args:
        model: any ``nn.Module``; modified in place.
        backend: backend of the drop-ins (``"auto"``, ``"reference"``, ``"cpp"``).
        verify: check each conversion numerically on a small float64 probe (recommended;
            it costs one tiny forward of each cell).
        memory_efficient: run the drop-ins in fastcells' memory-efficient mode.

    Returns:
        The qualified names of the replaced submodules. Recognised class names that were
        left alone are listed, with the reason, in one :class:`PatchWarning`.
    """
    backends.validate_backend(backend)
    if type(model).__name__ in _CLASS_NAMES and not isinstance(model, CellBase):
        raise ValueError(f"model is itself a {type(model).__name__}; patch() replaces "
                         f"submodules in place, use fastcells.patching.convert(cell) for a cell")
    targets, skipped, done = [], [], {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if type(module).__name__ not in _CLASS_NAMES or isinstance(module, CellBase):
            continue
        if id(module) not in done:  # a cell registered under several names converts once
            try:
                done[id(module)] = _convert(module, backend, verify, memory_efficient)
            except Skip as e:
                done[id(module)] = None
                skipped.append(f"{name} ({type(module).__name__}): {e}")
        if done[id(module)] is not None:
            targets.append((name, done[id(module)]))
    # every conversion is done before the first replacement: no half-patched model
    replaced = []
    for name, cell in targets:
        if not _inside(name, replaced):
            model.set_submodule(name, cell)
            replaced.append(name)
    skipped += _unrecognised(model, replaced, done)
    if skipped:
        warnings.warn("fastcells.patch left these modules unchanged:\n  " + "\n  ".join(skipped),
                      PatchWarning, stacklevel=2)
    elif not replaced and not any(isinstance(m, CellBase) for m in model.modules()):
        warnings.warn(f"fastcells.patch converted nothing: no module of this "
                      f"{type(model).__name__} is a recurrent cell fastcells recognises "
                      f"({', '.join(sorted(_CLASS_NAMES))}; see fastcells.patching.FAMILIES)",
                      PatchWarning, stacklevel=2)
    return replaced


def _unrecognised(model: nn.Module, replaced: list[str], done: dict) -> list[str]:
    """Lines for the innermost modules that look recurrent (name and convolutions) and
    that patch() neither converted nor already reported (a model class around converted
    cells, e.g. OpenSTL's ConvLSTM_Model, is not one: it holds converted cells)."""
    names = dict(model.named_modules(remove_duplicate=False))
    suspects = []
    for name, module in names.items():
        if (isinstance(module, CellBase) or id(module) in done or _inside(name, replaced)
                or not _RECURRENT_NAME.search(type(module).__name__)
                or not any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())):
            continue
        suspects.append(name)
    lines = []
    for name in suspects:
        below = [n for n in names if n != name and (not name or n.startswith(name + "."))]
        if any(n in suspects or id(names[n]) in done or isinstance(names[n], CellBase)
               for n in below):
            continue  # its cells are reported (or converted) themselves
        lines.append(f"{name or '(the model)'} ({type(names[name]).__name__}): looks like a "
                     f"recurrent cell (a recurrent class name, convolutions) but is of no "
                     f"family fastcells converts (fastcells.patching.FAMILIES)")
    return lines


def unpatch(model: nn.Module) -> list[str]:
    """Puts back the original module of every drop-in :func:`patch` placed in ``model``.

    The originals get the drop-ins' current attribute values (e.g. NVlabs' recurrent state)
    and share their parameters, so training done while patched is kept. Returns the names
    of the restored submodules.
    """
    restored, done = [], {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if is_drop_in(module) and not _inside(name, restored):
            if id(module) not in done:
                done[id(module)] = module.restore_original()
            model.set_submodule(name, done[id(module)])
            restored.append(name)
    return restored


def _inside(name: str, parents: list[str]) -> bool:
    return any(name.startswith(p + ".") for p in parents)


__all__ = ["FAMILIES", "DropIn", "PatchWarning", "convert", "patch", "unpatch"]
