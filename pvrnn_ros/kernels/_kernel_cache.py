"""One freshness stamp for all of this folder's cached numba kernels.

numba's on-disk cache checks a compiled function against its own source file only. A kernel that
compiles in kernels of another file (`cpu_stream._stream_tick` holds `cpu._regress_batch` and
`cpu._window_pass`; `cpu_train` uses `cpu._mva`) would load stale machine code after that other file
changed, and with a changed buffer layout that is a segfault, not an error. So every kernel defined
in this folder is stamped with a hash of all the folder's kernel sources: any edit of one recompiles
all of them.
Imported by each kernel module before its first `@njit(cache=True)`.
"""
from __future__ import annotations

import hashlib
import os

from numba.core import caching

_HERE = os.path.dirname(os.path.abspath(__file__))


def sources_stamp(folder: str = _HERE) -> str:
    """A hash of the .py files in `folder` that define numba kernels (names and contents): editing
    the bench or the triton backend leaves the cache valid."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                text = f.read()
            if b"@njit" in text:
                digest.update(name.encode())
                digest.update(text)
    return digest.hexdigest()


STAMP = sources_stamp()


def _stamped(base: type) -> type:
    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _HERE:
                return None  # someone else's function: numba's own locators
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return STAMP

    Locator.__name__ = Locator.__qualname__ = f"PvrnnKernels{base.__name__.lstrip('_')}"
    return Locator


def _install() -> None:
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")  # the name before numba 0.61
    if getattr(impl, "_pvrnn_kernels_stamped", False):
        return
    # numba's order: the user's NUMBA_CACHE_DIR, then __pycache__ beside the source, then the user-wide cache
    names = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    bases = [getattr(caching, n, None) or getattr(caching, "_" + n, None) for n in names]
    impl._locator_classes = [_stamped(b) for b in bases if b is not None] + list(impl._locator_classes)
    impl._pvrnn_kernels_stamped = True


_install()
