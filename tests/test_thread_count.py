"""The default thread count: ``RNNCORE_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the
cores this process may use (the cores of its affinity's CPUs, SMT siblings counted once),
capped by its control group's CPU quota (a container's ``--cpus``), read afresh by
``set_num_threads(None)``.

The control-group and topology files are read from a tree each test builds
(``_PROC_CGROUP``, ``_CGROUP_ROOT`` and, with the ``cpu_topology`` fixture, ``_SYS_CPU``
pointed at it), so the tests do not
depend on the machine's own groups or cores. Without topology files, each CPU counts.
"""
import os

import pytest

import rnncore
from rnncore import _parallel

AFFINITY = 8


@pytest.fixture
def machine(tmp_path, monkeypatch, cpu_topology):
    """A process with 8 CPUs in its affinity, no thread variables, and a control-group
    tree and a CPU-topology tree (empty) under tmp_path: ``machine(proc_cgroup,
    {file: content})`` writes the control groups and returns the default thread count
    read from them."""
    for var in ("RNNCORE_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(AFFINITY)),
                        raising=False)
    root = tmp_path / "cgroup"
    root.mkdir()
    proc = tmp_path / "proc_self_cgroup"
    monkeypatch.setattr(_parallel, "_PROC_CGROUP", str(proc), raising=False)
    monkeypatch.setattr(_parallel, "_CGROUP_ROOT", str(root), raising=False)

    def read(proc_cgroup, files):
        proc.write_text(proc_cgroup)
        for name, content in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        rnncore.set_num_threads(None)
        return rnncore.get_num_threads()

    yield read
    monkeypatch.undo()
    rnncore.set_num_threads(None)


def test_without_a_quota_the_default_is_the_affinity(machine):
    assert machine("0::/\n", {}) == AFFINITY


def test_a_cgroup_v2_quota_caps_the_default_rounded_up(machine):
    assert machine("0::/docker/c1\n", {"docker/c1/cpu.max": "150000 100000\n"}) == 2


def test_a_cgroup_v2_quota_of_max_leaves_the_affinity(machine):
    assert machine("0::/docker/c1\n", {"docker/c1/cpu.max": "max 100000\n"}) == AFFINITY


def test_the_least_quota_of_the_group_and_its_ancestors_counts(machine):
    files = {"slice/cpu.max": "300000 100000\n", "slice/app/cpu.max": "max 100000\n"}
    assert machine("0::/slice/app\n", files) == 3


def test_inside_a_container_its_own_group_is_the_root(machine):
    # /proc/self/cgroup names the host's path, which the container's tree lacks
    assert machine("0::/docker/c1\n", {"cpu.max": "100000 100000\n"}) == 1


def test_a_cgroup_v1_quota_caps_the_default(machine):
    files = {"cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "250000\n",
             "cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000\n"}
    assert machine("4:memory:/docker/c1\n3:cpu,cpuacct:/docker/c1\n", files) == 3


def test_a_cgroup_v1_quota_of_minus_one_leaves_the_affinity(machine):
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert machine("1:cpu:/\n", files) == AFFINITY


def test_a_quota_above_the_affinity_leaves_the_affinity(machine):
    assert machine("0::/\n", {"cpu.max": "1600000 100000\n"}) == AFFINITY


@pytest.mark.parametrize("content", ["", "garbage\n", "150000\n", "0 100000\n",
                                     "150000 0\n"])
def test_an_unreadable_quota_leaves_the_affinity(machine, content):
    assert machine("0::/\n", {"cpu.max": content}) == AFFINITY


def test_without_a_proc_cgroup_file_the_default_is_the_affinity(machine):
    rnncore.set_num_threads(None)
    assert rnncore.get_num_threads() == AFFINITY


@pytest.mark.parametrize("var", ["RNNCORE_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_thread_variable_outranks_the_quota(machine, monkeypatch, var):
    monkeypatch.setenv(var, "5")
    assert machine("0::/\n", {"cpu.max": "100000 100000\n"}) == 5


def test_rnncore_num_threads_outranks_omp_num_threads(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("RNNCORE_NUM_THREADS", "6")
    assert machine("0::/\n", {}) == 6


def test_set_num_threads_outranks_the_default(machine):
    machine("0::/\n", {"cpu.max": "100000 100000\n"})
    rnncore.set_num_threads(4)
    assert rnncore.get_num_threads() == 4


# 4 cores, two CPUs each, numbered as Linux numbers them: i and i + 4 share core i
SMT = {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(AFFINITY)}


@pytest.mark.parametrize("name", ["core_cpus_list", "thread_siblings_list"])
def test_smt_siblings_count_as_one_core(machine, cpu_topology, name):
    cpu_topology(SMT, name)
    assert machine("0::/\n", {}) == 4


def test_cores_without_smt_count_each_cpu(machine, cpu_topology):
    cpu_topology({cpu: str(cpu) for cpu in range(AFFINITY)})
    assert machine("0::/\n", {}) == AFFINITY


def test_only_the_cores_of_the_affinity_count(machine, cpu_topology, monkeypatch):
    # CPUs 0, 4 (one core) and 1 (half of another) of 8: two cores
    cpu_topology(SMT)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 4})
    assert machine("0::/\n", {}) == 2


def test_a_cpu_without_topology_leaves_the_affinity(machine, cpu_topology):
    cpu_topology({cpu: SMT[cpu] for cpu in range(AFFINITY - 1)})
    assert machine("0::/\n", {}) == AFFINITY


def test_a_quota_caps_the_cores(machine, cpu_topology):
    cpu_topology(SMT)
    assert machine("0::/\n", {"cpu.max": "250000 100000\n"}) == 3


def test_a_thread_variable_outranks_the_cores(machine, cpu_topology, monkeypatch):
    cpu_topology(SMT)
    monkeypatch.setenv("RNNCORE_NUM_THREADS", "8")
    assert machine("0::/\n", {}) == 8
