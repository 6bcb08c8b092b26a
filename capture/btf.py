"""Record layouts read from a BPF object's BTF (the .BTF ELF section).

The C structs in bpf/*.h are the one definition of every record; clang emits
their layout into the object's BTF, and this module reads it back, so the
Python decoder cannot drift from the kernel side. Format:
Documentation/bpf/btf.rst (struct btf_header, struct btf_type and the
kind-specific trailers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

BTF_MAGIC = 0xEB9F
# kind -> size of the trailer after struct btf_type, per vlen entry (or fixed)
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


@dataclass
class BtfType:
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kflag: bool
    extra: object = None  # int encoding, array tuple, member list, enum values, datasec vars


@dataclass(frozen=True)
class Field:
    """One member of a record struct, flattened to what a decoder needs."""

    name: str
    offset: int
    size: int
    # "int" (signed/unsigned integer), "char[]" (NUL-terminated text), "bytes" (u8 array),
    # "tail" (flexible array member: the variable-length rest of the record)
    kind: str
    signed: bool = False
    count: int = 1


@dataclass
class StructLayout:
    name: str
    size: int
    fields: list[Field] = field(default_factory=list)

    @property
    def tail(self) -> Field | None:
        return next((f for f in self.fields if f.kind == "tail"), None)


class Btf:
    def __init__(self, types: list[BtfType]):
        self.types = types  # index = type id; 0 is void

    @classmethod
    def from_object(cls, path: str | Path) -> Btf:
        with open(path, "rb") as fh:
            sec = ELFFile(fh).get_section_by_name(".BTF")
            if sec is None:
                raise ValueError(f"{path}: no .BTF section (build with clang -g)")
            return cls.parse(sec.data())

    @classmethod
    def parse(cls, data: bytes) -> Btf:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data, 0)
        if magic != BTF_MAGIC:
            raise ValueError("bad BTF magic")
        strings = data[hdr_len + str_off: hdr_len + str_off + str_len]

        def name_at(off: int) -> str:
            return strings[off: strings.index(b"\0", off)].decode()

        types: list[BtfType] = [BtfType(0, "void", 0, 0, False)]
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
            t = BtfType(kind, name_at(name_off), size_or_type, vlen, kflag)
            if kind == KIND_INT:
                t.extra = struct.unpack_from("<I", data, pos)[0]
                pos += 4
            elif kind == KIND_ARRAY:
                t.extra = struct.unpack_from("<III", data, pos)  # elem type, index type, nelems
                pos += 12
            elif kind in (KIND_STRUCT, KIND_UNION):
                members = []
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    pos += 12
                    bit_off = m_off & 0xFFFFFF if kflag else m_off
                    members.append((name_at(m_name), m_type, bit_off))
                t.extra = members
            elif kind == KIND_ENUM:
                vals = []
                for _ in range(vlen):
                    e_name, e_val = struct.unpack_from("<Ii", data, pos)
                    pos += 8
                    vals.append((name_at(e_name), e_val))
                t.extra = vals
            elif kind == KIND_ENUM64:
                vals = []
                for _ in range(vlen):
                    e_name, lo, hi = struct.unpack_from("<III", data, pos)
                    pos += 12
                    vals.append((name_at(e_name), lo | (hi << 32)))
                t.extra = vals
            elif kind == KIND_FUNC_PROTO:
                pos += 8 * vlen
            elif kind == KIND_VAR:
                t.extra = struct.unpack_from("<I", data, pos)[0]  # linkage
                pos += 4
            elif kind == KIND_DATASEC:
                vars_ = []
                for _ in range(vlen):
                    v_type, v_off, v_size = struct.unpack_from("<III", data, pos)
                    pos += 12
                    vars_.append((v_type, v_off, v_size))
                t.extra = vars_
            elif kind == KIND_DECL_TAG:
                pos += 4
            types.append(t)
        return cls(types)

    def resolve(self, tid: int) -> BtfType:
        t = self.types[tid]
        while t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        return t

    def find(self, kind: int, name: str) -> BtfType:
        for t in self.types:
            if t.kind == kind and t.name == name:
                return t
        raise KeyError(f"BTF has no {name}")

    def size_of(self, tid: int) -> int:
        t = self.resolve(tid)
        if t.kind == KIND_ARRAY:
            elem, _idx, n = t.extra
            return self.size_of(elem) * n
        if t.kind == KIND_PTR:
            return 8
        return t.size_or_type

    def struct(self, name: str) -> StructLayout:
        """The flattened layout of `struct name` (nested structs get no prefix)."""
        t = self.find(KIND_STRUCT, name)
        layout = StructLayout(name, t.size_or_type)
        self._flatten(t, 0, layout.fields)
        return layout

    def _flatten(self, t: BtfType, base: int, out: list[Field]) -> None:
        for m_name, m_type, bit_off in t.extra:
            if bit_off % 8:
                raise ValueError(f"{t.name}.{m_name}: bitfields are not supported in records")
            off = base + bit_off // 8
            mt = self.resolve(m_type)
            if mt.kind in (KIND_STRUCT, KIND_UNION):
                self._flatten(mt, off, out)
            elif mt.kind == KIND_ARRAY:
                elem_id, _idx, n = mt.extra
                elem = self.resolve(elem_id)
                esize = self.size_of(elem_id)
                if n == 0:
                    out.append(Field(m_name, off, 0, "tail"))
                elif esize == 1 and elem.name == "char":
                    out.append(Field(m_name, off, n, "char[]", count=n))
                elif esize == 1:
                    out.append(Field(m_name, off, n, "bytes", count=n))
                else:
                    # An array of structs (ue_py_stack.frames) keeps its place and count only.
                    out.append(Field(m_name, off, esize * n, "int", signed=elem.kind == KIND_INT and bool(
                                     elem.extra and (elem.extra >> 24) & 1), count=n))
            elif mt.kind in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR):
                signed = mt.kind == KIND_INT and bool((mt.extra >> 24) & 1)
                if mt.kind == KIND_ENUM:
                    signed = mt.kflag
                out.append(Field(m_name, off, self.size_of(m_type), "int", signed=signed))
            else:
                raise ValueError(f"{t.name}.{m_name}: unsupported BTF kind {mt.kind}")

    def enum(self, name: str) -> dict[str, int]:
        for t in self.types:
            if t.kind in (KIND_ENUM, KIND_ENUM64) and t.name == name:
                return dict(t.extra)
        raise KeyError(f"BTF has no enum {name}")

    def enums(self) -> dict[str, dict[str, int]]:
        """Every named enum type: name -> {enumerator: value} (anonymous enums have no name to look up)."""
        return {t.name: dict(t.extra) for t in self.types if t.kind in (KIND_ENUM, KIND_ENUM64) and t.name}



def section_variables(path: str | Path, section: str) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of the global variables in a data section such as .rodata.

    clang leaves DATASEC offsets at 0 in the object (libbpf fixes them up at
    load time from the ELF symbols), so the symbol table is the source here.
    """
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        sec_index = next((i for i, s in enumerate(elf.iter_sections()) if s.name == section), None)
        symtab = elf.get_section_by_name(".symtab")
        if sec_index is None or symtab is None:
            return {}
        return {sym.name: (sym["st_value"], sym["st_size"]) for sym in symtab.iter_symbols()
                if sym["st_shndx"] == sec_index and sym["st_info"]["type"] == "STT_OBJECT"}
