"""torch.save's files read without torch: its zip format (torch 1.6 on) and the older
sequence of pickles (the published CIFAR ResNets use it). Tensors are rebuilt as numpy
arrays; every other pickled object is refused by name, so nothing in a file is ever run.
Each problem is a WeightsError naming the file."""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from resnet_jax.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save's older format
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
WHOLE_MODEL = ("holds pickled Python objects besides tensors ({found}: a torch.save of a whole "
               "model?), which are never run here; save model.state_dict() with torch.save and "
               "pass that")
DAMAGED = "is truncated or damaged (cannot be read to its end); download or copy it again"


@dataclasses.dataclass
class _Storage:
    """A storage the pickle names; its values come from the archive or the file's tail."""
    dtype: np.dtype
    key: str
    values: np.ndarray | None = None


@dataclasses.dataclass
class _Tensor:
    """A tensor the pickle describes, rebuilt once its storage's values are read."""
    storage: _Storage | tuple[_Storage, int, int]  # or a view: (root, offset, size)
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        storage, start = self.storage, 0
        if isinstance(storage, tuple):  # a view into a larger storage (the oldest files)
            storage, start, _ = storage
        flat = storage.values[start:]
        if not self.shape:
            return np.array(flat[self.offset])
        itemsize = flat.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[self.offset:], self.shape, [s * itemsize for s in self.stride]).copy()


def _storage_type(name: str) -> type:
    dtype = np.dtype(STORAGE_DTYPES[name])
    return type(name, (), {"dtype": dtype})


def _rebuild_tensor(storage: Any, offset: int, shape: tuple, stride: tuple, *_: Any) -> _Tensor:
    return _Tensor(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _storage_type(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Builds containers and tensors only; storages are named, their values read later."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise _Foreign(f"{module}.{name}")
        return ALLOWED[(module, name)]

    def persistent_load(self, saved_id: Any) -> Any:
        kind = saved_id[0].decode() if isinstance(saved_id[0], bytes) else saved_id[0]
        if kind != "storage":  # 'module': a whole model's source, in the oldest files
            raise _Foreign(f"a persistent {kind!r}")
        storage_type, key, _location = saved_id[1:4]
        root = self.storages.setdefault(str(key), _Storage(storage_type.dtype, str(key)))
        view = saved_id[5] if len(saved_id) > 5 else None
        return root if view is None else (root, int(view[1]), int(view[2]))


class _Foreign(Exception):
    """A pickled object that is not a tensor or a container of tensors."""


def read(source: Path | IO[bytes], name: str) -> Any:
    """What torch.save wrote into ``source`` (a path, or a seekable binary file), with
    numpy arrays for its tensors; WeightsError, naming the file as ``name``, for anything
    else pickled, or a file cut short or damaged."""
    try:
        if isinstance(source, Path):
            with source.open("rb") as file:
                return _read(file)
        return _read(source)
    except _Foreign as foreign:
        raise WeightsError(f"{name} {WHOLE_MODEL.format(found=foreign)}") from None
    except (EOFError, zipfile.BadZipFile, struct.error, pickle.UnpicklingError, KeyError,
            ValueError, IndexError, TypeError, AttributeError):
        raise WeightsError(f"{name} {DAMAGED}") from None


def _read(file: IO[bytes]) -> Any:
    if file.read(4) == b"PK\x03\x04":
        file.seek(0)
        return _read_zip(file)
    file.seek(0)
    return _read_legacy(file)


def _read_zip(file: IO[bytes]) -> Any:
    with zipfile.ZipFile(file) as archive:
        pickled = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        prefix = pickled.removesuffix("data.pkl")
        storages: dict[str, _Storage] = {}
        loaded = _Unpickler(io.BytesIO(archive.read(pickled)), storages).load()
        order = "<"
        if f"{prefix}byteorder" in archive.namelist():
            order = "<" if archive.read(f"{prefix}byteorder").strip() == b"little" else ">"
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.values = np.frombuffer(raw, storage.dtype.newbyteorder(order))
    return _arrays(loaded)


def _read_legacy(file: IO[bytes]) -> Any:
    storages: dict[str, _Storage] = {}
    header = [_Unpickler(file, storages).load() for _ in range(3)]  # magic, version, info
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
        raise ValueError("not torch.save's format")
    loaded = _Unpickler(file, storages).load()
    for key in _Unpickler(file, storages).load():  # the storages' values, in this order
        storage = storages[str(key)]
        count = struct.unpack("<q", file.read(8))[0]
        raw = file.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise EOFError
        storage.values = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
    return _arrays(loaded)


def _arrays(value: Any) -> Any:
    """``value`` with each tensor rebuilt as a numpy array (dicts, lists, tuples walked)."""
    if isinstance(value, _Tensor):
        return value.array()
    if isinstance(value, dict):
        return {key: _arrays(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_arrays(item) for item in value)
    return value
