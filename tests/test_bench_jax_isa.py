"""Under ``rnncore-bench --isa``, JAX's matrix products run the kernels of a CPU with no
more than that instruction set: YNNPACK, which XLA's flag does not reach, has the CPU
feature bits beyond it cleared (rnncore.bench.jax_isa)."""
import ctypes
import json
import os
import subprocess
import sys

import pytest

from rnncore.bench.jax_isa import _loaded, elf_symbol_values, limit_ynnpack

AVX512_AND_ABOVE = ~0x7F


def test_a_symbol_value_plus_the_load_base_is_where_the_loader_put_it():
    kernels = pytest.importorskip("rnncore._kernels")
    name = os.path.basename(kernels.__file__)
    path, base = _loaded(name)
    symbol = "PyInit__kernels"
    address = ctypes.cast(getattr(ctypes.CDLL(path), symbol), ctypes.c_void_p).value
    assert base + elf_symbol_values(path, [symbol])[symbol] == address


def test_symbols_a_file_lacks_are_left_out():
    kernels = pytest.importorskip("rnncore._kernels")
    assert elf_symbol_values(kernels.__file__, ["no_such_symbol_here"]) == {}


def test_a_file_that_is_not_elf_is_a_value_error(tmp_path):
    path = tmp_path / "not.so"
    path.write_bytes(b"#!/bin/sh\n" * 10)
    with pytest.raises(ValueError, match="path must be a 64-bit little-endian ELF file"):
        elf_symbol_values(str(path), ["x"])


def test_an_unknown_isa_is_a_value_error():
    with pytest.raises(ValueError, match="isa must be 'avx2' or 'baseline'; got 'avx'"):
        limit_ynnpack("avx")


_CHILD = """
import json, numpy as np, jax, jax.numpy as jnp
from rnncore.bench import isa_env, jax_isa
jax.jit(lambda a, b: a @ b)(jnp.ones((64, 64)), jnp.ones((64, 64))).block_until_ready()
before = jax_isa.ynnpack_flags()
isa_env.limit_jax()
a = np.random.default_rng(0).standard_normal((96, 80)).astype(np.float32)
product = np.asarray(jax.jit(lambda a: a @ a.T)(jnp.asarray(a)))
print(json.dumps({"before": before, "after": jax_isa.ynnpack_flags(),
                  "report": isa_env.library_isas().get("jax"),
                  "error": float(np.abs(product - a @ a.T).max())}))
"""


def _child(isa):
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k != "RNNCORE_BENCH_ISA_ENV"}
    if isa:
        env["RNNCORE_BENCH_ISA_ENV"] = isa
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["before"] is None:
        pytest.skip("this jaxlib's YNNPACK flags cannot be found")
    return out


def _has_avx512():
    kernels = pytest.importorskip("rnncore._kernels")
    if "avx512" not in kernels.supported_isas():
        pytest.skip("this CPU has no AVX-512: YNNPACK runs no more than AVX2 anyway")


def test_a_forced_avx2_clears_ynnpacks_avx512_bits_and_products_stay_right():
    _has_avx512()
    out = _child("avx2")
    assert out["before"] & AVX512_AND_ABOVE                 # this CPU has them
    assert out["after"] == out["before"] & 0x7F
    assert out["report"] == f"YNNPACK avx2 (its CPU flags {out['before']:#x} -> " \
                            f"{out['after']:#x})"
    assert out["error"] < 1e-3


def test_without_a_forced_isa_jax_keeps_its_cpu_flags():
    _has_avx512()
    out = _child(None)
    assert out["after"] == out["before"]
    assert out["report"] is None
