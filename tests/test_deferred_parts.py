"""The kernels' deferred calls (``defer=True``): the pieces of a split call, checked
with the GIL and run later without it, on any thread (``rnncore._kernels.Part``).

A deferred call checks its arguments as the call does, computes nothing until it is
run, then computes exactly what the call computes; one that cannot allocate its
buffers raises MemoryError when run, as the call does.
"""
import numpy as np
import pytest

_kernels = pytest.importorskip("rnncore._kernels")

T, B, K, H = 7, 5, 6, 9


def _arrays(dtype):
    rng = np.random.default_rng(3)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    a = dict(x=r(T, B, K), w_ih=r(H, K) / 3, w_hh=r(H, H) / 3, b=r(H), h0=r(B, H),
             lengths=np.array([T, 3, T, 0, 5], np.int64), dy=r(T, B, H), dh_n=r(B, H))
    a["hs"] = _kernels.layer_forward(a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"],
                                     a["lengths"], False, False)
    a["delta"] = r(T, B, H)
    return a


def _outputs(dtype):
    """Fresh arrays for every output a call below writes, filled with a marker."""
    shapes = dict(hs=(T + 1, B, H), y=(T, B, H), delta=(T, B, H), dh0=(B, H),
                  dw_ih=(H, K), dw_hh=(H, H), db=(H,), dx=(T, B, K))
    return {k: np.full(s, 7.5, dtype) for k, s in shapes.items()}


# each: a call of the kernels writing into ``o`` (the outputs), with ``defer`` passed on
CALLS = {
    "input_projection": lambda a, o, defer: _kernels.input_projection(
        a["x"], a["w_ih"], o["hs"], False, steps=(2, 6), defer=defer),
    "layer_forward": lambda a, o, defer: _kernels.layer_forward(
        a["x"], a["w_ih"], a["w_hh"], a["b"], a["h0"], a["lengths"], True, True,
        out=o["hs"], rows=(1, 4), y=o["y"], defer=defer),
    "backward_steps": lambda a, o, defer: _kernels.backward_steps(
        a["w_hh"], a["hs"], a["dy"], a["dh_n"], a["lengths"], False, False, o["delta"],
        o["dh0"], rows=(0, 3), defer=defer),
    "backward_weights": lambda a, o, defer: _kernels.backward_weights(
        a["x"], a["hs"], a["delta"], False, o["dw_ih"], o["dw_hh"], o["db"],
        part=(1, 2), defer=defer),
    "input_grad": lambda a, o, defer: _kernels.input_grad(
        a["delta"], a["w_ih"], o["dx"], False, T * B, defer=defer),
}


@pytest.fixture(params=list(CALLS))
def call(request):
    return CALLS[request.param]


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def no_failing_blocks():
    yield
    _kernels._fail_next_blocks(0)


def test_a_deferred_call_computes_nothing_until_it_is_run(call, dtype):
    a, o = _arrays(dtype), _outputs(dtype)
    part = call(a, o, True)
    assert isinstance(part, _kernels.Part)
    for name, out in o.items():
        assert (out == 7.5).all(), f"{name} was written before the part ran"


def test_a_deferred_call_run_computes_the_bits_of_the_call(call, dtype):
    a = _arrays(dtype)
    want, got = _outputs(dtype), _outputs(dtype)
    call(a, want, False)
    part = call(a, got, True)
    assert part() is None
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_deferred_call_checks_its_arguments_when_it_is_made(call, dtype):
    a = _arrays(dtype)
    # every output one column short of what the inputs say
    o = {k: np.ascontiguousarray(v[..., :-1]) for k, v in _outputs(dtype).items()}
    with pytest.raises(ValueError, match="shape"):
        call(a, o, True)


def test_a_part_holds_the_arrays_it_writes():
    import gc
    import weakref
    a, o = _arrays(np.float32), _outputs(np.float32)
    part = CALLS["input_grad"](a, o, True)
    dx = weakref.ref(o.pop("dx"))
    gc.collect()
    assert dx() is not None
    part()
    assert np.isfinite(dx()).all()


def test_then_runs_the_chained_parts_in_order_on_one_call(dtype):
    a = _arrays(dtype)
    want, got = _outputs(dtype), _outputs(dtype)
    CALLS["backward_weights"](a, want, False)
    CALLS["input_grad"](a, want, False)
    first = CALLS["backward_weights"](a, got, True)
    assert first.then(CALLS["input_grad"](a, got, True)) is first
    first()
    for name in ("dw_ih", "dw_hh", "db", "dx"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("defer", [False, True], ids=["called", "deferred"])
def test_a_call_that_cannot_allocate_its_buffers_raises_memory_error(
        call, defer, no_failing_blocks):
    a, o = _arrays(np.float32), _outputs(np.float32)
    part = call(a, o, defer) if defer else None
    _kernels._fail_next_blocks(1)
    with pytest.raises(MemoryError, match="cannot allocate"):
        part() if defer else call(a, o, False)
    assert _kernels._fail_next_blocks(0) == 0     # the failure was the call's
