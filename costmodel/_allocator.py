"""Fresh pages per layer on a CPU: glibc malloc's main heap, simulated over a forward pass.

PyTorch's CPU allocator has no cache: every tensor is a malloc and a free. A
block written for the first time since the OS handed it out page-faults on every
page (``page_fault_s_per_byte``), and glibc hands out fresh pages in two ways
(mallopt(3); what ``costmodel._measure.steady_state_allocator`` fixes):

- a request of at least ``mmap_threshold_bytes`` (32 MiB once the dynamic
  threshold has converged) gets its own mapping, fresh on every call;
- a smaller one comes from the heap: the best-fitting free chunk, else the top,
  which grows with fresh pages. When freeing leaves more than the trim threshold
  (twice the mmap threshold, 64 MiB) free at the top, glibc returns it to the OS,
  so a network whose large tensors pile up past that point faults them anew on
  every pass.

oneDNN computes a conv in a blocked layout (nChw8c): PyTorch's CPU conv reorders
its NCHW input into a temporary and computes into another before copying into
the output, so a conv call allocates its output, then an input-sized and an
output-sized temporary (measured on the development VM: a 50 MiB -> 50 MiB conv
faults 150 MiB per call; an in-place ReLU none).

The simulation frees a tensor after the last layer that reads it (or a view or
in-place result of it), runs the pass three times and reports the last, the
steady state a long-running process reaches. Small allocations are simulated
like large ones; glibc's size-class bins are not, which is exact enough for
tensors of megabytes (experiments/cpu_page_faults.py compares with faults
counted by the OS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from costmodel._formulas import Counts
from costmodel._kinds import latency_class
from costmodel._spec import NETWORK_INPUT, LayerSpec
from costmodel._units import elements_to_bytes
from hw_profiles import HardwareProfile

PASSES = 3  # the heap's layout repeats from the second pass on
# The latency classes PyTorch's CPU build runs with oneDNN (costmodel._kinds):
# they reorder through blocked temporaries; its native convs and GEMMs do not.
REORDER_CLASSES = frozenset({"dense_conv", "pointwise_conv", "group_conv", "depthwise_conv"})


class Fresh(NamedTuple):
    """Bytes a layer writes on fresh pages per pass, by where they come from."""

    mapped: int = 0  # its own mappings: allocations at or above the mmap threshold
    grown: int = 0  # heap growth past what the heap held, after glibc trimmed it

    @property
    def total(self) -> int:
        return self.mapped + self.grown


NONE = Fresh()


@dataclass
class _Chunk:
    start: int
    size: int
    free: bool = False


@dataclass
class Heap:
    """glibc's main arena, as far as large tensors see it: best fit, top, trim, mmap."""

    mmap_threshold_bytes: float
    chunks: list[_Chunk] = field(default_factory=list)  # in address order
    extent: int = 0  # bytes the heap holds from the OS
    mapped_bytes: int = 0  # bytes of fresh mappings handed out
    grown_bytes: int = 0  # bytes the heap grew by: pages never written since the OS gave them

    @property
    def fresh(self) -> Fresh:
        return Fresh(self.mapped_bytes, self.grown_bytes)

    @property
    def trim_threshold_bytes(self) -> float:
        return 2 * self.mmap_threshold_bytes

    def malloc(self, size: int) -> _Chunk | None:
        """A chunk of ``size`` bytes; None for a fresh mapping of its own."""
        if size >= self.mmap_threshold_bytes:
            self.mapped_bytes += size
            return None
        # The free chunk at the end is the top, which glibc uses only when no bin fits.
        body = self.chunks[:-1] if self.chunks and self.chunks[-1].free else self.chunks
        fits = [c for c in body if c.free and c.size >= size]
        if fits:
            best = min(fits, key=lambda c: c.size)
            if best.size > size:
                i = self.chunks.index(best)
                self.chunks.insert(i + 1, _Chunk(best.start + size, best.size - size, True))
                best.size = size
            best.free = False
            return best
        start = self.chunks[-1].start + self.chunks[-1].size if self.chunks else 0
        if self.chunks and self.chunks[-1].free:  # the free top chunk grows
            start = self.chunks.pop().start
        chunk = _Chunk(start, size)
        self.chunks.append(chunk)
        if start + size > self.extent:
            self.grown_bytes += start + size - self.extent
            self.extent = start + size
        return chunk

    def free(self, chunk: _Chunk | None) -> None:
        if chunk is None:  # munmap
            return
        chunk.free = True
        i = self.chunks.index(chunk)
        if i + 1 < len(self.chunks) and self.chunks[i + 1].free:
            chunk.size += self.chunks.pop(i + 1).size
        if i > 0 and self.chunks[i - 1].free:
            self.chunks[i - 1].size += self.chunks.pop(i).size
            chunk = self.chunks[i - 1]
        if chunk is self.chunks[-1] and self.extent - chunk.start >= self.trim_threshold_bytes:
            self.extent = chunk.start
            self.chunks.pop()


