"""CTranslate2's model.bin (format version 6): the variable index and the tensors, read lazily.

A leaf: it imports nothing from pefty_whisper but `errors`, so the runtime (a model directory's
text context), the reverse conversion and the tests can all read a model.bin without pulling in
each other.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pefty_whisper.errors import ModelError

if TYPE_CHECKING:
    import torch

__all__ = ["CT2_BINARY_VERSION", "Ct2ModelFile", "Ct2Variable"]

CT2_BINARY_VERSION = 6
# model.bin dtype codes (DataType enum in ctranslate2/types.h): name and bytes per element.
_CT2_DTYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 4),
    1: ("int8", 1),
    2: ("int16", 2),
    3: ("int32", 4),
    4: ("float16", 2),
    5: ("bfloat16", 2),
}


@dataclass(frozen=True)
class Ct2Variable:
    """One variable's place in model.bin; the data stays on disk until asked for."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    num_bytes: int


class Ct2ModelFile:
    """The index of a CTranslate2 model.bin (format version 6), read without loading the weights.

    Reading the index alone is cheap (seeks only), so a processor builder can learn n_mels from it
    and a large model is loaded one tensor at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.variables: dict[str, Ct2Variable] = {}
        self.aliases: dict[str, str] = {}
        with path.open("rb") as handle:
            size = path.stat().st_size
            try:
                self._read_index(handle, size)
            except struct.error as exc:
                raise ModelError(f"{path} is truncated or not a CTranslate2 model.bin") from exc

    def _read_index(self, handle: BinaryIO, size: int) -> None:
        self.version = _read_u32(handle)
        if self.version != CT2_BINARY_VERSION:
            raise ModelError(
                f"{self.path}: CTranslate2 model format version {self.version}, only version "
                f"{CT2_BINARY_VERSION} can be imported: re-convert it with ctranslate2 >= 3.0"
            )
        self.spec_name = _read_string(handle)
        self.spec_revision = _read_u32(handle)
        for _ in range(_read_u32(handle)):
            name = _read_string(handle)
            rank = _read_u8(handle)
            shape = tuple(_read_u32(handle) for _ in range(rank))
            code = _read_u8(handle)
            if code not in _CT2_DTYPES:
                raise ModelError(f"{self.path}: variable {name} has unknown dtype code {code}")
            dtype, itemsize = _CT2_DTYPES[code]
            num_bytes = _read_u32(handle)
            offset = handle.tell()
            if num_bytes != math.prod(shape) * itemsize or offset + num_bytes > size:
                raise ModelError(
                    f"{self.path} is truncated or corrupt at variable {name} "
                    "(a split model.bin needs all of its parts, concatenated in order)"
                )
            self.variables[name] = Ct2Variable(name, shape, dtype, offset, num_bytes)
            handle.seek(num_bytes, 1)
        for _ in range(_read_u32(handle)):
            alias = _read_string(handle)
            self.aliases[alias] = _read_string(handle)

    def resolve(self, name: str) -> str:
        """The stored variable behind `name`: CT2 replaces duplicated tensors by aliases."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ModelError(f"{self.path}: alias cycle at {name}")
            seen.add(name)
            name = self.aliases[name]
        return name

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def variable(self, name: str) -> Ct2Variable:
        resolved = self.resolve(name)
        if resolved not in self.variables:
            raise ModelError(f"{self.path} has no variable {name}: not a Whisper model.bin")
        return self.variables[resolved]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.variable(name).shape

    def read(self, name: str) -> torch.Tensor:
        """The variable as a tensor in its stored dtype."""
        import torch

        var = self.variable(name)
        with self.path.open("rb") as handle:
            handle.seek(var.offset)
            data = bytearray(handle.read(var.num_bytes))
        if var.num_bytes == 0:
            return torch.empty(var.shape, dtype=getattr(torch, var.dtype))
        # CTranslate2 writes native byte order; every platform it ships for is little-endian.
        return torch.frombuffer(data, dtype=getattr(torch, var.dtype)).reshape(var.shape)

    def scalar(self, name: str) -> int | None:
        """A scalar attribute (num_heads, activation, ...), or None when the file lacks it."""
        if name not in self:
            return None
        return int(self.read(name).item())

    def layer_count(self, stack: str) -> int:
        """How many `<stack>/layer_N/` blocks the file holds."""
        pattern = re.compile(rf"^{stack}/layer_(\d+)/")
        indices = {int(m.group(1)) for n in self.variables if (m := pattern.match(n))}
        if indices != set(range(len(indices))):
            raise ModelError(f"{self.path}: {stack} layers are not numbered 0..N-1")
        return len(indices)

    def weight_dtype(self) -> str:
        """The dtype most of the weights are stored in (what the model was exported as)."""
        counts: dict[str, int] = {}
        for var in self.variables.values():
            if var.shape:
                counts[var.dtype] = counts.get(var.dtype, 0) + math.prod(var.shape)
        return max(counts, key=counts.__getitem__)


def _read_u8(handle: BinaryIO) -> int:
    return struct.unpack("<B", handle.read(1))[0]


def _read_u32(handle: BinaryIO) -> int:
    return struct.unpack("<I", handle.read(4))[0]


def _read_string(handle: BinaryIO) -> str:
    # u16 length that counts the trailing NUL, then the bytes and the NUL.
    length = struct.unpack("<H", handle.read(2))[0]
    raw = handle.read(length)
    if len(raw) != length:
        raise struct.error("short read")
    return raw[:-1].decode("utf-8")
