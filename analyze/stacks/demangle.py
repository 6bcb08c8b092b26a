"""C++ symbol names as people read them: `_ZN2ns6WorkerIiE4spinEv` -> `ns::Worker<int>::spin()`.

Demangling goes through libstdc++'s own `abi::__cxa_demangle` (the `cxxfilt`
package calls it), the same demangler as binutils' c++filt and perf, so names
match what those tools print. libstdc++ is on every Debian system (apt depends
on it); no binutils needed. Runs offline, on names read from the archive: the
archive keeps the mangled names, exactly as in the objects' symbol tables.

A name that is not a mangled C++ name (C functions, `module+0x...` names), or
that the demangler rejects, is returned unchanged; so is every name when
libstdc++ cannot be loaded (`available()` says whether it could).
"""

from __future__ import annotations

from functools import lru_cache

try:
    import cxxfilt
except ImportError:  # not installed: names stay mangled
    cxxfilt = None

MANGLED_PREFIX = "_Z"  # Itanium C++ ABI: every mangled external name starts so


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """The demangled name, or name itself when it is not one the C++ ABI demangles."""
    if cxxfilt is None or not name.startswith(MANGLED_PREFIX):
        return name
    try:
        return cxxfilt.demangle(name)
    except (cxxfilt.Error, UnicodeError):  # InvalidName, or libstdc++ not found
        return name


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether names get demangled on this machine."""
    return demangle("_Z1fv") == "f()"
