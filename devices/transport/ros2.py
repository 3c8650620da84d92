"""Drive a ROS 2 robot that runs rmw_zenoh: geometry_msgs/Twist on its Zenoh key, no ROS install here.

rmw_zenoh (ros2/rmw_zenoh, docs/design.md, "Topic and Service name mapping to Zenoh key expressions"
and "Publishers") maps a topic to the key expression::

    <domain_id>/<fully_qualified_name without the leading slash>/<DDS type name>/<type hash>

e.g. ``0/cmd_vel/geometry_msgs::msg::dds_::Twist_/RIHS01_9c45...`` for /cmd_vel in domain 0 (the
``ROS_DOMAIN_ID`` environment variable, default 0), and puts each message as plain CDR with an
*attachment* its subscribers require (without one rmw_zenoh logs "Unable to obtain attachment" and
drops the message): sequence number (int64 LE), source timestamp (int64 LE, ns since the UNIX epoch),
GID length (one byte, 16) and the publisher GID (16 bytes).

The payload is the 4-byte CDR encapsulation header (``00 01 00 00``: CDR, little-endian) followed by
the Twist: linear x, y, z (m/s) then angular x, y, z (rad/s), six float64 (8-aligned from the first,
so no padding): 52 bytes. The RIHS01 type hash below is geometry_msgs/msg/Twist's as REP-2016 defines
it (the tests recompute it with rosbags).

Not done: rmw_zenoh's liveliness tokens (graph discovery), so ``ros2 topic list`` on the robot does
not show this publisher, although its /cmd_vel subscribers receive the messages.
"""
from __future__ import annotations

import os
import struct
import time

import numpy as np

from devices.transport.zenoh_link import check_key, open_session

TWIST_TYPE = "geometry_msgs::msg::dds_::Twist_"
TWIST_HASH = "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a"
CDR_LE_HEADER = b"\x00\x01\x00\x00"
GID_BYTES = 16
_TWIST = struct.Struct("<6d")
_ATTACHMENT = struct.Struct("<qqB16s")


def topic_key(topic: str, type_name: str = TWIST_TYPE, type_hash: str = TWIST_HASH,
              domain_id: int | None = None) -> str:
    """rmw_zenoh's key expression for a fully qualified topic name (``/cmd_vel``, ``/robot1/cmd_vel``)."""
    if not topic.startswith("/") or topic.endswith("/") or "//" in topic:
        raise ValueError(f"topic {topic!r}: expected a fully qualified ROS 2 name such as /cmd_vel")
    domain = int(os.environ.get("ROS_DOMAIN_ID", "0")) if domain_id is None else int(domain_id)
    return check_key(f"{domain}/{topic[1:]}/{type_name}/{type_hash}")


def encode_twist(linear_m_s, angular_rad_s) -> bytes:
    """CDR (little-endian, with encapsulation header) of a Twist from two 3-vectors."""
    linear = np.asarray(linear_m_s, dtype=np.float64).reshape(3)
    angular = np.asarray(angular_rad_s, dtype=np.float64).reshape(3)
    return CDR_LE_HEADER + _TWIST.pack(*linear, *angular)


def encode_attachment(sequence: int, timestamp_ns: int, gid: bytes) -> bytes:
    """rmw_zenoh's per-message attachment (33 bytes)."""
    if len(gid) != GID_BYTES:
        raise ValueError(f"publisher GID must be {GID_BYTES} bytes, got {len(gid)}")
    return _ATTACHMENT.pack(sequence, timestamp_ns, GID_BYTES, gid)


class TwistPublisher:
    """Publishes geometry_msgs/Twist on a ROS 2 topic through rmw_zenoh's key expression.

    topic: fully qualified name (default /cmd_vel). domain_id: None = ``ROS_DOMAIN_ID`` or 0.
    session / config_file: as for the other Zenoh publishers (loopback peer by default; a robot on
    another host needs a config file that connects to its router).
    """

    def __init__(self, topic: str = "/cmd_vel", *, domain_id: int | None = None, session=None, config_file=None):
        import zenoh

        self.key = topic_key(topic, domain_id=domain_id)
        self._own_session = session is None
        self.session = open_session(config_file) if session is None else session
        self._publisher = self.session.declare_publisher(self.key, congestion_control=zenoh.CongestionControl.DROP,
                                                         express=True)
        self.gid = os.urandom(GID_BYTES)
        self.sequence = 1
        self._closed = False

    def send(self, linear_m_s=(0.0, 0.0, 0.0), angular_rad_s=(0.0, 0.0, 0.0)) -> None:
        """Publish one Twist (m/s, rad/s)."""
        attachment = encode_attachment(self.sequence, time.time_ns(), self.gid)
        self._publisher.put(encode_twist(linear_m_s, angular_rad_s), attachment=attachment)
        self.sequence += 1

    def stop(self) -> None:
        """Publish a zero Twist (the robot's stop command)."""
        self.send()

    def close(self) -> None:
        """Undeclare and close an owned session. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._publisher.undeclare()
        if self._own_session:
            self.session.close()

    def __enter__(self) -> "TwistPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
