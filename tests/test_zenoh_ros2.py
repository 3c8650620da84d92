"""ROS 2 on the wire: Twist CDR checked against rosbags (an independent CDR implementation), rmw_zenoh's
key expression and attachment as its design document specifies them."""
from __future__ import annotations

import struct
import time
import uuid

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from devices.transport import ros2
from devices.transport.zenoh_link import open_session

STORE = get_typestore(Stores.ROS2_JAZZY)
Twist = STORE.types["geometry_msgs/msg/Twist"]
Vector3 = STORE.types["geometry_msgs/msg/Vector3"]


@pytest.mark.parametrize("linear, angular", [((0.5, 0.0, 0.0), (0.0, 0.0, -1.25)),
                                             ((1e-300, -3.5, 7.0), (np.pi, -0.0, 1e9))])
def test_twist_cdr_matches_rosbags(linear, angular):
    ours = ros2.encode_twist(linear, angular)
    theirs = STORE.serialize_cdr(Twist(linear=Vector3(*linear), angular=Vector3(*angular)),
                                 "geometry_msgs/msg/Twist")
    assert ours == bytes(theirs) and len(ours) == 52
    back = STORE.deserialize_cdr(ours, "geometry_msgs/msg/Twist")
    assert (back.linear.x, back.linear.y, back.linear.z) == linear
    assert (back.angular.x, back.angular.y, back.angular.z) == angular


def test_key_expression_and_type_hash():
    assert ros2.TWIST_HASH == STORE.hash_rihs01("geometry_msgs/msg/Twist")
    # the hash rosbags computes for std_msgs/String is the one in rmw_zenoh's design document example
    assert STORE.hash_rihs01("std_msgs/msg/String").startswith("RIHS01_df668c740482bbd48fb39d76a70dfd4bd59d")
    assert ros2.topic_key("/cmd_vel", domain_id=0) == f"0/cmd_vel/geometry_msgs::msg::dds_::Twist_/{ros2.TWIST_HASH}"
    assert ros2.topic_key("/robot1/cmd_vel", domain_id=3).startswith("3/robot1/cmd_vel/geometry_msgs::msg::dds_::")
    for bad in ("cmd_vel", "/cmd_vel/", "/a//b"):
        with pytest.raises(ValueError, match="fully qualified"):
            ros2.topic_key(bad)


def test_env_domain_id(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    assert ros2.topic_key("/cmd_vel").startswith("7/cmd_vel/")


def test_a_subscriber_on_the_rmw_zenoh_key_receives_twist_and_attachment():
    topic = f"/spikeloop_test_{uuid.uuid4().hex[:8]}/cmd_vel"
    received = []
    robot = open_session()
    subscriber = robot.declare_subscriber(ros2.topic_key(topic, domain_id=0),
                                          lambda s: received.append((s.payload.to_bytes(), s.attachment.to_bytes())))
    try:
        with ros2.TwistPublisher(topic, domain_id=0) as publisher:
            deadline = time.monotonic() + 10
            while not publisher._publisher.matching_status.matching:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            before = time.time_ns()
            publisher.send((0.2, 0.0, 0.0), (0.0, 0.0, 0.5))
            publisher.stop()
            while len(received) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        subscriber.undeclare()
        robot.close()
    (first, attach1), (second, attach2) = received
    msg = STORE.deserialize_cdr(first, "geometry_msgs/msg/Twist")
    assert (msg.linear.x, msg.angular.z) == (0.2, 0.5)
    stop = STORE.deserialize_cdr(second, "geometry_msgs/msg/Twist")
    assert (stop.linear.x, stop.angular.z) == (0.0, 0.0)
    # attachment: int64 sequence, int64 ns timestamp, GID length byte, 16-byte GID
    seq1, stamp1, gid_len, gid1 = struct.unpack("<qqB16s", attach1)
    seq2, _, _, gid2 = struct.unpack("<qqB16s", attach2)
    assert len(attach1) == 33 and gid_len == 16 and gid1 == gid2 == publisher.gid
    assert seq2 == seq1 + 1 and before <= stamp1 <= time.time_ns()
