"""Conv-TT-LSTM's history as a ring buffer: the slots stay where they are, a step writes the
newest state into the oldest one's slot and advances the head."""
import pytest
import torch

import fastcells as fc
from fastcells.cells.convttlstm import RingHistory

from .helpers import assert_close, make_cells


def test_push_overwrites_the_oldest_slot():
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    ring = RingHistory([a, b, c])
    assert ring.as_tuple() == (a, b, c) and ring[0] is a and ring[-1] is c
    slots = ring.slots
    ring.push(d)
    assert ring.slots is slots and slots == [d, b, c] and ring.head == 1
    assert ring.as_tuple() == (b, c, d) and ring[-1] is d and ring[-3] is b
    with pytest.raises(IndexError):
        ring[3]
    shared = [a, b, c]
    view = RingHistory.over(shared, 2)
    assert view.as_tuple() == (c, a, b)
    view.push(d)
    assert shared == [a, b, d] and view.head == 0


def test_cell_steps_a_ring_like_a_tuple():
    """Given a ring the cell advances it in place and returns it; the states equal those of
    the tuple API (reference backend: the window is concatenated in logical order)."""
    (cell,) = make_cells("convttlstm_lags", [("reference", {})])
    xs = [torch.randn(2, 3, 5, 6) for _ in range(6)]  # 6 > steps: the ring wraps around
    hist = tuple(torch.randn(2, 5, 5, 6) for _ in range(cell.steps))
    c0 = torch.randn(2, 5, 5, 6)
    tup = (hist[-1], c0, hist)
    ring = RingHistory(hist, head=0)
    st = (hist[-1], c0, ring)
    for x in xs:
        tup = cell(x, tup)
        st = cell(x, st)
        assert st[2] is ring
        assert_close(st[0], tup[0], 0.0)
        assert_close(st[1], tup[1], 0.0)
        assert ring[-1] is st[0]
        for a, b in zip(ring.as_tuple(), tup[2]):
            assert_close(a, b, 0.0)


def test_layer_keeps_one_ring_per_layer(monkeypatch):
    """The sequence layer hands each cell the same ring at every step (no tuple rebuilt
    per step), leaves the caller's state alone and returns tuples."""
    layer = fc.ConvTTLSTM(3, 4, order=2, steps=3, rank=3, kernel_size=3, num_layers=2,
                          backend="reference")
    seen = []
    run = type(layer.cells[0])._run

    def spy(self, x, state, *args, **kwargs):
        seen.append((id(self), state[2]))
        return run(self, x, state, *args, **kwargs)

    monkeypatch.setattr(type(layer.cells[0]), "_run", spy)
    x = torch.randn(1, 5, 3, 6, 7)
    _, states = layer(x)
    assert all(isinstance(ring, RingHistory) for _, ring in seen)
    for cell in layer.cells:
        rings = {id(ring) for owner, ring in seen if owner == id(cell)}
        assert len(rings) == 1
    for h, _, history in states:
        assert isinstance(history, tuple) and len(history) == 3 and history[-1] is h
    given = [(h, c, tuple(hist)) for h, c, hist in states]
    before = [hist for _, _, hist in given]
    layer(x[:, :2], given)
    assert all(g[2] is b for g, b in zip(given, before))  # not modified in place
