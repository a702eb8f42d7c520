"""RNNModel.save and RNNModel.load: the previous checkpoint survives a failed save, load
reads the name save wrote, and a crafted file is rejected before anything is allocated."""
import errno
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from rnncore import RNNModel


def model_of(seed, **kwargs):
    return RNNModel(5, 4, vocab_size=7, seed=seed, **kwargs)


def assert_same_params(model, want):
    assert model.config() == want.config()
    for key in want.params:
        np.testing.assert_array_equal(model.params[key], want.params[key])


# ---------------------------------------------------------------- the name
@pytest.mark.parametrize("name", ["ckpt", "ckpt.npz", "model.checkpoint"])
def test_save_writes_exactly_the_path_given_and_load_reads_it(tmp_path, name):
    model = model_of(0, num_layers=2, bidirectional=True)
    model.save(tmp_path / name)
    assert os.listdir(tmp_path) == [name]
    assert_same_params(RNNModel.load(tmp_path / name), model)
    assert_same_params(RNNModel.load(str(tmp_path / name)), model)


def test_save_and_load_take_binary_file_objects():
    model = model_of(0)
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    assert_same_params(RNNModel.load(buffer), model)


def test_save_through_a_symbolic_link_replaces_the_file_it_points_to(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"")
    (tmp_path / "link.npz").symlink_to("real.npz")
    model = model_of(0)
    model.save(tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink()
    assert_same_params(RNNModel.load(tmp_path / "real.npz"), model)


def test_a_deflated_checkpoint_loads(tmp_path):
    model = model_of(0)
    np.savez_compressed(tmp_path / "c.npz", __config__=np.array(json.dumps(model.config())),
                        **model.params)
    assert_same_params(RNNModel.load(tmp_path / "c.npz"), model)


# ---------------------------------------------------------------- a failed save
def fail_midway(monkeypatch, after_arrays=2):
    """np.savez's array writer writes half of one array, then the disk is full."""
    real = np.lib.format.write_array
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) <= after_arrays:
            return real(fp, array, *args, **kwargs)
        buffer = io.BytesIO()
        real(buffer, array, *args, **kwargs)
        fp.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", write_array)


