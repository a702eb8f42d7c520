"""The drop-ins keep a plan between calls (what the rule decides from the module and
its weights, and the weights' NumPy views), and every way of changing the weights
invalidates it: a call after the change computes with the new weights, as stock does.
"""
import copy
import gc
import weakref

import pytest

torch = pytest.importorskip("torch")
import rnncore.torch as rt  # noqa: E402
from rnncore._torch_rule import PLAN_ATTR, _kept_plan, _runs_on_rnncore  # noqa: E402

T, B, K, H = 5, 2, 3, 4
CELLS = ["RNN", "LSTM", "GRU"]


def pair(cell, dtype=torch.float64):
    """(drop-in, stock): two layers, the same weights."""
    torch.manual_seed(0)
    stock = getattr(torch.nn, cell)(K, H, 2, dtype=dtype)
    ours = getattr(rt, cell)(K, H, 2, dtype=dtype)
    ours.load_state_dict(stock.state_dict())
    return ours, stock


def assert_same_call(ours, stock, x):
    """ours(x) equals stock(x) (output and final states) within float64 rounding."""
    y, h = ours(x)
    y_ref, h_ref = stock(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)


def x_for(dtype=torch.float64):
    return torch.randn(T, B, K, dtype=dtype, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cell", CELLS)
def test_a_plan_is_kept_between_calls_with_unchanged_weights(cell):
    ours, _ = pair(cell)
    ours(x_for())
    kept = _kept_plan(ours)
    ours(x_for())
    assert _kept_plan(ours) is kept


@pytest.mark.parametrize("cell", CELLS)
def test_an_optimiser_step_invalidates_the_plan(cell):
    ours, stock = pair(cell)
    x = x_for()
    for module in (ours, stock):
        module(x)[0].sum().backward()
        torch.optim.SGD(module.parameters(), lr=0.5).step()
    kept = _kept_plan(ours)
    assert_same_call(ours, stock, x)
    assert _kept_plan(ours) is not kept


@pytest.mark.parametrize("cell", CELLS)
def test_assigning_param_data_invalidates_the_plan(cell):
    ours, stock = pair(cell)
    x = x_for()
    ours(x)
    for module in (ours, stock):
        module.weight_hh_l1.data = torch.full_like(module.weight_hh_l1, 0.3)
    assert_same_call(ours, stock, x)


def test_a_square_weight_transposed_in_place_of_its_data_invalidates_the_plan():
    """``p.data = p.data.t()`` on a square weight keeps the tensor object, its version
    counter, data pointer, dtype and shape: only its strides tell the plan's NumPy view
    of the old layout from the new."""
    ours, stock = pair("RNN")
    x = x_for()
    ours(x)
    kept = _kept_plan(ours)
    for module in (ours, stock):
        module.weight_hh_l1.data = module.weight_hh_l1.data.t()
    assert not ours.weight_hh_l1.is_contiguous()
    assert_same_call(ours, stock, x)
    assert _kept_plan(ours) is not kept


def test_the_plan_is_kept_in_the_modules_dict_and_left_out_of_its_state():
    ours, _ = pair("RNN")
    ours(x_for())
    assert ours.__dict__[PLAN_ATTR] is _kept_plan(ours)
    assert PLAN_ATTR not in ours.__getstate__()
    assert _kept_plan(copy.deepcopy(ours)) is None


@pytest.mark.parametrize("cell", CELLS)
def test_moving_to_another_dtype_invalidates_the_plan(cell):
    ours, stock = pair(cell, torch.float32)
    ours(x_for(torch.float32))
    ours.to(torch.float64)
    stock.to(torch.float64)
    assert _runs_on_rnncore(ours, x_for())
    assert not _runs_on_rnncore(ours, x_for(torch.float32))
    assert_same_call(ours, stock, x_for())


@pytest.mark.parametrize("cell", CELLS)
def test_moving_to_another_dtype_releases_the_old_weights_at_once(cell):
    ours, _ = pair(cell, torch.float32)
    ours(x_for(torch.float32))
    old = weakref.ref(_kept_plan(ours).arrays()["weight_hh_l0"])    # the float32 memory
    ours.to(torch.float64)
    gc.collect()
    assert _kept_plan(ours) is None
    assert old() is None


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_invalidates_the_plan(cell):
    ours, stock = pair(cell)
    x = x_for()
    ours(x)
    kept = _kept_plan(ours)
    torch.manual_seed(5)
    other = getattr(torch.nn, cell)(K, H, 2, dtype=torch.float64)
    ours.load_state_dict(other.state_dict())
    assert_same_call(ours, other, x)
    assert _kept_plan(ours) is not kept


@pytest.mark.parametrize("cell", CELLS)
def test_a_new_parameter_object_invalidates_the_plan(cell):
    ours, stock = pair(cell)
    x = x_for()
    ours(x)
    for module in (ours, stock):
        module.weight_ih_l0 = torch.nn.Parameter(torch.ones_like(module.weight_ih_l0))
    assert_same_call(ours, stock, x)


@pytest.mark.parametrize("cell", CELLS)
def test_a_deep_copy_does_not_share_the_plan_of_the_original(cell):
    ours, stock = pair(cell)
    x = x_for()
    ours(x)
    twin = copy.deepcopy(ours)
    with torch.no_grad():
        twin.weight_hh_l0.mul_(2)        # the copy's own weights, not the original's
        stock.weight_hh_l0.mul_(2)
    assert_same_call(twin, stock, x)
    assert _kept_plan(twin) is not _kept_plan(ours)


def test_a_weight_of_another_dtype_sends_the_next_call_to_torch():
    ours, _ = pair("RNN")
    x = x_for()
    assert _runs_on_rnncore(ours, x)
    ours.weight_hh_l1.data = ours.weight_hh_l1.data.float()
    assert not _runs_on_rnncore(ours, x)


def test_the_plan_follows_a_module_setting_that_changes_the_rule():
    ours, _ = pair("RNN")
    x = x_for()
    assert _runs_on_rnncore(ours, x)
    ours.mode = "LSTM"                   # not RNN_TANH or RNN_RELU: torch's
    assert not _runs_on_rnncore(ours, x)


@pytest.fixture
def saved_states(monkeypatch):
    """Weak references to the states array of every record a forward returns (the
    record itself has no weak-reference slot)."""
    import weakref

    refs = []
    forward = rt.functional.forward

    def spied(*args, **kwargs):
        y, h_n, record = forward(*args, **kwargs)
        refs.append(weakref.ref(record.states[0][0]))
        return y, h_n, record

    monkeypatch.setattr(rt.functional, "forward", spied)
    return refs


@pytest.mark.parametrize("cell", CELLS)
def test_backward_frees_the_record_while_the_outputs_live_on(cell, saved_states):
    ours, _ = pair(cell)
    y, _ = ours(x_for())
    y.sum().backward()
    assert y.grad_fn is not None
    assert saved_states[0]() is None      # as stock torch frees its saved tensors


@pytest.mark.parametrize("cell", CELLS)
def test_retain_graph_keeps_the_record_for_a_second_backward(cell, saved_states):
    ours, stock = pair(cell)
    x = x_for()
    for module in (ours, stock):
        y, _ = module(x)
        y.sum().backward(retain_graph=True)
        y.sum().backward()
    assert saved_states[0]() is None
    for name, w in stock.named_parameters():
        torch.testing.assert_close(getattr(ours, name).grad, w.grad)


class _Logged(torch.Tensor):
    """A __torch_function__ tensor that records every torch function asked of it."""

    calls = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_torch_function_weight_runs_on_torch_and_is_not_asked_for_its_data():
    ours, stock = pair("RNN")
    x = x_for()
    ours(x)
    for module in (ours, stock):
        module.weight_hh_l0 = torch.nn.Parameter(
            module.weight_hh_l0.detach().as_subclass(_Logged))
    _Logged.calls.clear()
    assert not _runs_on_rnncore(ours, x)
    assert not any("data_ptr" in name or "_version" in name for name in _Logged.calls)
    kept = _kept_plan(ours)
    assert kept is None or all(w is not ours.weight_hh_l0 for w in kept._weights)
