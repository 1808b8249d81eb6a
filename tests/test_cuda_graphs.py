"""CUDA-graph training (`compile: cudagraphs`): refused off CUDA before training, rehearsed on the CPU,
and run for real where a GPU is present.

This machine and CI have no GPU, so the capture itself runs only in `test_cuda_graphs_train_on_cuda`
(skipped without CUDA, saying so). What can run without one does: the refusal, the schema, the
static-buffer bookkeeping (`CapturedSteps(capture=False)` replays the same index buffer eagerly) and
the whole training loop in that rehearsal.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scvi")

from tests.test_fast_engine import LR, _destvi, _params  # noqa: E402
from toolkit.engines import graphs, train_destvi_fast  # noqa: E402
from toolkit.engines.fast import CUDA_COMPILE, compile_for_device  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here: CPU-only build)")
compiles = pytest.mark.skipif(
    not (os.environ.get("SPOTSWEEP_TEST_COMPILE") or os.environ.get("CI")),
    reason="compiles for about a minute; runs in CI, or set SPOTSWEEP_TEST_COMPILE=1",
)


def test_refused_without_cuda_before_any_training(tiny: dict) -> None:
    model = _destvi(tiny, 0, "both")
    before = _params(model)
    with pytest.raises(graphs.CudaGraphsUnavailable, match=r"compile: cudagraphs .* needs a GPU.*compile: true"):
        train_destvi_fast(
            model, max_epochs=2, lr=LR, batch_size=16, n_epochs_kl_warmup=1, device="cpu", compile="cudagraphs"
        )
    after = _params(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_destvi_task_stops_before_loading_anything() -> None:
    """The adapter checks first: no reference model is needed to get the sentence (model_dir=None)."""
    from toolkit.methods import destvi

    task = SimpleNamespace(params={"engine": "fast", "compile": "cudagraphs"}, batch_size=8, seed=0)
    with pytest.raises(graphs.CudaGraphsUnavailable, match="needs a GPU"):
        destvi.fit(None, None, None, task, accelerator="cpu")  # type: ignore[arg-type]


def test_sweep_schema_takes_the_modes() -> None:
    from pydantic import ValidationError

    from toolkit.methods.destvi import DestVIGrid

    for mode in ("cudagraphs", "reduce-overhead", True, False):
        assert DestVIGrid(name="destvi", compile=mode).compile == mode
    with pytest.raises(ValidationError, match="cudagraphs"):
        DestVIGrid(name="destvi", compile="max-speed")
    with pytest.raises(ValidationError, match="needs engine: fast"):
        DestVIGrid(name="destvi", compile="cudagraphs", engine="scvi")


def test_captured_steps_warm_up_each_shape_then_replay_its_buffer() -> None:
    seen: list[tuple[int, list[int], bool]] = []
    buffers: dict[int, int] = {}

    def step(index: torch.Tensor) -> torch.Tensor:
        buffers.setdefault(len(index), index.data_ptr())
        seen.append((len(index), index.tolist(), index.data_ptr() == buffers[len(index)]))
        return index.float().sum().reshape(1)

    steps = graphs.CapturedSteps(step, torch.device("cpu"), capture=False)
    batches = [torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([3, 4]), torch.tensor([5]), torch.tensor([6, 7])]
    batches += [torch.tensor([8]), torch.tensor([9, 10])]
    rows = [float(steps(index)) for index in batches]
    assert rows == [float(i.sum()) for i in batches]
    assert [s[1] for s in seen] == [i.tolist() for i in batches]  # every step sees its own rows
    assert steps.captured_shapes == [1, 2]  # each shape captured after WARMUP_RUNS eager runs
    replayed = seen[2 * graphs.WARMUP_RUNS :]
    assert all(len(set(ptr for n, _, ptr in replayed if n == size)) == 1 for size in (1, 2))  # one static buffer


@compiles
def test_training_loop_rehearsed_on_cpu(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop of a CUDA-graph run (static index buffer, in-place KL weight, Adam on all parameters)
    with the capture replaced by an eager run: the check is lifted to let it run on this CPU."""
    monkeypatch.setattr(graphs, "check_device", lambda compile, device: None)
    runs = []
    for _ in range(2):
        model = _destvi(tiny, 0, "both")
        result = train_destvi_fast(
            model, max_epochs=4, lr=LR, batch_size=16, n_epochs_kl_warmup=2, seed=1, device="cpu", compile="cudagraphs"
        )
        runs.append((_params(model), result))
    (a, ra), (b, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(ra.history["elbo_train"]).all()
    assert ra.settings["compile"] == "cudagraphs" and ra.settings["device"] == "cpu"
    assert ra.settings["captured_batch_shapes"] == sorted({16, tiny["st"].n_obs % 16 or 16})
    assert list(ra.history["kl_weight"]) == [0.0, 0.5, 1.0, 1.0]


@needs_cuda
def test_cuda_graphs_train_on_cuda(tiny: dict) -> None:
    """On a GPU: the captured run trains, is deterministic, and lands where eager training lands."""
    results = {}
    for mode in ("cudagraphs", "cudagraphs", False):
        model = _destvi(tiny, 0, "both")
        result = train_destvi_fast(
            model, max_epochs=30, lr=LR, batch_size=16, n_epochs_kl_warmup=10, seed=1, device="cuda", compile=mode
        )
        results.setdefault(mode, []).append((_params(model), result))
    (a, ra), (b, _) = results["cudagraphs"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ra.settings["captured_batch_shapes"]
    graphed = ra.history["elbo_train"].to_numpy()
    eager = results[False][0][1].history["elbo_train"].to_numpy()
    assert np.isfinite(graphed).all()
    assert abs(graphed[-1] - eager[-1]) < 0.1 * abs(eager[0] - eager[-1])  # same optimisation, other rounding


def test_compile_true_runs_as_reduce_overhead_on_cuda() -> None:
    """The H200 check's finding (results/engine.md): on CUDA `compile: true` runs as torch.compile's
    reduce-overhead mode, which ran there where the default mode failed; every other value runs as asked."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    assert compile_for_device(True, cuda) == CUDA_COMPILE == "reduce-overhead"
    assert compile_for_device(True, cpu) is True
    assert compile_for_device(False, cuda) is False
    assert compile_for_device("cudagraphs", cuda) == "cudagraphs"


def test_a_compiled_step_makes_tensors_without_a_device_on_the_batch_device() -> None:
    """scvi-tools' CPU `torch.arange` inside destVI's step is born on the GPU in every compiled mode (the H200
    check's failure, results/engine.md; the whole step: tests/test_step_devices.py); `meta` stands in for a
    GPU here. Eager, and anything on the CPU, runs as stock runs."""
    from toolkit.engines.step import _born_on

    for compile in (True, "reduce-overhead", "cudagraphs"):
        with _born_on(torch.device("meta"), compile):
            assert torch.arange(0, 3).device.type == "meta"
    for device, compile in ((torch.device("meta"), False), (torch.device("cpu"), True)):
        with _born_on(device, compile):
            assert torch.arange(0, 3).device.type == "cpu"
