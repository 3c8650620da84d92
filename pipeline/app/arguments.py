"""argparse value types the commands share: each refuses a bad value with ``expected ..., got '...'``."""
from __future__ import annotations

import argparse
from typing import Callable


def integer_in(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text!r}")
        return value
    return parse


def seed(what: str) -> Callable[[str], int]:
    """A random seed, an integer >= 0; ``what`` names it in the message (e.g. "an arena seed")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected an integer >= 0 ({what}), got {text!r}")
        return value
    return parse
