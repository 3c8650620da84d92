"""Network transport of packets, commands and telemetry: the wire format (wire), Zenoh publishers and
subscribers (zenoh_link) and ROS 2 messages on rmw_zenoh's key expressions (ros2)."""