def _buffers(
    specs: Sequence[LayerSpec], counts: Sequence[Counts], in_place: Sequence[bool]
) -> list[str | None]:
    """Per layer, the name of the buffer its output lives in (None: the network input).

    A view (``Counts.alias``), an in-place op or a fused epilogue writes no new
    buffer: its output is its input's.
    """
    owner: dict[str, str | None] = {NETWORK_INPUT: None}
    out: list[str | None] = []
    for i, (s, c) in enumerate(zip(specs, counts, strict=True)):
        src = _reads(specs, i)[0]
        key = s.name or str(i)
        owner[key] = owner.get(src) if (c.alias or s.inplace or in_place[i]) else key
        out.append(owner[key])
    return out


def _reads(specs: Sequence[LayerSpec], i: int) -> tuple[str, ...]:
    s = specs[i]
    if s.inputs:
        return s.inputs
    return (specs[i - 1].name or str(i - 1),) if i else (NETWORK_INPUT,)


def fresh_bytes(
    specs: Sequence[LayerSpec],
    counts: Sequence[Counts],
    hw: HardwareProfile,
    precision: str,
    fused: Sequence[bool] | None = None,
) -> list[Fresh]:
    """Bytes each layer writes on fresh pages per forward pass, at steady state.

    ``specs`` run in order as one network; a layer without ``inputs`` reads the
    layer before it. ``fused``: layers that write no tensor of their own.
    """
    if hw.mmap_threshold_bytes <= 0:
        return [NONE] * len(specs)
    # Fitted parameters do not move fresh bytes: a fit costs the same networks hundreds of
    # times, so the simulation runs once per network and allocator setting.
    key = (tuple((s, s.name, s.inputs, s.inplace) for s in specs), tuple(fused or ()),
           hw.mmap_threshold_bytes, hw.conv_dispatch, hw.threads, precision)  # fmt: skip
    if key not in _MEMO:
        if len(_MEMO) >= MEMO_SIZE:
            del _MEMO[next(iter(_MEMO))]
        _MEMO[key] = _simulate(specs, counts, hw, precision, fused)
    return list(_MEMO[key])


MEMO_SIZE = 4096
_MEMO: dict[tuple[object, ...], list[Fresh]] = {}


def _simulate(
    specs: Sequence[LayerSpec],
    counts: Sequence[Counts],
    hw: HardwareProfile,
    precision: str,
    fused: Sequence[bool] | None,
) -> list[Fresh]:
    buf = _buffers(specs, counts, fused or [False] * len(specs))
    sizes = _allocations(specs, counts, buf, hw, precision)
    per_layer = [NONE] * len(specs)
    flat = [b for layer in sizes for b in layer]
    if not flat or (
        max(flat) < hw.mmap_threshold_bytes and sum(flat) < 2 * hw.mmap_threshold_bytes
    ):
        return per_layer  # nothing is mapped and the heap never grows past the trim point
    frees = _frees(specs, buf)
    heap = Heap(hw.mmap_threshold_bytes)
    for _ in range(PASSES):
        live: dict[str, _Chunk | None] = {}
        for i, (s, own) in enumerate(zip(specs, sizes, strict=True)):
            before = heap.fresh
            if own:
                live[s.name or str(i)] = heap.malloc(own[0])
                for t in [heap.malloc(b) for b in own[1:]]:
                    heap.free(t)
            for b in frees[i]:
                heap.free(live.pop(b))
            after = heap.fresh
            per_layer[i] = Fresh(after.mapped - before.mapped, after.grown - before.grown)
        for chunk in live.values():  # the outputs nobody reads: the caller drops them
            heap.free(chunk)
    return per_layer


def _frees(specs: Sequence[LayerSpec], buf: Sequence[str | None]) -> list[list[str]]:
    """Per layer, the buffers whose last reader it is (freed once it has run)."""
    name_to_buf = {s.name or str(i): b for i, (s, b) in enumerate(zip(specs, buf, strict=True))}
    last_read: dict[str, int] = {}
    for i in range(len(specs)):
        for r in _reads(specs, i):
            b = name_to_buf.get(r)
            if b is not None:
                last_read[b] = i
    out: list[list[str]] = [[] for _ in specs]
    for b, i in last_read.items():
        out[i].append(b)
    return out


def _allocations(
    specs: Sequence[LayerSpec],
    counts: Sequence[Counts],
    buf: Sequence[str | None],
    hw: HardwareProfile,
    precision: str,
) -> list[tuple[int, ...]]:
    """Per layer, the bytes it mallocs in order: its output, then any reorder temporaries."""
    out: list[tuple[int, ...]] = []
    for i, (s, c) in enumerate(zip(specs, counts, strict=True)):
        if buf[i] != (s.name or str(i)):  # a view, in place or fused: no tensor of its own
            out.append(())
            continue
        sizes = [c.output_elements]
        if latency_class(s, hw.conv_dispatch, hw.threads) in REORDER_CLASSES:
            sizes += [_in_elements(s), c.output_elements]
        out.append(tuple(elements_to_bytes(e, precision) for e in sizes))
    return out


def _in_elements(spec: LayerSpec) -> int:
    n = 1
    for d in spec.in_shape:
        n *= d
    return n
