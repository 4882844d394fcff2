"""A model.npz looked at before it is loaded: the archive's listing and each array's header,
checked against the arrays the model must hold, so that a hostile or damaged file is refused in
one line without reading (or inflating) its data.

An .npz is a zip archive of .npy members; a member starts with a short header (magic, version,
dtype, order, shape) that numpy.lib.format reads without touching the data. Checked here: every
member is a `.npy` of a floating dtype (never an object array: nothing is ever unpickled), its
name and shape are the spec's, the size the archive declares for it is what that header needs,
and the whole declares no more than MAX_EXPANSION times the file's own size.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from charrnn.errors import ModelFormatError, StorageError, describe_os_error

MAX_HEADER_BYTES = 1 << 16  # numpy writes a few hundred; its own reader stops at 10,000
MAX_MEMBERS = 4096
MAX_EXPANSION = 64  # declared bytes per byte of file (charrnn writes uncompressed: 1)
SLACK_BYTES = 1 << 20


@dataclass(frozen=True)
class ArrayHeader:
    name: str  # without ".npy"
    shape: tuple[int, ...]
    dtype: np.dtype
    member_bytes: int  # the member's uncompressed size, as the listing declares it

    @property
    def data_bytes(self) -> int:
        size = self.dtype.itemsize
        for n in self.shape:
            size *= n
        return size


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, byte_arrays: frozenset[str]) -> ArrayHeader:
    if not info.filename.endswith(".npy"):
        raise ValueError(f"member {info.filename!r} is not an array (.npy)")
    with archive.open(info) as member:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(member, max_header_size=MAX_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(member, max_header_size=MAX_HEADER_BYTES)
        else:
            raise ValueError(f"member {info.filename!r} has .npy version {version}, not 1.0 or 2.0")
        header_bytes = member.tell()
    name = info.filename[: -len(".npy")]
    if name in byte_arrays:
        if dtype != np.uint8 or len(shape) != 1:
            raise ValueError(f"array {name} is of type {dtype} and shape {tuple(shape)}, not bytes")
    elif dtype.hasobject or dtype.kind != "f" or dtype.itemsize > 8:
        raise ValueError(f"array {name} is of type {dtype}, not floating point")
    header = ArrayHeader(name, tuple(int(n) for n in shape), dtype, int(info.file_size))
    if info.file_size != header_bytes + header.data_bytes:
        raise ValueError(
            f"array {name}'s member declares {info.file_size} bytes, but its header "
            f"{header.shape} needs {header_bytes + header.data_bytes}"
        )
    return header


def read_headers(path: str | os.PathLike, byte_arrays: tuple[str, ...] = ()) -> dict[str, ArrayHeader]:
    """Each array's header, by name, read from the listing and the members' first bytes only;
    ModelFormatError (one line) for a file that is not such an archive or declares too much.
    Arrays are floating point, except those named in `byte_arrays`: 1-D uint8 (e.g. JSON text)."""
    path = Path(path)
    try:
        file_bytes = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise ValueError(f"{len(members)} members")
            declared = sum(info.file_size for info in members)
            if declared > MAX_EXPANSION * file_bytes + SLACK_BYTES:
                raise ValueError(
                    f"its members declare {declared} bytes, more than a file of {file_bytes} bytes can hold"
                )
            headers = {}
            for info in members:
                header = _read_header(archive, info, frozenset(byte_arrays))
                if header.name in headers:
                    raise ValueError(f"array {header.name} appears twice")
                headers[header.name] = header
            return headers
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing") from None
    except (PermissionError, IsADirectoryError) as error:
        raise StorageError(describe_os_error(error, path)) from None
    except (
        OSError,
        ValueError,
        zipfile.BadZipFile,
        EOFError,
        RuntimeError,
        NotImplementedError,
        SyntaxError,
        TypeError,
        OverflowError,
        MemoryError,
    ) as error:
        raise ModelFormatError(f"{path}: not a readable .npz file ({_one_line(error)})") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


def check_arrays(
    path: str | os.PathLike, headers: dict[str, ArrayHeader], shapes: dict[str, tuple[int, ...]], what: str
) -> None:
    """ModelFormatError (one line) unless `headers` hold exactly the arrays `shapes` names, each of
    its shape. `what` describes the model (for the message)."""
    missing = [name for name in shapes if name not in headers]
    if missing:
        raise ModelFormatError(f"{path}: missing arrays: {', '.join(missing)}")
    extra = sorted(set(headers) - set(shapes))
    if extra:
        raise ModelFormatError(f"{path}: arrays not in a {what} model: {', '.join(extra)}")
    for name, shape in shapes.items():
        if headers[name].shape != tuple(shape):
            raise ModelFormatError(f"{path}: {name} has shape {headers[name].shape}, expected {tuple(shape)}")
