"""``spikeloop motor``: send one velocity command to a motor controller, print read-back, stop on exit.

Example: ``spikeloop motor --protocol dynamixel --port /dev/ttyUSB0 --ids 1,2 --velocity 1.5,-1.5``
(``--port emulated:dynamixel`` runs against an emulated twin). The command is re-sent at ``--rate`` Hz
for ``--duration`` s (feeding the safety watchdog); on exit, error, Ctrl-C or SIGTERM the motors get
zero velocity and torque off.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time

import numpy as np

from devices.motors import PROTOCOLS, MotorError, StopOnSignal, open_motors
from devices.motors.registry import driver_class
from pipeline.app.errors import EXIT_FAILED, fail
from pipeline.core.schema import command_line_value, signature_keys


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v, 0) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2, got {text!r}") from None
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (rad/s) like 1.5,-1.5, got {text!r}") from None
    return values


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE``, the value in TOML syntax as ``launch --set`` reads it (``2048``, ``0x80``, ``[11, 12]``; a
    bare word is a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. counts_per_rev=2048), got {text!r}")
    try:
        return key, command_line_value(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{key}: {exc}") from None


def protocol_options() -> str:
    """Every protocol's driver options (``--opt KEY=VALUE``), one ``KEY: <expectation>, required | optional |
    default <TOML value>: help (unit)`` line each, as ``spikeloop list motors`` prints them (both read the
    driver's signature and docstring through pipeline.core.schema.signature_keys)."""
    lines = []
    for name in sorted(PROTOCOLS):
        lines.append(f"  {name}:")
        options = signature_keys(driver_class(name), ("ids",))
        lines += [f"      {key}: {text}" for key, text in options.items()] or ["      (none)"]
    return "\n".join(lines)


def register(subparsers, summary: str) -> None:
    description = __doc__.replace("``", "")
    p = subparsers.add_parser("motor", help=summary, description=description,
                              epilog="driver options per protocol (--opt KEY=VALUE, repeatable; in a launch file: "
                                     "[sinks.<label>.driver] KEY = VALUE):\n" + protocol_options(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    p.add_argument("--port", required=True, help="serial device path, or emulated:<protocol>")
    p.add_argument("--ids", required=True, type=_int_list,
                   help="motor ids / channels / axes / pins, comma-separated (e.g. 1,2)")
    p.add_argument("--velocity", required=True, type=_float_list,
                   help="velocity per id in rad/s, comma-separated (e.g. 1.5,-1.5)")
    p.add_argument("--baud", type=int, default=None, help="baud rate (default: the protocol's factory default)")
    p.add_argument("--duration", type=float, default=1.0, help="how long to hold the command, s (default 1)")
    p.add_argument("--rate", type=float, default=50.0, help="command re-send rate, Hz (default 50)")
    p.add_argument("--timeout-ms", type=float, default=200.0, help="safety watchdog timeout, ms (default 200)")
    p.add_argument("--max-velocity", "--max-velocity-radps", dest="max_velocity", type=float, default=None,
                   help="velocity limit, rad/s (the launch key's name also works)")
    p.add_argument("--max-accel", "--max-accel-radps2", dest="max_accel", type=float, default=None,
                   help="acceleration limit, rad/s^2")
    p.add_argument("--opt", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="protocol driver option (repeatable; VALUE in TOML syntax as in a launch file, a bare word is "
                        "a string), e.g. counts_per_rev=2048, dir_pins=[11,12]")
    p.set_defaults(func=run)


def _print_feedback(controller, t_s: float) -> None:
    fb = controller.feedback()
    for dxl_id, vel, pos, age in zip(controller.driver.ids, fb.velocity, fb.position, fb.age_s):
        age_text = "never" if age == float("inf") else f"{age * 1e3:.0f} ms ago"
        pos_text = "n/a (no sensor)" if pos != pos else f"{pos:+.3f} rad"
        print(f"t={t_s:6.2f}s id={dxl_id} velocity={vel:+.3f} rad/s position={pos_text} ({age_text})",
              flush=True)


def run(args) -> int:
    if len(args.velocity) != len(args.ids):
        print(f"spikeloop motor: --velocity has {len(args.velocity)} values for {len(args.ids)} ids "
              f"({args.ids})", file=sys.stderr)
        return 2
    if not all(math.isfinite(v) for v in args.velocity):
        print(f"spikeloop motor: --velocity: expected finite numbers (rad/s), got {args.velocity}", file=sys.stderr)
        return 2
    if not (0 <= args.duration < math.inf and 0 < args.rate < math.inf):
        print("spikeloop motor: --duration must be a finite number >= 0 and --rate a finite number > 0",
              file=sys.stderr)
        return 2
    try:
        controller = open_motors(args.protocol, args.port, args.ids, baud=args.baud,
                                 timeout_ms=args.timeout_ms, max_velocity=args.max_velocity,
                                 max_accel=args.max_accel, **dict(args.opt))
    except (ValueError, TypeError) as exc:  # a bad option or value: nothing was opened
        return fail("motor", str(exc))
    except MotorError as exc:
        return fail("motor", str(exc), status=EXIT_FAILED)
    stopper = StopOnSignal([controller])
    command = np.asarray(args.velocity, dtype=float)
    limit = controller.velocity_limit
    for motor_id, wanted, most in zip(args.ids, command, np.broadcast_to(limit, command.shape)):
        if abs(wanted) > most:
            print(f"spikeloop motor: id {motor_id}: --velocity {wanted:g} rad/s is clamped to "
                  f"{np.copysign(most, wanted):+.4g} rad/s (the {'device' if args.max_velocity is None or most < args.max_velocity else '--max-velocity'} limit)",
                  file=sys.stderr)
    period = 1.0 / args.rate
    try:
        start = time.monotonic()
        next_print = start
        while not stopper.requested:
            now = time.monotonic()
            if now - start >= args.duration:
                break
            controller.send(command)
            if now >= next_print:
                _print_feedback(controller, now - start)
                next_print += 0.25
            time.sleep(period)
        _print_feedback(controller, time.monotonic() - start)
        link_lost = controller.link.lost
    finally:
        controller.close()
        stopper.restore()
    counters = controller.counters
    print("counters: " + " ".join(f"{k}={v}" for k, v in counters.items() if v), flush=True)
    if stopper.signum == signal.SIGINT:
        return 130
    if link_lost:
        print(f"spikeloop motor: link lost: {controller.link.last_error}", file=sys.stderr)
        return 1
    return 0
