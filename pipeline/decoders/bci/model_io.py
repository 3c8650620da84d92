"""Fitted decoders to and from .npz files: plain arrays plus a ``kind`` string, never pickled objects."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.npz import NpzError, load_npz
from pipeline.decoders.bci.base import BinDecoder
from pipeline.decoders.bci.features import BCIInputError
from pipeline.decoders.bci.kalman import KalmanDecoder
from pipeline.decoders.bci.snn import SNNDecoder
from pipeline.decoders.bci.wiener import WienerDecoder


def decoder_classes() -> dict[str, type]:
    """Decoder classes by their ``kind`` as stored in model files."""
    return {cls.kind: cls for cls in (WienerDecoder, KalmanDecoder, SNNDecoder)}


def save_decoder(decoder: BinDecoder, path: str | Path) -> Path:
    """Write a fitted decoder to ``path`` (.npz, compressed); returns the path written."""
    path = Path(path)
    np.savez_compressed(path, **decoder.to_arrays())
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_decoder(path: str | Path) -> BinDecoder:
    """Read a decoder written by ``save_decoder``; errors name the file and the missing or bad array."""
    path = Path(path)
    if not path.is_file():
        raise BCIInputError(f"{path}: no such model file")
    try:
        arrays = load_npz(path)
    except NpzError as exc:
        raise BCIInputError(f"{exc} (not a spikeloop decoder .npz file)") from None
    except OSError as exc:
        raise BCIInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if "kind" not in arrays:
        raise BCIInputError(f"{path}: no 'kind' array: not a spikeloop decoder file")
    kind = str(arrays["kind"])
    classes = decoder_classes()
    if kind not in classes:
        raise BCIInputError(f"{path}: unknown decoder kind {kind!r} (known: {sorted(classes)})")
    try:
        return classes[kind].from_arrays(arrays)
    except KeyError as exc:
        raise BCIInputError(f"{path}: {kind} model is missing array {exc}") from None
    except BCIInputError as exc:
        raise BCIInputError(f"{path}: {exc}") from None
    except (ValueError, TypeError, IndexError, OverflowError, np.linalg.LinAlgError) as exc:
        raise BCIInputError(f"{path}: {kind} model has a bad array ({type(exc).__name__}: {exc})") from None
