"""Neural spike sources: DAD .mat blocks and MC_Maze CSV trials, their AER replay and causal binning
(pipeline.stages.binning.CountBinner)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.events import SPIKE_DTYPE
from pipeline.stages.binning import CountBinner
from recordings.base import RecordingError
from recordings.dad import DadSource, load_dad
from recordings.mc_maze import McMazeSource, load_mc_maze
from recordings.neural import counts_to_spikes


@pytest.fixture(scope="module")
def bci_dir(data_dir):
    return data_dir / "bci"


def test_mc_maze_facts(bci_dir):
    """Data README: 1 ms rows, 182 unit columns, 3.2 s and 3.6 s trials."""
    a = load_mc_maze(bci_dir / "trial_748_data.csv")
    b = load_mc_maze(bci_dir / "trial_1356_data.csv")
    assert a.n_units == b.n_units == 182
    assert a.units[0] == "unit_1011"
    assert round(a.duration_s, 1) == 3.2 and round(b.duration_s, 1) == 3.6
    assert np.all(np.diff(a.t_us) == 1000)
    assert a.t_us[0] == 2_282_600_000
    assert set(np.unique(a.spikes)) <= {0, 1}
    assert {"hand_vel_x", "hand_vel_y", "hand_pos_x", "cursor_pos_y", "eye_pos_x"} <= set(a.kinematics.dtype.names)
    # spot values from the file's first data row
    assert a.kinematics["hand_vel_x"][0] == pytest.approx(-18.35745817)
    assert a.kinematics["hand_vel_y"][0] == pytest.approx(-19.1218021)


def test_mc_maze_events_and_bins_agree(bci_dir):
    trial = load_mc_maze(bci_dir / "trial_748_data.csv")
    events = trial.spike_events()
    assert events.dtype == SPIKE_DTYPE and len(events) == int(trial.spikes.sum())
    assert np.all(np.diff(events["timestamp"]) >= 0)
    binned = trial.binned(20)
    assert binned.counts.shape == (161, 182) and binned.bin_us == 20_000
    t0 = int(trial.t_us[0])
    np.testing.assert_array_equal(binned.counts, CountBinner(20_000, 182, t0).push(events, t0 + 161 * 20_000).counts)
    np.testing.assert_allclose(binned.kinematics[0, 0], trial.kinematics["hand_vel_x"][:20].mean())


@pytest.mark.parametrize("chunk_us", [700, 10_000, 333_333])
def test_mc_maze_source_rebins_exactly(bci_dir, chunk_us):
    source = McMazeSource(bci_dir / "trial_1356_data.csv", fast=True, chunk_us=chunk_us)
    assert source.info.kind == "spikes" and source.info.channels == 182
    binner = CountBinner(20_000, 182, source.t_start_us)
    bins = [binner.push(p.events, p.t_end_us).counts for p in source.packets()]
    np.testing.assert_array_equal(np.concatenate(bins), source.trial.binned(20).counts)
    np.testing.assert_array_equal(source.data.counts, source.trial.binned(20).counts)
    assert binner.late_events == 0 and len(binner.flush()) == 0  # the trailing partial bin is dropped


def test_dad_source_rebins_to_stored_counts(bci_dir):
    source = DadSource(bci_dir / "chewie_demo.mat", "te", fast=True, chunk_us=7_000)
    assert source.info.channels == 71
    binner = CountBinner(source.data.bin_us, 71, t0_us=0)
    bins = np.concatenate([binner.push(p.events, p.t_end_us).counts for p in source.packets()])
    np.testing.assert_array_equal(bins, source.data.counts)
    assert len(source.events) == int(source.data.counts.sum())


def test_dad_source_paced(bci_dir):
    """Paced replay at 200x: 40 bins of 50 ms = 2 s of sensor time take ~10 ms of wall time."""
    source = DadSource(bci_dir / "chewie_demo.mat", "tr", speed=200.0, chunk_us=50_000)
    t0 = time.perf_counter()
    packets = []
    for p in source.packets():
        packets.append(p)
        if len(packets) == 40:
            break
    elapsed = time.perf_counter() - t0
    assert elapsed >= 40 * 0.05 / 200 * 0.9
    assert [p.t_end_us for p in packets[:2]] == [50_000, 100_000]  # every spike before t_end_us delivered


@settings(deadline=None, max_examples=30)
@given(st.lists(st.lists(st.integers(0, 9), min_size=3, max_size=3), min_size=1, max_size=20),
       st.integers(1, 5_000), st.integers(1, 40_000))
def test_counts_to_spikes_round_trip_any_chunking(rows, bin_us_k, chunk_us):
    counts = np.array(rows, dtype=np.float64)
    bin_us = 10 * bin_us_k + 10
    events = counts_to_spikes(counts, bin_us, 1_000)
    binner = CountBinner(bin_us, 3, 1_000)
    out = []
    t = 1_000
    end = 1_000 + len(counts) * bin_us
    while t < end:
        t_next = min(t + chunk_us, end)
        sel = events[(events["timestamp"] >= t) & (events["timestamp"] < t_next)]
        out.append(binner.push(sel, t_next).counts)
        t = t_next
    np.testing.assert_array_equal(np.concatenate(out), counts)


def test_binner_counts_late_events(bci_dir):
    binner = CountBinner(1_000, 2, 0)
    assert binner.push(np.zeros(0, SPIKE_DTYPE), 3_000).counts.shape == (3, 2)
    late = np.array([(500, 0), (3_100, 1)], dtype=SPIKE_DTYPE)
    out = binner.push(late, 4_000)
    assert out.counts.tolist() == [[0.0, 1.0]] and out.first_step == 3 and binner.late_events == 1
    with pytest.raises(ValueError, match="spike 0 on channel 2 is outside the stream's 2 channels"):
        binner.push(np.array([(4_100, 2)], dtype=SPIKE_DTYPE), 5_000)
    with pytest.raises(ValueError, match=r"spike 0 \(t=7000 µs\) lies beyond the packet's end"):
        binner.push(np.array([(7_000, 0)], dtype=SPIKE_DTYPE), 5_000)
    assert binner.next_step == 4  # the rejected packets changed nothing


def test_dad_errors_name_file_and_variable(tmp_path):
    good = {"Ytr": np.ones((10, 4)), "Xtr": np.zeros((10, 2)), "Yte": np.ones((8, 4)), "Xte": np.zeros((8, 2))}

    def write(**changes):
        mat = dict(good)
        for k, v in changes.items():
            if v is None:
                mat.pop(k)
            else:
                mat[k] = v
        path = tmp_path / "d.mat"
        sio.savemat(path, mat)
        return path

    with pytest.raises(RecordingError, match=r"d\.mat.*missing variable 'Yte'"):
        load_dad(write(Yte=None), "te")
    with pytest.raises(RecordingError, match=r"'Xte' must be \[time x 2\].*8 rows.*\(8, 3\)"):
        load_dad(write(Xte=np.zeros((8, 3))), "te")
    with pytest.raises(RecordingError, match=r"'Xte' must be \[time x 2\].*\(7, 2\)"):
        load_dad(write(Xte=np.zeros((7, 2))), "te")
    nan = np.ones((8, 4))
    nan[2, 1] = np.nan
    with pytest.raises(RecordingError, match=r"'Yte' has 1 NaN/inf values \(first at row 2, column 1\)"):
        load_dad(write(Yte=nan), "te")
    with pytest.raises(RecordingError, match="Ytr.*rates|integer"):
        DadSource(write(Ytr=np.full((10, 4), 0.5)), "tr")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(RecordingError, match="junk.mat"):
        load_dad(junk)
    with pytest.raises(RecordingError, match="no such file"):
        load_dad(tmp_path / "missing.mat")


def test_mc_maze_errors_name_file_column_row(bci_dir, tmp_path):
    lines = (bci_dir / "trial_748_data.csv").read_text().splitlines()[:50]
    header = lines[0].split(",")

    def write(rows, head=None):
        path = tmp_path / "t.csv"
        path.write_text("\n".join([head or lines[0]] + rows) + "\n")
        return path

    row = lines[5].split(",")
    row[header.index("unit_1021")] = "nan"
    with pytest.raises(RecordingError, match=r"t\.csv.*'unit_1021' has 1 NaN.*data row 5"):
        load_mc_maze(write(lines[1:5] + [",".join(row)] + lines[6:]))
    with pytest.raises(RecordingError, match="rows must be 1000 µs apart; data row 10"):
        load_mc_maze(write(lines[1:10] + lines[11:]))
    with pytest.raises(RecordingError, match="missing column 'hand_vel_y'"):
        load_mc_maze(write(lines[1:], lines[0].replace("hand_vel_y", "hand_vel_z")))
    row = lines[3].split(",")
    row[header.index("unit_1011")] = "0.5"
    with pytest.raises(RecordingError, match=r"'unit_1011' data row 3: spike counts must be integers"):
        load_mc_maze(write(lines[1:3] + [",".join(row)] + lines[4:]))
    with pytest.raises(RecordingError, match="columns"):
        load_mc_maze(write([r + ",0" for r in lines[1:]]))
