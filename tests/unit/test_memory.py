"""release_free_memory gives freed heap pages back to the OS (glibc's malloc_trim)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from exporter.memory import release_free_memory

# A child process, so the measurement is not disturbed by the test runner's heap: 1000
# blocks of 64 KiB (malloc, below its mmap threshold) interleaved with small survivors, so
# the freed blocks sit inside the heap and glibc's automatic top-of-heap trim cannot
# return them.
_CHILD = textwrap.dedent(
    """
    import gc, re, sys
    from exporter.memory import release_free_memory

    def anon_kib():
        status = open("/proc/self/status").read()
        return int(re.search(r"RssAnon:\\s+(\\d+)", status).group(1))

    blocks, keep = [], []
    for i in range(1000):
        blocks.append(bytearray(64 * 1024))
        keep.append(bytearray(700))  # outlives the blocks: pins the heap's top
    before = anon_kib()
    del blocks
    gc.collect()
    freed = anon_kib()
    released = release_free_memory() if sys.argv[1] == "trim" else False
    after = anon_kib()
    print(before, freed, after, released)
    """
)


def _run(mode: str) -> tuple[int, int, int, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=60, check=True
    )
    before, freed, after, released = proc.stdout.split()
    return int(before), int(freed), int(after), released


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_heap_pages_go_back_to_the_os() -> None:
    before, freed, after, released = _run("trim")
    assert released == "True"
    # 1000 x 64 KiB = 62.5 MiB freed inside the heap: still resident until trimmed
    assert freed > before - 10 * 1024, (before, freed)
    assert after < freed - 40 * 1024, (before, freed, after)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_without_the_release_the_freed_pages_stay_resident() -> None:
    """The control: the drop above is the release's doing, not the allocator's own."""
    _before, freed, after, released = _run("none")
    assert released == "False"
    assert after > freed - 5 * 1024


def test_calling_it_twice_is_harmless() -> None:
    first = release_free_memory()
    assert release_free_memory() is first
