"""The whole optimizer step captured once per batch shape as a CUDA graph, then replayed.

destVI's arithmetic per step takes microseconds on a GPU; what costs is launching it (hundreds of
kernels from Python, then the optimizer's). A CUDA graph records one step (gather the minibatch
by index from tensors already on the device, forward, loss, backward, Adam) and replays it with a
single launch. What replays must live in fixed buffers, so:

- the minibatch's indices are copied into a static index tensor before each replay;
- the KL weight is a device tensor updated in place (`fill_`), never a new tensor;
- Adam runs with `capturable=True` (its step counter lives on the device);
- the metric row the step returns is a static tensor, added to the epoch's sums on the device.

Forward and loss are compiled by inductor inside the captured step: scvi-tools' destVI loss builds
a tensor from a Python scalar on the device (`torch.tensor(0.0, device=...)`), a host-to-device
copy that CUDA refuses during capture; inductor turns it into a kernel. Every shape is run eagerly
(on a side stream) twice before it is captured, so that compilation, cuBLAS and the optimizer's
state exist before capture. An epoch has two shapes at most (full batches and the last one).

Without CUDA there is nothing to capture: `check_device` refuses the mode in one sentence before
anything trains. `CapturedSteps(capture=False)` runs the same static-buffer bookkeeping without
capture, which is what the CPU tests check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

CUDA_GRAPHS = "cudagraphs"
"""The `compile` value that selects this mode."""
WARMUP_RUNS = 2
"""Eager runs of each batch shape before it is captured."""

IndexStep = Callable[[torch.Tensor], torch.Tensor]
"""One optimizer step on the minibatch at these row indices; returns the step's metric row."""


class CudaGraphsUnavailable(RuntimeError):
    """`compile: cudagraphs` was asked for where no CUDA device runs the task."""


def check_device(compile: bool | str, device: torch.device) -> None:
    """Refuse CUDA graphs off CUDA before any training (login nodes and CI have no GPU)."""
    if compile != CUDA_GRAPHS or device.type == "cuda":
        return
    seen = "no CUDA device is visible" if not torch.cuda.is_available() else f"the task was put on {device}"
    raise CudaGraphsUnavailable(
        f"compile: {CUDA_GRAPHS} captures the training step as a CUDA graph and needs a GPU, but {seen}; "
        "run the task on a GPU node (a SLURM profile with gpus_per_task) or use compile: true on a CPU."
    )


@dataclass
class _Captured:
    """One captured step: the graph, the index buffer it reads and the metric row it writes."""

    graph: torch.cuda.CUDAGraph | None
    index: torch.Tensor
    row: torch.Tensor | None
    step: IndexStep

    def run(self, index: torch.Tensor) -> torch.Tensor:
        self.index.copy_(index)
        if self.graph is None or self.row is None:  # rehearsal without CUDA: the same buffer, run eagerly
            return self.step(self.index)
        self.graph.replay()
        return self.row


class CapturedSteps:
    """Calls `step(index)` eagerly for the first runs of each batch shape, then replays its capture."""

    def __init__(self, step: IndexStep, device: torch.device, capture: bool = True) -> None:
        self._step = step
        self._capture = capture
        self._side = torch.cuda.Stream(device) if capture else None
        self._graphs: dict[int, _Captured] = {}
        self._runs: Counter[int] = Counter()

    @property
    def captured_shapes(self) -> list[int]:
        """Batch sizes captured so far (what ran, for the task's settings)."""
        return sorted(self._graphs)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        size = int(index.shape[0])
        captured = self._graphs.get(size)
        if captured is None:
            self._runs[size] += 1
            if self._runs[size] <= WARMUP_RUNS:
                return self._eager(index)
            captured = self._graphs[size] = self._record(index)
        return captured.run(index)

    def _eager(self, index: torch.Tensor) -> torch.Tensor:
        if self._side is None:
            return self._step(index)
        current = torch.cuda.current_stream()
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            row = self._step(index)
        current.wait_stream(self._side)
        row.record_stream(current)
        return row

    def _record(self, index: torch.Tensor) -> _Captured:
        static_index = index.clone()
        if self._side is None:
            return _Captured(None, static_index, None, self._step)
        torch.cuda.current_stream().wait_stream(self._side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._side):  # records only: the replay in `run` takes the step
            row = self._step(static_index)
        return _Captured(graph, static_index, row, self._step)
