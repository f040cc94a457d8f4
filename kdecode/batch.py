"""Decoding many JPEGs: ``decode_batch`` (a list) and ``decode_iter`` (a stream), results in
input order.

On CPU each of ``workers`` threads reads and decodes whole images (the native reader, the C
pixel stage and torch release the GIL, so every core works), two images a worker in flight.

On a GPU the work runs in two stages that overlap:

- reading (entropy decoding to coefficients, CPU) in a pool of ``workers`` threads; the native
  reader releases the GIL, so reads run in parallel (the jpeglib reader is serialized by its
  lock, but still overlaps the second stage);
- decoding (the model, or the exact pixel stage) of groups of ``batch_size`` images: the
  calling thread hands each group to the decoder on a CUDA stream of its own, in parts of a
  quarter group as their reads complete (so the GPU works while the rest is read), the blocks
  copied without blocking from the pinned memory the workers read them into, while the pool
  already reads the next group. For numpy and PIL results the GPU also lays out each image for
  the host and copies it back to pinned memory: the group is waited for once.

Within a part, the images of one geometry (size, sampling, block grids) go through a model as
one batch (``Decoder.decode_many``), and the exact decode takes the gray and YCbCr images of all
sizes as one ragged batch: nothing is padded, so no work is spent on padding and every image
comes out as ``decode`` gives it.
"""
from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Iterable, Iterator, Sized

import torch

from .decode import (_OUTPUTS, _channels_last, _convert, _host_output, _to_host, check_model, decode_source,
                     decoder_for)
from .errors import KdecodeError
from .jpeg.reader import Source, read_coefficients, settings
from .models.base import RunOptions


def _read(index: int, src: Source, read_options: dict):
    return _item(index, read_coefficients, src, **read_options)


