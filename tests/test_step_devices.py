"""No tensor is born on the CPU inside a compiled training step meant for a GPU, checked without a GPU.

The H200 check (results/engine.md) failed in `compile: true` and `compile: cudagraphs` with "Pointer
argument cannot be accessed from Triton (cpu tensor?)": an inductor kernel was handed a CPU buffer made
inside the step. This file runs destVI's whole training step (forward, loss, backward, Adam) with every
tensor of the run on the `meta` device, standing in for CUDA, and lists each tensor an operation makes on
the CPU, with the line (scvi-tools' or spotsweep's) that made it:

- `test_no_tensor_is_born_on_the_cpu_inside_the_step`: the step run operator by operator as each
  compiled mode runs it (torch.compile replaced by the function it compiles); a TorchDispatchMode sees
  every ATen call, the backward's and the optimizer's included;
- `test_the_compiled_graphs_hold_no_cpu_tensor`: the forward and backward graphs that dynamo and
  AOTAutograd hand inductor, read by a backend that only looks at them.

Why `meta` rather than FakeTensorMode's fake CUDA tensors: a CPU-only torch registers no CUDA device
guard, which Python indexing (`THPVariable_getitem`) and the autograd engine take before any dispatch, so
a fake CUDA tensor cannot even be sliced here (FakeTensorMode patches the guard on CUDA builds only). Meta
tensors carry shapes and devices through every operator; an operator that makes a CPU tensor while every
input of the run is on meta made it on the CPU as it would beside a GPU. Shims make meta go where CUDA goes
(`meta_stands_in_for_cuda`): Adam's fused and capturable paths accept meta, and torch gets a meta kernel
for `_sample_dirichlet` (destVI's augmentation). For dynamo only, two more: a scalar `torch.tensor` is
made as `torch.full` (`_ScalarsAsFull`), and a real meta tensor met while tracing is a constant
(`_dynamo_takes_meta_constants`), as a CUDA one is; the graphs are still read whole, devices included.

The step is assembled as `train_fast` assembles it on CUDA (module placement, loss kwargs, KL weight on
the device, fused or capturable Adam, `make_step`): a change there belongs here too.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import re
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("scvi")

from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils import _pytree as pytree  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from toolkit.engines import fast  # noqa: E402
from toolkit.engines import step as step_module  # noqa: E402
from toolkit.engines.batches import registered_tensors  # noqa: E402
from toolkit.engines.graphs import CUDA_GRAPHS  # noqa: E402

META = torch.device("meta")
TORCH_DIR = str(Path(torch.__file__).parent)
HERE = str(Path(__file__).resolve())
COMPILED_MODES = [True, "reduce-overhead", CUDA_GRAPHS]
"""Every compiled mode the engine runs on a GPU (`true` runs there as reduce-overhead; traced here as asked)."""
VARIANTS = {"2022": {"prior_mode": "normal", "augmentation": False}, "current": {}}
"""The adapter's destVI variants (toolkit.methods.destvi.VARIANTS): the study's, and scvi-tools' default
(mixture prior, augmentation), whose step samples priors, Dirichlet and Beta draws inside the step."""
BATCH = 8
ON_META = "Every tensor of the run is on meta, standing in for CUDA. "


# ------------------------------------------------------------------------------------------------
# where a tensor came from


def _where(frames: list[tuple[str, int, str, str]]) -> str:
    """The innermost frame outside torch and this file: 'scvi/module/_mrdeconv.py:435 generative: <line>'."""
    for filename, line, function, code in reversed(frames):
        if filename.startswith(TORCH_DIR) or filename == HERE or "contextlib" in filename:
            continue
        short = filename.split("site-packages/")[-1]
        short = short.split(f"{Path(HERE).parents[1]}/")[-1]
        return f"{short}:{line} {function}: {code.strip()}"
    return "(inside torch)"


def _python_frames() -> list[tuple[str, int, str, str]]:
    return [(f.filename, f.lineno or 0, f.name, f.line or "") for f in traceback.extract_stack()]


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def _graph_frames(stack_trace: str | None) -> list[tuple[str, int, str, str]]:
    return [(m[0], int(m[1]), m[2], m[3]) for m in _FRAME.findall(stack_trace or "")]


def _report(found: Counter[tuple[str, str]], what: str) -> str:
    lines = [f"{sum(found.values())} tensors born on the CPU {what}:"]
    lines += [f"  {n} x {op} at {where}" for (op, where), n in sorted(found.items(), key=lambda item: item[0][1])]
    return "\n".join(lines)


class CpuBirths(TorchDispatchMode):
    """Every ATen call that returns a CPU tensor, by operator and the line that made the call."""

    def __init__(self) -> None:
        super().__init__()
        self.found: Counter[tuple[str, str]] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in pytree.tree_leaves(out)):
            self.found[(str(func), _where(_python_frames()))] += 1
        return out


class GraphReader:
    """A torch.compile backend (through AOTAutograd) that lists the CPU tensors of the forward and backward
    graphs, then runs them as they are."""

    def __init__(self) -> None:
        self.found: Counter[tuple[str, str]] = Counter()
        self.graphs = 0

    def read(self, graph: str, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        from functorch.compile import make_boxed_func

        self.graphs += 1
        for node in gm.graph.nodes:
            values = pytree.tree_leaves(node.meta.get("val"))
            if any(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in values):
                where = _where(_graph_frames(node.meta.get("stack_trace")))
                self.found[(f"{node.target} ({graph} graph)", where)] += 1
        return make_boxed_func(gm.forward)

    def backend(self) -> Callable:
        from torch._dynamo.backends.common import aot_autograd

        return aot_autograd(fw_compiler=partial(self.read, "forward"), bw_compiler=partial(self.read, "backward"))


class _ScalarsAsFull(TorchFunctionMode):
    """`torch.tensor(x)` of a Python number as `torch.full((), x)`: the same 0-dim tensor (dtype, device), but an
    operator dynamo traces. Dynamo makes a scalar `torch.tensor` while tracing and takes it as a constant,
    which it accepts on CUDA but not on meta (scvi's augmentation loss makes one, torch.distributions' Beta
    two). Only for the graph test."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.tensor and isinstance(args[0], (bool, int, float)) and not kwargs.get("requires_grad"):
            number = args[0]
            natural = torch.bool if isinstance(number, bool) else torch.int64 if isinstance(number, int) else None
            dtype = kwargs.get("dtype") or natural or torch.get_default_dtype()
            return torch.full((), number, dtype=dtype, device=kwargs.get("device"))
        return func(*args, **kwargs)


