"""Hostile .npz files: network files (Network.load), fitted BCI decoders (load_decoder) and Lava reference
files (spikeloop conformance).

Every reader goes through pipeline.core.npz, which reads each member's .npy header before allocating and
refuses data beyond a budget. The contract checked here: a file either loads or raises one ValueError
whose message names the file, whatever its arrays (hypothesis: keys replaced by arrays of any dtype and
shape, keys removed) or its bytes (seeded corpus: flips, truncations, zip bombs) - never a traceback of
another kind, never a large allocation.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.npz import NpzError, load_npz, load_npy
from pipeline.decoders.bci.features import BCIInputError
from pipeline.decoders.bci.model_io import load_decoder, save_decoder
from pipeline.decoders.bci.wiener import WienerDecoder
from pipeline.snn import Dense, Network, Population
from pipeline.snn.learning.rule import stdp_loihi
from pipeline.snn.network import LoihiLIF

ROOT = Path(__file__).resolve().parent.parent


def npy_bytes(array: np.ndarray | None = None, header: dict | None = None, data: bytes | None = None) -> bytes:
    """An .npy member: a 1.0 header (``header`` overrides the array's descr/shape) + data."""
    buffer = io.BytesIO()
    if array is not None and header is None and data is None:
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + (data or b"")


def write_zip(path: Path, members: dict[str, bytes | tuple[bytes, bytes, int]]) -> Path:
    """An .npz of raw members (deflated); a (head, chunk, repeat) member is written streamed: head, then
    chunk ``repeat`` times."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in members.items():
            with archive.open(name, "w", force_zip64=True) as handle:
                if isinstance(content, tuple):
                    head, chunk, repeat = content
                    handle.write(head)
                    for _ in range(repeat):
                        handle.write(chunk)
                else:
                    handle.write(content)
    return path


def saved_network(path: Path) -> dict[str, np.ndarray]:
    """A small network with a learning rule saved to ``path``; its arrays (as np.load reads them)."""
    rng = np.random.default_rng(0)
    network = Network(n_inputs=6, populations=[Population("out", 3, LoihiLIF(du=100, dv=100, vth=50))],
                      projections=[Dense(name="d", source="input", target="out",
                                         weights=rng.integers(-20, 20, size=(3, 6)),
                                         learning=stdp_loihi(0.25, 1, -1, 10, 8, t_epoch=2, rng_seed=1))])
    network.save(path)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def assert_refused_or_loaded(load, path: Path, errors=(ValueError,)) -> None:
    try:
        load(path)
    except errors as exc:
        assert str(path) in str(exc), exc
        assert "\n" not in str(exc)


# -- the bounded reader itself -------------------------------------------------------------------------

def test_reader_matches_numpy_on_every_plain_dtype_and_layout(tmp_path):
    arrays = dict(i=np.arange(10), f=np.asfortranarray(np.arange(12.0).reshape(3, 4)), s=np.array("dense"),
                  rec=np.zeros(3, dtype=[("t", "<i8"), ("x", "<i2")]), empty=np.zeros((0, 5)),
                  u=np.array(["ab", "c"]), b=np.array([True, False]), big=np.arange(6, dtype=">u4").reshape(2, 3))
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    got = load_npz(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as ref:
        for key in arrays:
            assert got[key].dtype == ref[key].dtype and np.array_equal(got[key], ref[key]), key
    np.save(tmp_path / "f.npy", arrays["f"])
    assert np.array_equal(load_npy(tmp_path / "f.npy"), arrays["f"])


def test_zip_bomb_is_refused_before_decompressing(tmp_path):
    """600 MiB of zeros in a ~0.6 MB member (the issue's 3.1 MB file reached 3.2 GB of RSS): refused from its
    header, and nothing near the size is allocated."""
    size = 600 << 20
    header = {"descr": "|i1", "fortran_order": False, "shape": (size,)}
    path = write_zip(tmp_path / "bomb.npz", {"format_version.npy": npy_bytes(np.array(1)),
                                             "proj0_weights.npy": (npy_bytes(header=header), bytes(1 << 20), 600)})
    assert path.stat().st_size < 5 << 20
    tracemalloc.start()
    with pytest.raises(ValueError, match="bomb.npz: member 'proj0_weights.npy': array of shape"):
        Network.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_header_shape_beyond_the_data_is_truncation_not_allocation(tmp_path):
    header = {"descr": "<i8", "fortran_order": False, "shape": (1000,)}
    path = write_zip(tmp_path / "short.npz", {"a.npy": npy_bytes(header=header, data=bytes(80))})
    with pytest.raises(NpzError, match=r"short.npz: member 'a.npy': truncated: 80 of 8,000 data bytes"):
        load_npz(path)
    header = {"descr": "<i8", "fortran_order": False, "shape": (2**40, 2**40)}
    path = write_zip(tmp_path / "huge.npz", {"a.npy": npy_bytes(header=header)})
    with pytest.raises(NpzError, match="needs 9,671,406,556,917,033,397,649,408 bytes"):
        load_npz(path)


def test_object_arrays_and_bad_headers_are_refused(tmp_path):
    path = write_zip(tmp_path / "obj.npz", {"a.npy": npy_bytes(header={"descr": "|O", "fortran_order": False,
                                                                          "shape": (2,)}, data=b"\x80\x04")})
    with pytest.raises(NpzError, match="Python objects"):
        load_npz(path)
    path = tmp_path / "complex.npz"
    np.savez(path, w=np.array([1 + 2j, 3 - 1j]))
    with pytest.raises(NpzError, match=r"complex.npz: member 'w.npy': complex numbers \(dtype complex128\)"):
        load_npz(path)
    path = write_zip(tmp_path / "hdr.npz", {"a.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': os.system}\n"})
    with pytest.raises(NpzError, match="hdr.npz: member 'a.npy': bad .npy header"):
        load_npz(path)
    path = write_zip(tmp_path / "v9.npz", {"a.npy": b"\x93NUMPY\x09\x00" + bytes(10)})
    with pytest.raises(NpzError, match="not a .npy array|format 9.0"):
        load_npz(path)


def test_budget_spans_all_members(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(600, dtype=np.uint8), b=np.zeros(600, dtype=np.uint8))
    assert len(load_npz(tmp_path / "two.npz", max_bytes=1200)) == 2
    with pytest.raises(NpzError, match="more than the 400 left"):
        load_npz(tmp_path / "two.npz", max_bytes=1000)


# -- network files -------------------------------------------------------------------------------------

def test_two_d_format_version_and_odd_learning_names_are_one_line_errors(tmp_path):
    arrays = saved_network(tmp_path / "ok.npz")
    assert Network.load(tmp_path / "ok.npz").projections[0].learning is not None
    cases = {
        "format_version": [np.array([[1, 2]]), np.array([[1]]), np.array("one"), np.array([])],
        "proj0_learning_class": [np.array("os:system"), np.array(""), np.array("pipeline.snn.x:y:z"),
                                 np.array("A" * 10_000), np.array([["LearningRule"]]), np.array(1.5),
                                 np.array("builtins:eval")],
    }
    for key, values in cases.items():
        for i, value in enumerate(values):
            path = tmp_path / f"{key}{i}.npz"
            np.savez(path, **{**arrays, key: value})
            with pytest.raises(ValueError) as info:
                Network.load(path)
            assert str(path) in str(info.value) and "\n" not in str(info.value), (key, value)


ARRAY = st.one_of(
    st.builds(np.array, st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=20), st.booleans())),
    st.builds(lambda shape, dtype: np.zeros(shape, dtype=dtype),
              st.lists(st.integers(0, 4), max_size=3).map(tuple),
              st.sampled_from(["<i8", "<i2", "|u1", "<f8", "|b1", "<U3", "<c16"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_network_file_with_any_arrays_loads_or_names_the_file(tmp_path, data):
    """Replace, add or remove arrays of a valid network file: Network.load returns a network or raises one
    ValueError naming the file."""
    path = tmp_path / "net.npz"
    arrays = saved_network(path)
    keys = sorted(arrays)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["replace", "remove", "add"]))
        key = data.draw(st.sampled_from(keys))
        if action == "remove":
            arrays.pop(key, None)
        else:
            arrays[key if action == "replace" else data.draw(st.text(min_size=1, max_size=30).filter(
                lambda s: "/" not in s and "\x00" not in s))] = data.draw(ARRAY)
    np.savez(path, **arrays)
    assert_refused_or_loaded(Network.load, path)


def test_network_file_bytes_seeded_corpus(tmp_path):
    """400 byte-level mutants of a compressed network file (flips, truncations, splices)."""
    saved_network(tmp_path / "ok.npz")
    raw = (tmp_path / "ok.npz").read_bytes()
    rng = np.random.default_rng(14)
    for i in range(400):
        mutant = bytearray(raw)
        kind = i % 3
        if kind == 0:
            for pos in rng.integers(0, len(mutant), size=rng.integers(1, 8)):
                mutant[pos] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            mutant = mutant[: int(rng.integers(0, len(mutant)))]
        else:
            a, b = sorted(rng.integers(0, len(mutant), size=2))
            mutant[a:b] = rng.bytes(b - a)
        path = tmp_path / f"m{i}.npz"
        path.write_bytes(bytes(mutant))
        assert_refused_or_loaded(Network.load, path)


# -- BCI decoders and Lava reference files --------------------------------------------------------------

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_decoder_file_with_any_arrays_loads_or_names_the_file(tmp_path, data):
    rng = np.random.default_rng(0)
    decoder = WienerDecoder(bin_us=50_000)
    decoder.fit(rng.poisson(2, size=(200, 5)).astype(float), rng.normal(size=(200, 2)))
    path = save_decoder(decoder, tmp_path / "w.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = data.draw(st.sampled_from(sorted(arrays)))
    if data.draw(st.booleans()):
        arrays[key] = data.draw(ARRAY)
    else:
        del arrays[key]
    np.savez(path, **arrays)
    try:
        load_decoder(path)
    except BCIInputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    except ValueError as exc:
        pytest.fail(f"not a BCIInputError: {exc!r}")


def test_cli_refuses_a_recording_and_a_bomb_as_conformance_files(tmp_path):
    header = {"descr": "|i1", "fortran_order": False, "shape": (2**34,)}
    bomb = write_zip(tmp_path / "bomb.npz", {"A_weights.npy": npy_bytes(header=header)})
    recording = ROOT / "recordings" / "samples" / "moving_bars.aedat4"
    for path, expected in ((recording, "not an .npz archive"), (bomb, "member 'A_weights.npy': array of shape")):
        run = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "conformance", "loihi", str(path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and expected in run.stderr and "allow_pickle" not in run.stderr


def test_a_decoder_file_cannot_size_its_buffers(tmp_path):
    """Found by the hypothesis test above: lag = 633,113,842 made loading allocate 23.6 GiB."""
    rng = np.random.default_rng(0)
    decoder = WienerDecoder(bin_us=50_000)
    decoder.fit(rng.poisson(2, size=(200, 5)).astype(float), rng.normal(size=(200, 2)))
    path = save_decoder(decoder, tmp_path / "w.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in (("lag", 633_113_842), ("history", -1), ("n_units", 2**40)):
        np.savez(path, **{**arrays, key: np.array(value)})
        with pytest.raises(BCIInputError, match=rf"w.npz: array '{key}' is {value}, expected 0 .. 10,000"):
            load_decoder(path)
