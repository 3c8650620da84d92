"""Dynamixel Protocol 2.0: worked examples, byte stuffing per the spec, and dynamixel-sdk as a peer.

The SDK is the byte reference for ordinary packets (3,000 random SYNC_WRITE / WRITE / READ written by the
SDK on a pty and compared with ours) and parses our emulated servo's status replies. For payloads that
contain FF FF FD the SDK's wire bytes are unstuffed (a known fault), so there we check against the
protocol: the e-Manual example and the value returned by the SDK's own addStuffing().
"""
from __future__ import annotations

import multiprocessing
import os
import random
import select
import struct
import tty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.motors import dynamixel as dxl
from devices.motors.crc import crc16_umts
from devices.motors.registry import start_twin

dynamixel_sdk = pytest.importorskip("dynamixel_sdk")

H = bytes.fromhex

# (our encoder call, bytes from the reference's e-Manual / SDK tables)
WORKED = [
    (lambda: dxl.ping(1), "FF FF FD 00 01 03 00 01 19 4E"),
    (lambda: dxl.status(1, 0, H("06 04 26")), "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D"),
    (lambda: dxl.read(1, 132, 4), "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15"),
    (lambda: dxl.status(1, 0, H("A6 00 00 00")), "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0"),
    (lambda: dxl.write(1, 116, struct.pack("<i", 512)), "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89"),
    (lambda: dxl.packet(1, 0x04, H("68 00 C8 00 00 00")), "FF FF FD 00 01 09 00 04 68 00 C8 00 00 00 AE 8E"),
    (lambda: dxl.sync_write(116, 4, [(1, struct.pack("<i", 150)), (2, struct.pack("<i", 170))]),
     "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87"),
    (lambda: dxl.sync_read(132, 4, [1, 2]), "FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA"),
    (lambda: dxl.sync_read(128, 4, [1, 2]), "FF FF FD 00 FE 09 00 82 80 00 04 00 01 02 C8 1A"),
    (lambda: dxl.write_u8(1, dxl.OPERATING_MODE, 1), "FF FF FD 00 01 06 00 03 0B 00 01 47 63"),
    (lambda: dxl.write_u8(1, dxl.TORQUE_ENABLE, 1), "FF FF FD 00 01 06 00 03 40 00 01 DB 66"),
    (lambda: dxl.write_u8(1, dxl.BUS_WATCHDOG, 5), "FF FF FD 00 01 06 00 03 62 00 05 68 E4"),
    (lambda: dxl.sync_write_goal_velocity([1, 2], [200, -200]),
     "FF FF FD 00 FE 11 00 83 68 00 04 00 01 C8 00 00 00 02 38 FF FF FF E0 27"),
    (lambda: dxl.write(1, 104, struct.pack("<i", 100)), "FF FF FD 00 01 09 00 03 68 00 64 00 00 00 EE F9"),
    (lambda: dxl.read(1, 128, 4), "FF FF FD 00 01 07 00 02 80 00 04 00 1E C5"),
    (lambda: dxl.status(1, 0, struct.pack("<i", -123)), "FF FF FD 00 01 08 00 55 00 85 FF FF FF 81 F0"),
    (lambda: dxl.status(1, 6), "FF FF FD 00 01 04 00 55 06 B5 0C"),
    (lambda: dxl.status(1, 0x80), "FF FF FD 00 01 04 00 55 80 A2 8F"),
    (lambda: dxl.write_u8(1, dxl.BUS_WATCHDOG, 0), "FF FF FD 00 01 06 00 03 62 00 00 76 E4"),
    (lambda: dxl.write_u8(1, dxl.TORQUE_ENABLE, 0), "FF FF FD 00 01 06 00 03 40 00 00 DE E6"),
]


@pytest.mark.parametrize("encode,expected", WORKED)
def test_worked_packets_from_the_reference(encode, expected):
    assert encode() == H(expected)


def test_crc16_umts_check_value():
    assert crc16_umts(b"123456789") == 0xFEE8


def test_stuffing_e_manual_example():
    ours = dxl.write(1, 116, struct.pack("<I", 0x00FDFFFF))
    assert ours == H("FF FF FD 00 01 0A 00 03 74 00 FF FF FD FD 00 21 E7")
    (decoded,) = dxl.PacketDecoder().feed(ours)
    assert decoded.params == H("74 00 FF FF FD 00")


