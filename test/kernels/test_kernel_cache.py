"""The numba cache of the package's kernels is stamped with all kernel sources, not each function's
own file: a kernel compiled with another file's kernels in it (cpu_stream._stream_tick holds
cpu._regress_batch) must not load stale machine code after that other file changes."""
from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

pytest.importorskip("numba")

from pvrnn_ros.kernels import _kernel_cache, cpu, cpu_stream, cpu_train  # noqa: E402


def _locator(dispatcher):
    return dispatcher._cache._impl._locator


@pytest.mark.parametrize("kernel", [cpu_stream._stream_tick, cpu._regress_batch, cpu._output_loss,
                                    cpu_train._mv4])
def test_every_kernel_is_stamped_with_all_kernel_sources(kernel):
    locator = _locator(kernel)
    assert type(locator).__name__.startswith("PvrnnKernels")
    assert locator.get_source_stamp() == _kernel_cache.STAMP == _kernel_cache.sources_stamp()


def test_the_stamp_changes_when_any_kernel_file_changes(tmp_path):
    folder = tmp_path / "kernels"
    shutil.copytree(_kernel_cache._HERE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert _kernel_cache.sources_stamp(str(folder)) == _kernel_cache.STAMP
    cpu_py = folder / "cpu.py"  # the file cpu_stream's cached tick compiles in, not its own
    cpu_py.write_text(cpu_py.read_text() + "\n# an edit\n")
    assert _kernel_cache.sources_stamp(str(folder)) != _kernel_cache.STAMP


def test_functions_outside_the_kernels_keep_numba_s_own_stamp(tmp_path):
    module = tmp_path / "elsewhere.py"
    module.write_text("from numba import njit\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    spec = importlib.util.spec_from_file_location("elsewhere_for_stamp_test", module)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        assert mod.twice(3) == 6
        locator = _locator(mod.twice)
        assert not type(locator).__name__.startswith("PvrnnKernels")
        assert locator.get_source_stamp() != _kernel_cache.STAMP
    finally:
        sys.modules.pop(spec.name, None)


def test_files_without_kernels_do_not_invalidate_the_cache(tmp_path):
    folder = tmp_path / "kernels"
    shutil.copytree(_kernel_cache._HERE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    bench_py = folder / "bench.py"
    bench_py.write_text(bench_py.read_text() + "\n# an edit\n")
    assert _kernel_cache.sources_stamp(str(folder)) == _kernel_cache.STAMP