def _dynamo_takes_meta_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dynamo's fake mode takes a real meta tensor it finds while tracing as a constant, as it takes a CUDA one
    (torch.distributions' Beta(0.4, 0.5) in destVI's augmentation is built from constants outside the graph).
    Such a tensor is still read, device included, by GraphReader. Only for the graph test."""
    from torch._subclasses import fake_tensor

    init = fake_tensor.FakeTensorMode.__init__

    def taking_meta_constants(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "allow_non_fake_inputs": True})

    monkeypatch.setattr(fake_tensor.FakeTensorMode, "__init__", taking_meta_constants)


@contextlib.contextmanager
def meta_stands_in_for_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Adam's fused and capturable paths take meta as they take cuda; `_sample_dirichlet` gets a meta kernel."""
    adam = importlib.import_module("torch.optim.adam")  # torch.optim's own name `adam` is not the module
    optimizer = importlib.import_module("torch.optim.optimizer")
    capturable = adam._get_capturable_supported_devices
    fused = optimizer._get_fused_kernels_supported_devices
    monkeypatch.setattr(adam, "_get_capturable_supported_devices", lambda *a, **k: [*capturable(), "meta"])
    monkeypatch.setattr(optimizer, "_get_fused_kernels_supported_devices", lambda: [*fused(), "meta"])
    library = torch.library.Library("aten", "IMPL")  # a kernel for this process, removed on the way out
    library.impl("_sample_dirichlet", lambda alpha, generator=None: torch.empty_like(alpha), "Meta")
    try:
        yield
    finally:
        library._destroy()


# ------------------------------------------------------------------------------------------------
# destVI's step, assembled as train_fast assembles it on CUDA


def _destvi(tiny: dict, variant: str, amortization: str) -> Any:
    """DestVI from the tiny reference of conftest (a CondSCVI of 2 epochs, 66 spots x 60 genes), its vamp prior
    handed over in float32 as the adapter hands it (toolkit.methods.destvi._load_reference)."""
    import scvi
    from scvi.model import DestVI

    reference = copy.copy(tiny["sc_model"])  # the module-wide fixture keeps its own prior
    vamp_prior = tiny["sc_model"].get_vamp_prior
    reference.get_vamp_prior = lambda *a, **k: {key: v.float() for key, v in vamp_prior(*a, **k).items()}
    scvi.settings.seed = 0
    return DestVI.from_rna_model(
        tiny["st"].copy(), reference, vamp_prior_p=5, amortization=amortization, **VARIANTS[variant]
    )


