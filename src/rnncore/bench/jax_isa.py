"""JAX's matrix products on one instruction set, as on a CPU that has no more.

XLA's ``--xla_cpu_max_isa`` limits the code XLA compiles, but XLA hands its dot products
to YNNPACK (jaxlib 0.10 does), which picks its kernels from the CPU's own feature bits
(cpuinfo) and has no switch: under ``--xla_cpu_max_isa=AVX2`` on an AVX-512 CPU a JAX
matmul still runs ``ynn::dot_fp32_..._avx512``. On a CPU without AVX-512 it would run
``ynn::dot_fp32_..._fma3``.

YNNPACK reads those bits once, into the static ``flags`` of
``ynn::get_supported_arch_flags()`` in ``libjax_common.so``, and asks that function for
them whenever it picks a kernel. :func:`limit_ynnpack` lets YNNPACK compute them (one
small jitted product), then clears the bits beyond the instruction set in that static,
found through the library's symbol table, before the benchmark compiles anything: from
then on YNNPACK picks the kernels of a CPU that has no more. Bits 0-6 of YNNPACK's
``arch_flag`` are sse2, ssse3, sse41, avx, f16c, avx2 and fma3 in every version that
has them; every bit above is AVX-512 or AMX.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct

__all__ = ["elf_symbol_values", "limit_ynnpack", "ynnpack_flags"]

_FLAGS = "_ZZN3ynn24get_supported_arch_flagsEvE5flags"
_GUARD = "_ZGVZN3ynn24get_supported_arch_flagsEvE5flags"
_LIBRARY = "libjax_common.so"
# YNNPACK's arch_flag bits an instruction set keeps: sse2..fma3, or sse2, ssse3, sse41.
_KEEP = {"avx2": 0x7F, "baseline": 0x07}
_SHT_SYMTAB = 2


def elf_symbol_values(path: str, names) -> dict[str, int]:
    """The values (addresses relative to the load base) of ``names`` in the symbol
    table (``.symtab``, local symbols included) of the 64-bit little-endian ELF file
    ``path``.

    Parameters
    ----------
    path : str
        A shared object.
    names : iterable of str
        Symbol names, mangled.

    Returns
    -------
    dict of str to int
        The names found; a stripped file, or one without them, gives fewer or none.
    """
    wanted = {name.encode() for name in names}
    found = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:5] != b"\x7fELF\x02" or m[5] != 1:
            raise ValueError(f"path must be a 64-bit little-endian ELF file; got {path!r}")
        shoff, = struct.unpack_from("<Q", m, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", m, 0x3A)
        # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
        sections = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize)
                    for i in range(shnum)]
        for _, kind, _, _, offset, size, link, _, _, entsize in sections:
            if kind != _SHT_SYMTAB:
                continue
            strings = sections[link][4]
            for at in range(offset, offset + size, entsize):
                name, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", m, at)
                start = strings + name
                symbol = m[start:m.find(b"\0", start)]
                if symbol in wanted:
                    found[symbol.decode()] = value
    return found


def _loaded(library: str) -> tuple[str, int] | None:
    """The path and load base of ``library`` in this process, from /proc/self/maps."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                fields = line.split()
                if (len(fields) >= 6 and os.path.basename(fields[5]) == library
                        and int(fields[2], 16) == 0):
                    return fields[5], int(fields[0].split("-")[0], 16)
    except OSError:
        return None
    return None


def _flags_addresses():
    """The addresses of YNNPACK's flags and of their initialisation guard, or a reason
    why there are none."""
    lib = _loaded(_LIBRARY)
    if lib is None:
        return None, f"{_LIBRARY} is not loaded"
    path, base = lib
    symbols = elf_symbol_values(path, (_FLAGS, _GUARD))
    if len(symbols) < 2:
        return None, f"{_LIBRARY} has no symbol for YNNPACK's CPU flags"
    return (base + symbols[_FLAGS], base + symbols[_GUARD]), None


def ynnpack_flags() -> int | None:
    """YNNPACK's CPU feature bits as this process's jaxlib holds them, or None if they
    cannot be found or are not computed yet."""
    addresses, _ = _flags_addresses()
    if addresses is None or not ctypes.c_uint8.from_address(addresses[1]).value:
        return None
    return ctypes.c_uint64.from_address(addresses[0]).value


def limit_ynnpack(isa: str) -> str:
    """Make JAX's YNNPACK pick the kernels of a CPU with no more than ``isa``.

    Call it after ``import jax`` and before compiling what is timed.

    Parameters
    ----------
    isa : {"avx2", "baseline"}
        The instruction set.

    Returns
    -------
    str
        What was done, for the benchmark's header: the flags before and after, or why
        they were left as they are.
    """
    if isa not in _KEEP:
        raise ValueError(f"isa must be 'avx2' or 'baseline'; got {isa!r}")
    import jax
    import jax.numpy as jnp

    a = jnp.ones((64, 64), jnp.float32)          # YNNPACK computes its flags here
    jax.jit(lambda a, b: a @ b)(a, a).block_until_ready()
    addresses, reason = _flags_addresses()
    if addresses is None:
        return f"YNNPACK not limited ({reason}): its products may run more than {isa}"
    flags, guard = addresses
    if not ctypes.c_uint8.from_address(guard).value:
        return (f"YNNPACK not limited (its CPU flags were not computed by a product): "
                f"its products may run more than {isa}")
    value = ctypes.c_uint64.from_address(flags)
    before = value.value
    value.value = before & _KEEP[isa]
    return f"YNNPACK {isa} (its CPU flags {before:#x} -> {value.value:#x})"