def test_decoder_does_not_take_stuffed_bytes_for_a_header():
    stream = b"\x00\xff\xfd" + dxl.write(7, 116, H("FF FF FD 00")) + dxl.status(7, 0, H("FF FF FD FD"))
    packets = dxl.PacketDecoder().feed(stream)
    assert [(p.dxl_id, p.instruction, p.params) for p in packets] == [
        (7, dxl.WRITE, H("74 00 FF FF FD 00")), (7, dxl.STATUS, H("FF FF FD FD"))]


def test_decoder_drops_bad_crc_and_resynchronises():
    good = dxl.read(3, 128, 8)
    bad = bytearray(good)
    bad[-1] ^= 0x01
    dec = dxl.PacketDecoder()
    assert [p.dxl_id for p in dec.feed(bytes(bad) + good)] == [3]
    assert dec.crc_errors == 1


byte_seqs = st.lists(st.sampled_from([0xFF, 0xFD, 0x00, 0x01, 0xFE]), max_size=24).map(bytes)


@settings(deadline=None, max_examples=300)
@given(byte_seqs)
def test_stuffing_round_trip_and_spec_property(body):
    stuffed = dxl.add_stuffing(body)
    assert dxl.remove_stuffing(stuffed) == body
    # Spec: every FF FF FD in the transmitted body is followed by the inserted FD.
    i = stuffed.find(b"\xff\xff\xfd")
    while i >= 0:
        assert stuffed[i + 3: i + 4] == b"\xfd"
        i = stuffed.find(b"\xff\xff\xfd", i + 4)
    assert len(stuffed) - len(body) == _count_patterns(body)


def _count_patterns(body: bytes) -> int:
    count, run = 0, 0
    for b in body:
        if b == 0xFD and run >= 2:
            count, run = count + 1, 0
        else:
            run = run + 1 if b == 0xFF else 0
    return count


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 252), st.integers(0, 0xFFFF), st.lists(byte_seqs, min_size=1, max_size=3))
def test_packets_decode_back_through_a_chunked_stream(dxl_id, address, payloads):
    stream = b"".join(dxl.write(dxl_id, address, p or b"\x00") for p in payloads)
    dec = dxl.PacketDecoder()
    got = []
    for k in range(0, len(stream), 5):
        got += dec.feed(stream[k:k + 5])
    assert [p.params for p in got] == [struct.pack("<H", address) + (p or b"\x00") for p in payloads]


# -- dynamixel-sdk as a peer ------------------------------------------------------------------------
@pytest.fixture
def sdk_on_pty():
    """An SDK PortHandler on a pty slave; yields (port, packet handler, master fd)."""
    master, slave = os.openpty()
    tty.setraw(master)
    port = dynamixel_sdk.PortHandler(os.ttyname(slave))
    assert port.openPort()
    yield port, dynamixel_sdk.PacketHandler(2.0), master
    port.closePort()
    os.close(master)
    os.close(slave)


def _read_packet(master: int) -> bytes:
    buf = b""
    while len(buf) < 7 or len(buf) < 7 + (buf[5] | buf[6] << 8):
        ready, _, _ = select.select([master], [], [], 1.0)
        assert ready, f"SDK wrote only {buf.hex(' ')}"
        buf += os.read(master, 4096)
    return buf


def _spec_bytes_via_sdk_add_stuffing(ph, wire: bytes) -> bytes:
    """The SDK's addStuffing() return value for its (unstuffed) wire packet, CRC recomputed."""
    stuffed = ph.addStuffing(list(wire))
    n = (stuffed[5] | stuffed[6] << 8) + 7
    stuffed = stuffed[:n]
    crc = ph.updateCRC(0, stuffed, n - 2)
    return bytes(stuffed[:n - 2]) + struct.pack("<H", crc)