def _meta_step(
    model: Any, compile: bool | str, probe: CpuBirths | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`train_fast`'s step for a CUDA device, built on meta: placement, KL weight, Adam and make_step as there.
    `probe` watches the eager forward that `train_fast` runs before the step (its CPU tensors do no harm there,
    but when that forward fails, they say why)."""
    module = step_module.on_device(model.module, META)
    plan = fast.training_plan(model, {"lr": 3e-3, "n_epochs_kl_warmup": 2})
    plan.n_obs_training = model.adata.n_obs
    loss_kwargs = dict(plan.loss_kwargs)
    data = registered_tensors(model, META)
    module.train()
    loss_kwargs["kl_weight"] = torch.tensor(0.5).to(META)
    with probe or contextlib.nullcontext():
        names = step_module.probe_metric_names(module, {k: v[:BATCH] for k, v in data.items()}, loss_kwargs)
    trainable = [p for p in module.parameters() if p.requires_grad]
    # On CUDA: fused Adam when compiled, capturable (the step counter on the device) for a CUDA graph.
    optimizer = step_module.make_optimizer(plan, trainable, fused=bool(compile), capturable=compile == CUDA_GRAPHS)
    return step_module.make_step(module, optimizer, names, data, loss_kwargs, compile)


@pytest.mark.parametrize("amortization", ["both", "latent"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("compile", COMPILED_MODES, ids=str)
def test_no_tensor_is_born_on_the_cpu_inside_the_step(
    tiny: dict, monkeypatch: pytest.MonkeyPatch, compile: bool | str, variant: str, amortization: str
) -> None:
    """Two steps (the first makes Adam's state, the second is what a CUDA graph captures), operator by operator,
    after the probe forward that `train_fast` runs first."""
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)  # the compiled function's Python, run eagerly
    births, probe = CpuBirths(), CpuBirths()
    failure = ""
    with meta_stands_in_for_cuda(monkeypatch), step_module.distributions_unvalidated():
        try:
            step = _meta_step(_destvi(tiny, variant, amortization), compile, probe)
            with births:
                for _ in range(2):
                    step(torch.arange(BATCH, device=META))
        except RuntimeError as error:  # a CPU tensor met a device one: the step would fail on the GPU too
            failure = _failed(error, probe)
    if births.found or failure:
        pytest.fail(ON_META + _report(births.found, "inside the step") + failure, pytrace=False)


def _failed(error: BaseException, probe: CpuBirths | None = None) -> str:
    """Where the run broke, and the CPU tensors of the forward that broke (when it was the probe's)."""
    frames = [(f.filename, f.lineno or 0, f.name, f.line or "") for f in traceback.extract_tb(error.__traceback__)]
    said = f"\nand the run failed at {_where(frames)}: {' '.join(str(error).splitlines()[:2])[:500]}"
    if probe is not None and probe.found:
        said += "\n" + _report(probe.found, "in the forward that failed (train_fast's probe, before the first step)")
    return said


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_compiled_graphs_hold_no_cpu_tensor(tiny: dict, monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """What inductor would get: dynamo's trace of the step's compiled part, forward and backward graphs. One mode
    stands for all: every compiled mode compiles the same function under the same device context, and the mode
    only picks inductor's options, which this backend replaces."""
    compile = True
    reader = GraphReader()
    _dynamo_takes_meta_constants(monkeypatch)
    compile_for_real = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **options: compile_for_real(fn, backend=reader.backend(), dynamic=False)
    )
    torch.compiler.reset()
    failure = ""
    with meta_stands_in_for_cuda(monkeypatch), step_module.distributions_unvalidated():
        try:
            step = _meta_step(_destvi(tiny, variant, "both"), compile)
            with _ScalarsAsFull():
                step(torch.arange(BATCH, device=META))
        except RuntimeError as error:  # dynamo raises what the step would raise on the GPU
            failure = _failed(error)
        finally:
            torch.compiler.reset()
    if reader.found or failure:
        pytest.fail(ON_META + _report(reader.found, "in the graphs handed to inductor") + failure, pytrace=False)
    assert reader.graphs >= 2, "dynamo handed over no forward and backward graphs"
