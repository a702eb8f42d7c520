"""How the benchmark times its calls: each block of calls starts once the threads the
previous block left running have stopped (rnncore.bench.timing.wait_until_quiet), and a
case of n threads is pinned to the n least busy CPUs on cores of their own
(rnncore.bench.timing.pick_cpus)."""
import threading
import time

import pytest

from rnncore.bench.timing import measure, pick_cpus, wait_until_quiet

# 2 cores of two CPUs each, numbered as a VM may number them: 0 and 1 share core 0
PAIRS = {0: "0-1", 1: "0-1", 2: "2-3", 3: "2-3"}


def _burn(seconds: float) -> None:
    """Keep one CPU busy for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _Leaves:
    """A call that returns at once and leaves a thread of its own working ``seconds``
    longer, as a library that frees its buffers on a runtime thread does."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.threads = []

    def __call__(self):
        t = threading.Thread(target=_burn, args=(self.seconds,))
        t.start()
        self.threads.append(t)

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)


def test_no_timed_call_starts_while_the_previous_blocks_thread_still_works():
    leaves = _Leaves(0.06)
    overlapped = []

    def timed():
        overlapped.append(leaves.running())

    measure({"leaves": leaves, "timed": timed}, budget=1e-6, rounds=3)
    # the blocks alternate, so every block of `timed` follows one of `leaves`
    assert len(overlapped) >= 3 + 2          # its warm-up calls, then one a round
    assert not any(overlapped[2:])
    for t in leaves.threads:
        t.join()


def test_measure_reports_each_blocks_wait():
    leaves = _Leaves(0.05)
    waits = []
    measure({"leaves": leaves, "other": lambda: None}, budget=1e-6, rounds=2, waits=waits)
    for t in leaves.threads:
        t.join()
    assert len(waits) == 2 * 2               # one per block: two callables, two rounds
    assert max(waits) >= 0.03                # the block after `leaves` waited for it


def test_wait_gives_up_after_its_limit_when_a_thread_never_stops():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        waited = wait_until_quiet(limit=0.05)
    finally:
        stop.set()
        t.join()
    assert 0.05 <= waited < 1.0


def test_wait_returns_within_a_few_slices_when_nothing_else_runs():
    assert wait_until_quiet(limit=5.0) < 1.0


def test_two_threads_are_pinned_to_two_cores_not_two_siblings(cpu_topology):
    cpu_topology(PAIRS)
    assert pick_cpus({0, 1, 2, 3}, {}, 2) == [0, 2]


def test_the_least_busy_cpu_of_each_core_is_pinned(cpu_topology):
    cpu_topology(PAIRS)
    assert pick_cpus({0, 1, 2, 3}, {0: 0.9, 1: 0.1, 2: 0.2, 3: 0.5}, 2) == [1, 2]


def test_siblings_are_pinned_once_every_core_has_a_thread(cpu_topology):
    cpu_topology(PAIRS)
    assert pick_cpus({0, 1, 2, 3}, {0: 0.9, 1: 0.1, 2: 0.2, 3: 0.5}, 3) == [1, 2, 3]


@pytest.mark.parametrize("topology", [{}, {cpu: str(cpu) for cpu in range(4)}],
                         ids=["unreadable", "no-smt"])
def test_without_smt_the_least_busy_cpus_are_pinned(cpu_topology, topology):
    cpu_topology(topology)
    assert pick_cpus({0, 1, 2, 3}, {0: 0.9, 1: 0.1, 2: 0.2, 3: 0.5}, 2) == [1, 2]