def test_3000_random_commands_byte_identical_to_dynamixel_sdk(sdk_on_pty):
    port, ph, master = sdk_on_pty
    rng = random.Random(20261129)
    stuffed_cases = 0
    for n in range(3000):
        kind = n % 3
        value = rng.choice([rng.getrandbits(32), 0x00FDFFFF, 0xFDFFFF00 | rng.getrandbits(8)]
                           if rng.random() < 0.05 else [rng.getrandbits(32)])
        dxl_id = rng.randrange(0, 253)
        address = rng.randrange(0, 700)
        if kind == 0:
            ids = rng.sample(range(253), rng.randint(1, 6))
            values = [rng.randrange(-(1 << 31), 1 << 31) for _ in ids]
            if value in (0x00FDFFFF,):
                values[0] = struct.unpack("<i", struct.pack("<I", value))[0]
            param = [b for i, v in zip(ids, values) for b in (i, *struct.pack("<i", v))]
            assert ph.syncWriteTxOnly(port, 104, 4, param, len(param)) == dynamixel_sdk.COMM_SUCCESS
            ours = dxl.sync_write_goal_velocity(ids, values)
        elif kind == 1:
            length = rng.choice([1, 2, 4])
            data = list(struct.pack("<I", value)[:length])
            assert ph.writeTxOnly(port, dxl_id, address, length, data) == dynamixel_sdk.COMM_SUCCESS
            ours = dxl.write(dxl_id, address, bytes(data))
        else:
            length = rng.randrange(1, 300)
            assert ph.readTx(port, dxl_id, address, length) == dynamixel_sdk.COMM_SUCCESS
            port.is_using = False
            ours = dxl.read(dxl_id, address, length)
        wire = _read_packet(master)
        if b"\xff\xff\xfd" in wire[7:-2]:
            stuffed_cases += 1
            assert ours != wire  # the SDK does not stuff on transmit
            assert ours == _spec_bytes_via_sdk_add_stuffing(ph, wire)
        else:
            assert ours == wire, f"command {n}"
    assert stuffed_cases > 10


def _serve_twin(conn) -> None:
    twin = start_twin("dynamixel", [1, 2])
    conn.send(twin.path)
    conn.recv()
    twin.close()


@pytest.fixture
def twin_in_child_process():
    """The emulated bus in its own process: the SDK busy-polls while it waits for a reply, and would
    starve a twin thread sharing its GIL (a real servo does not share the host's CPU either)."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_twin, args=(child,), daemon=True)
    proc.start()
    yield parent.recv()
    parent.send("stop")
    proc.join(timeout=5)


def test_sdk_as_host_parses_our_emulated_servo(twin_in_child_process):
    port = dynamixel_sdk.PortHandler(twin_in_child_process)
    try:
        assert port.openPort()
        ph = dynamixel_sdk.PacketHandler(2.0)
        model, result, error = ph.ping(port, 2)
        assert (model, result, error) == (1060, dynamixel_sdk.COMM_SUCCESS, 0)
        assert ph.write1ByteTxRx(port, 1, 11, 1) == (dynamixel_sdk.COMM_SUCCESS, 0)
        assert ph.write1ByteTxRx(port, 1, 64, 1) == (dynamixel_sdk.COMM_SUCCESS, 0)
        # EEPROM is locked while torque is on: Access error (7) in the status packet.
        assert ph.write1ByteTxRx(port, 1, 11, 3) == (dynamixel_sdk.COMM_SUCCESS, 7)
        assert ph.write4ByteTxRx(port, 1, 104, 100) == (dynamixel_sdk.COMM_SUCCESS, 0)
        assert ph.read4ByteTxRx(port, 1, 104) == (100, dynamixel_sdk.COMM_SUCCESS, 0)
        # Above Velocity Limit (265): Data Limit error (6).
        assert ph.write4ByteTxRx(port, 1, 104, 300) == (dynamixel_sdk.COMM_SUCCESS, 6)
        # A reply whose payload needs stuffing (Goal Position 0x00FDFFFF on a torque-off servo).
        assert ph.write4ByteTxRx(port, 2, 116, 0x00FDFFFF) == (dynamixel_sdk.COMM_SUCCESS, 0)
        assert ph.read4ByteTxRx(port, 2, 116) == (0x00FDFFFF, dynamixel_sdk.COMM_SUCCESS, 0)
        vel, result, _ = ph.read4ByteTxRx(port, 1, 128)
        assert result == dynamixel_sdk.COMM_SUCCESS and 0 <= vel <= 100
        group = dynamixel_sdk.GroupSyncRead(port, ph, 132, 4)
        assert group.addParam(1) and group.addParam(2)
        assert group.txRxPacket() == dynamixel_sdk.COMM_SUCCESS
        assert group.isAvailable(2, 132, 4)
    finally:
        port.closePort()