def _item(index: int, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or the KdecodeError / OSError it raised, naming the item."""
    try:
        return fn(*args, **kwargs)
    except KdecodeError as exc:
        if exc.source.startswith("<"):  # bytes or an unnamed file object: say which item
            return type(exc)(f"{exc.source} (item {index} of the batch)", exc.reason)
        return exc
    except OSError as exc:
        return exc


def decode_iter(srcs: Iterable[Source], model: str | None = "auto", device=None, output: str = "pil",
                batch_size: int = 16, workers: int | None = None, return_exceptions: bool = False,
                precision: str = "float32", flips: int = 1, **read_options) -> Iterator:
    """Decode ``srcs`` (paths, bytes or binary file objects; any iterable, consumed lazily) and
    yield one result per source in input order: what ``decode(src, model, device, output)``
    returns, pixel for pixel.

    On a GPU, ``batch_size`` images are read ahead and decoded as a group (in parts of a
    quarter, as they are read) while the next group is read; on CPU each of ``workers`` threads
    (default: one per CPU) reads and decodes whole images. A file that cannot be read or
    decoded raises its :class:`KdecodeError` (or ``OSError``) when its turn comes, after the
    results before it were yielded; with ``return_exceptions=True`` the exception object is
    yielded in its place and the stream goes on. ``precision``, ``flips``: as for :func:`decode`.
    ``read_options`` go to :func:`read_coefficients`.
    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    options = RunOptions(precision, flips)
    check_model(model, device, options)
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    workers = max(1, workers or os.cpu_count() or 1)
    # Fewer images than workers (a list of one 4K photo): each one's exact pixel stage gets the
    # spare workers as threads (bands of rows, see kdecode.settings.decode_threads).
    threads = 1
    if isinstance(srcs, Sized) and 0 < len(srcs) < workers:
        threads = min(settings.threads(), workers // len(srcs))
    sources = enumerate(srcs)
    if not cuda:
        # Two images a worker in flight: enough to keep every core busy, and few enough that
        # the memory of finished images is reused (fresh pages cost more than the decode).
        yield from _decode_iter_cpu(sources, model, options, device, output, 2 * workers, workers,
                                    return_exceptions, read_options, threads)
        return
    yield from _decode_iter_groups(sources, model, options, device, output, batch_size, workers, return_exceptions,
                                   read_options)


def _decode_iter_groups(sources, model, options: RunOptions, device: torch.device, output: str, batch_size: int,
                        workers: int, return_exceptions: bool, read_options: dict) -> Iterator:
    """The GPU form of decode_iter (on a CPU device it runs the same steps without a stream or
    pinned memory: what the tests check without a GPU)."""
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    # The workers read the blocks straight into pinned memory: their copies to the GPU are
    # queued without blocking, and the calling thread copies nothing itself.
    reads = dict(read_options, pin_memory=True) if stream is not None else read_options
    with ThreadPoolExecutor(workers) as pool:
        def submit_reads() -> list[Future]:
            return [pool.submit(_read, i, src, reads) for i, src in islice(sources, batch_size)]

        pending = submit_reads()
        part = -(-batch_size // 4)
        while pending:
            upcoming = submit_reads()  # the pool reads the next group while this one decodes
            # The group goes to the GPU in parts of a quarter as its reads complete: the GPU
            # work (queued, not waited for) overlaps the reads still running, and only the last
            # part's is left when the last read ends. `items` holds the read results until the
            # stream is synchronized: their pinned blocks are the sources of copies in flight.
            items: list = []
            staged: list = []
            for f in pending:
                items.append(f.result())
                if len(items) - len(staged) >= part or len(items) == len(pending):
                    staged += _launch_group(items[len(staged):], model, options, device, output, stream)
            if stream is not None:
                stream.synchronize()
            for result in _finish_group(staged, items, device, output):
                if isinstance(result, Exception) and not return_exceptions:
                    for f in upcoming:
                        f.cancel()
                    raise result
                yield result
            pending = upcoming


def decode_batch(srcs: Iterable[Source], model: str | None = "auto", device=None, output: str = "pil",
                 batch_size: int = 16, workers: int | None = None, return_exceptions: bool = False,
                 precision: str = "float32", flips: int = 1, **read_options) -> list:
    """:func:`decode_iter` collected into a list (same arguments, same order, same errors)."""
    return list(decode_iter(srcs, model, device, output, batch_size, workers, return_exceptions, precision,
                            flips, **read_options))


def _launch_group(items: list, model, options: RunOptions, device, output: str, stream) -> list:
    """Queue the GPU work for a list of read results on ``stream``: for each, its image on the
    GPU (``output="torch"``), its samples being copied to pinned host memory (numpy, PIL), or
    the exception it stays. Valid once the stream is synchronized (see :func:`_finish_group`)."""
    results: list = list(items)  # exceptions stay where they are
    ok = [i for i, c in enumerate(items) if not isinstance(c, Exception)]
    # The images of one decoder go to it together, on our stream (it batches them by geometry).
    with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        by_decoder: dict = {}
        for i in ok:
            try:
                by_decoder.setdefault(decoder_for(items[i], model, device, options), []).append(i)
            except KdecodeError as exc:
                results[i] = exc
        for decoder, indices in by_decoder.items():
            try:
                images = decoder.decode_many([items[i] for i in indices], device)
            except KdecodeError as exc:
                images = [exc] * len(indices)
            for i, image in zip(indices, images):
                results[i] = image
        if output != "torch":
            # Each image is laid out for the host on the GPU and copied to pinned memory on our
            # stream, before the one wait: the host only wraps the samples (converting a CHW
            # copy on the calling thread took longer than decoding the batch).
            results = [r if isinstance(r, Exception) else _to_host(_channels_last(r, output), non_blocking=True)
                       for r in results]
    return results


def _finish_group(staged: list, items: list, device, output: str) -> list:
    """The results of :func:`_launch_group` (its stream synchronized) as ``output``."""
    if output == "torch":
        return [r if isinstance(r, Exception) else _convert(r, output, device, c) for r, c in zip(staged, items)]
    return [r if isinstance(r, Exception) else _host_output(r.numpy(), c, device, output)
            for r, c in zip(staged, items)]


#: Encoded bytes one CPU task decodes at most: small files go several to a task. Handing a task to
#: a worker and its result back costs about 40 us on these 2-core VMs, as much as decoding a 64x64
#: JPEG; a task of 64 KB of JPEG (one 0.15 MP photo at q90, twenty 64x64 crops) makes it small.
TASK_BYTES = 1 << 16


def _decode_iter_cpu(sources, model, options: RunOptions, device, output: str, ahead: int, workers: int,
                     return_exceptions: bool, read_options: dict, threads: int = 1) -> Iterator:
    """The CPU form of decode_iter: each worker reads and decodes whole images (the reader and
    the C pixel stage release the GIL), consecutive small files together (:data:`TASK_BYTES`), at
    most ``ahead`` tasks in flight, yielded in input order. One task per image (or run of small
    images), without a hand-over between a read and a decode stage: the short Python parts of
    each image then interleave with the other workers' C work instead of queueing."""
    def run(task):
        return [_item(index, decode_source, src, model, device, output, options, threads, read_options)
                for index, src in task]

    pending: deque[Future] = deque()
    with ThreadPoolExecutor(workers) as pool:
        try:
            for task in _tasks(sources, TASK_BYTES):
                pending.append(pool.submit(run, task))
                if len(pending) >= ahead:
                    yield from _results(pending.popleft(), return_exceptions)
            while pending:
                yield from _results(pending.popleft(), return_exceptions)
        finally:  # stopped early (an error, or the caller closed the generator)
            for f in pending:
                f.cancel()


def _tasks(sources, limit: int) -> Iterator[list]:
    """``(index, src)`` pairs in order, grouped into runs of at most ``limit`` encoded bytes (a
    source of unknown size, a file object, goes alone)."""
    task: list = []
    size = 0
    for index, src in sources:
        n = _encoded_size(src)
        if task and (n is None or size + n > limit):
            yield task
            task, size = [], 0
        task.append((index, src))
        size += limit if n is None else n
        if size >= limit:
            yield task
            task, size = [], 0
    if task:
        yield task


def _encoded_size(src) -> int | None:
    if isinstance(src, (bytes, bytearray)):
        return len(src)
    if isinstance(src, memoryview):
        return src.nbytes
    if isinstance(src, (str, os.PathLike)):
        try:
            return os.path.getsize(src)
        except OSError:  # its decode reports it
            return None
    return None


def _results(future: Future, return_exceptions: bool) -> Iterator:
    for result in future.result():
        if isinstance(result, Exception) and not return_exceptions:
            raise result
        yield result


__all__ = ["decode_batch", "decode_iter"]