def test_a_save_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    old = model_of(0)
    old.save(path)
    fail_midway(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        model_of(1).save(path)
    monkeypatch.undo()
    assert_same_params(RNNModel.load(path), old)
    assert os.listdir(tmp_path) == ["ckpt.npz"]          # the temporary file is gone


def test_a_save_killed_midway_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    old = model_of(0)
    old.save(path)
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from rnncore import RNNModel
        real, calls = np.lib.format.write_array, []
        def write_array(fp, array, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                fp.write(b"half an array")
                fp.flush()
                os._exit(9)                                # no cleanup runs
            real(fp, array, *args, **kwargs)
        np.lib.format.write_array = write_array
        RNNModel(5, 4, vocab_size=7, seed=1).save({str(path)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert done.returncode == 9
    assert_same_params(RNNModel.load(path), old)
    leftovers = sorted(set(os.listdir(tmp_path)) - {"ckpt.npz"})
    assert all(name.startswith(".ckpt.npz.") and name.endswith(".tmp")
               for name in leftovers), leftovers


def test_save_syncs_the_data_before_the_rename_and_the_directory_after(tmp_path,
                                                                       monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda *a: (events.append("replace"),
                                                   real_replace(*a)))
    model_of(0).save(tmp_path / "ckpt.npz")
    expected = ["fsync", "replace", "fsync"] if os.name == "posix" else ["fsync", "replace"]
    assert events == expected


# ---------------------------------------------------------------- crafted files
def npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def npy_header(shape, dtype=np.float32):
    """An .npy header alone, declaring ``shape``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": shape})
    return buffer.getvalue()


def checkpoint(path, config=None, drop=(), **entries):
    """What save writes for a small model, with the config and entries replaced."""
    model = model_of(0)
    config = model.config() if config is None else config
    members = {"__config__": npy(np.array(json.dumps(config))),
               **{key: npy(value) for key, value in model.params.items()}}
    members.update(entries)
    with zipfile.ZipFile(path, "w") as archive:
        for key, data in members.items():
            if key not in drop:
                archive.writestr(key + ".npy", data)
    return path


def config_with(**changes):
    config = model_of(0).config()
    config.update(changes)
    return {k: v for k, v in config.items() if v != "<drop>"}


def with_a_zip_bomb(path):
    """A checkpoint plus an entry of 64 MB of zeros, deflated to some 64 KB."""
    checkpoint(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("junk.npy", "w", force_zip64=True) as member:
            member.write(npy_header((16, 1 << 20)))
            for _ in range(16):
                member.write(bytes(4 << 20))
    return path


def with_sizes_beyond_the_file(path):
    """The zip directory says V holds a gigabyte: more than the file does."""
    checkpoint(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    while True:                                  # the central directory record of V.npy
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_length] == b"V.npy":
            break
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<II", data, at + 20, 1 << 30, 1 << 30)
    path.write_bytes(bytes(data))
    return path


CRAFTED = {
    # name: (make the file in a path, ValueError message)
    "config claims hidden_size 3000 with arrays of 4": (
        lambda p: checkpoint(p, config_with(hidden_size=3000)),
        r"weight_ih_l0 must have shape \(3000, 4\) by its __config__; got \(4, 4\)"),
    "config claims num_layers 100000": (
        lambda p: checkpoint(p, config_with(num_layers=100_000)),
        r"num_layers=100000, 400000 recurrent arrays, but the file holds 7 arrays"),
    "a header claims a huge shape": (
        lambda p: checkpoint(p, V=npy_header((100_000, 10_000)) + bytes(80)),
        r"'V.npy' has a header declaring shape \(100000, 10000\) of float32 "
        r"\(4000000000 bytes of data\) but holds 80 bytes of data"),
    "an entry holds more than its header declares": (
        lambda p: checkpoint(p, c=npy(np.zeros(5, np.float32)) + bytes(1000)),
        r"'c.npy' has a header declaring shape \(5,\) .* but holds 1020 bytes of data"),
    "the zip directory claims more than the file holds": (
        with_sizes_beyond_the_file, r"'V.npy' claims 1073741824 bytes, more than"),
    "a zip bomb under an unknown name": (
        with_a_zip_bomb, r"missing \[\], unexpected \['junk'\]"),
    "a config key unknown": (
        lambda p: checkpoint(p, config_with(dropout=0.5)),
        r"__config__ keys do not match RNNModel's arguments: missing \[\], "
        r"unknown \['dropout'\]"),
    "config keys missing": (
        lambda p: checkpoint(p, config_with(task="<drop>", dtype="<drop>")),
        r"missing \['dtype', 'task'\], unknown \[\]"),
    "a config value of the wrong type": (
        lambda p: checkpoint(p, config_with(hidden_size="4")),
        r"__config__\['hidden_size'\] must be a positive integer; got '4'"),
    "a config that is not an object": (
        lambda p: checkpoint(p, [1, 2]), r"__config__ must be a JSON object; got list"),
    "a missing array": (
        lambda p: checkpoint(p, drop=("bias_hh_l0",)),
        r"missing \['bias_hh_l0'\], unexpected \[\]"),
    "an array of objects": (
        lambda p: checkpoint(p, c=npy(np.array([None] * 5, dtype=object))),
        r"'c.npy' must hold plain numbers; got dtype object"),
    "an array of complex numbers": (
        lambda p: checkpoint(p, c=npy(np.zeros(5, complex))),
        r"c must hold real numbers; got dtype complex128"),
    "an entry that is not .npy": (
        lambda p: (zipfile.ZipFile(p, "w").writestr("notes.txt", "hi"), p)[1],
        r"entry 'notes.txt' is not an .npy array"),
    "not a zip file": (
        lambda p: (p.write_bytes(b"\x93NUMPY not really"), p)[1], r"not an .npz \(zip\) file"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_load_rejects_a_crafted_file_before_allocating(tmp_path, name):
    make, message = CRAFTED[name]
    path = make(tmp_path / "crafted.npz")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=message):
            RNNModel.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MB allocated before the error"
    assert time.perf_counter() - start < 2
