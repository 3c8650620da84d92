"""Protocol name -> driver class and emulated twin, and :func:`open_motors`.

A protocol's driver options (``spikeloop motor --opt KEY=VALUE``, a launch file's ``[sinks.<label>.driver]``)
are the keyword parameters of its driver's ``__init__`` after ``ids``, declared there once: a parameter
without a default is a required option, and its help (with the unit) is the class docstring's
``name: help`` line. ``spikeloop list motors``, ``spikeloop motor --help``, the launch-file check and
:func:`check_driver_options` all read them from there.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from pipeline.core.schema import keyword_parameters, parameter_help, parameter_mismatch

from .driver import MotorDriver
from .link import SerialLink
from .safety import SafeMotors
from .twin import PtyTwin

#: protocol -> (driver "module:Class", twin "module:factory(ids, **opts) -> device model")
PROTOCOLS: dict[str, tuple[str, str]] = {
    "dynamixel": ("driver_dynamixel:DynamixelDriver", "twin_dynamixel:DynamixelBus"),
    "roboclaw": ("driver_roboclaw:RoboClawDriver", "twin_roboclaw:RoboClawDevice"),
    "maestro": ("driver_maestro:MaestroDriver", "twin_maestro:MaestroDevice"),
    "odrive": ("driver_odrive:ODriveDriver", "twin_odrive:ODriveDevice"),
    "firmata": ("driver_firmata:FirmataDriver", "twin_firmata:FirmataBoard"),
}

EMULATED_PREFIX = "emulated:"


def _load(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def driver_class(protocol: str) -> type[MotorDriver]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown motor protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return _load(PROTOCOLS[protocol][0])


def check_driver_options(protocol: str, options: Mapping[str, Any]) -> None:
    """ValueError, one line naming the protocol and the option, for an option ``protocol``'s driver does not
    take, a value its annotation refuses (:func:`pipeline.core.schema.parameter_mismatch`, as a launch file's
    check does: ``true`` for a number) or a required option (a driver parameter without a default) left out.
    Ranges are the driver's to check."""
    cls = driver_class(protocol)
    accepted = keyword_parameters(cls, ("ids",))
    for name in options:
        if name not in accepted:
            raise ValueError(f"{protocol}: unknown driver option {name} (expected one of: {', '.join(accepted)})")
    for name, value in options.items():
        problem = parameter_mismatch(accepted[name], value)
        if problem:
            raise ValueError(f"{protocol}: driver option {name}: {problem}")
    for name, p in accepted.items():
        if p.default is p.empty and name not in options:
            about = parameter_help(cls.__doc__).get(name)
            raise ValueError(f"{protocol}: driver option {name} is required" + (f": {about}" if about else ""))


def start_twin(protocol: str, ids: list[int], **opts: Any) -> PtyTwin:
    """An emulated ``protocol`` controller with motors ``ids``, served on a fresh pty."""
    driver_class(protocol)
    device = _load(PROTOCOLS[protocol][1])(ids, **opts)
    return PtyTwin(device, name=protocol)


def open_motors(protocol: str, port: str, ids: list[int], *, baud: int | None = None,
                timeout_ms: float = 200.0, max_velocity=None, max_accel: float | None = None,
                feedback_hz: float = 50.0, backoff_s: tuple[float, float] = (0.05, 1.0),
                twin_opts: dict[str, Any] | None = None, **driver_opts: Any) -> SafeMotors:
    """Open, initialise and safety-wrap a motor controller.

    protocol: one of :data:`PROTOCOLS`. port: device path, or ``"emulated:<protocol>"`` to start an
    emulated twin on a pty (closed with the controller; driver options the twin also takes, such as
    firmata's dir_pins, are passed to it, and twin_opts adds twin-only ones). ids: motor ids / channels / axes / pins, in
    the order of ``send()``'s velocity array. baud: defaults to the protocol's factory default (real
    port) or its emulated rate. timeout_ms, max_velocity (rad/s), max_accel (rad/s^2): safety layer.
    feedback_hz: read-back request rate (0 = none). driver_opts go to the protocol driver
    (:func:`check_driver_options`). ValueError / TypeError: a bad argument (nothing is left open); MotorError:
    the port or the device failed.
    """
    cls = driver_class(protocol)
    check_driver_options(protocol, driver_opts)
    driver = cls(list(ids), **driver_opts)
    twin = None
    if port.startswith(EMULATED_PREFIX):
        emulated = port[len(EMULATED_PREFIX):]
        if emulated != protocol:
            raise ValueError(f"port {port!r} emulates {emulated!r} but protocol is {protocol!r}")
        factory = _load(PROTOCOLS[protocol][1])
        shared = {k: v for k, v in driver_opts.items() if k in inspect.signature(factory).parameters}
        twin = start_twin(protocol, list(ids), **{**shared, **(twin_opts or {})})
        path = twin.path
        baud = baud or cls.emulated_baud
    else:
        path = port
        baud = baud or cls.default_baud
    link = SerialLink(driver, path, baud, feedback_hz=feedback_hz, backoff_s=backoff_s)
    try:
        link.start()
    except BaseException:
        if twin is not None:
            twin.close()
        raise
    try:
        controller = SafeMotors(driver, link, timeout_ms=timeout_ms, max_velocity=max_velocity,
                                max_accel=max_accel, on_close=twin.close if twin is not None else None)
    except BaseException:
        link.close(final=driver.stop_bytes() + driver.release_bytes())
        if twin is not None:
            twin.close()
        raise
    controller.twin = twin
    return controller
