"""The accuracy trajectory, step budgets and the last minibatch, in both engines.

Scoring during training must not change training (bitwise, eager on CPU), a compiled step must not
recompile for it, a budget in steps stops after exactly that many steps, and `drop_last` drops exactly
the last, shorter minibatch. Tiny data (66 spots x 60 genes, the `tiny` fixture); nothing here measures time.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

torch = pytest.importorskip("torch")
scvi = pytest.importorskip("scvi")

import pandas as pd  # noqa: E402
from scvi.model import DestVI  # noqa: E402

from tests.test_fast_engine import _destvi as _destvi_of  # noqa: E402
from tests.test_fast_engine import _params, _PlanAt  # noqa: E402
from toolkit.engines import train_destvi_fast  # noqa: E402
from toolkit.engines.lightning_trajectory import TrajectoryCallback  # noqa: E402
from toolkit.engines.trajectory import TrajectoryProbe, scoring_steps  # noqa: E402
from toolkit.metrics import li2022_prediction, li2022_truth, score  # noqa: E402

LR = 3e-3


def _destvi(tiny: dict, seed: int, amortization: str = "both") -> DestVI:
    return _destvi_of(tiny, seed, amortization)


def _pcc(tiny: dict, model: DestVI) -> dict[str, float]:
    """The mean PCC of the model's proportions now: what a trajectory point records (amortization both)."""
    proportions = model.get_proportions()
    truth = li2022_truth(tiny["spots"].obsm["cell_counts"], proportions.columns)
    return {"pcc": score(truth, li2022_prediction(proportions, truth.columns)).means()["pcc_cell_type"]}


def _probe(tiny: dict, model: DestVI, total: int, n_points: int = 50) -> TrajectoryProbe:
    return TrajectoryProbe(scoring_steps(total, n_points), lambda: _pcc(tiny, model))


def test_scoring_steps_are_even_and_end_at_the_last() -> None:
    steps = sorted(scoring_steps(30_000, 50))
    assert len(steps) == 50 and steps[0] == 600 and steps[-1] == 30_000
    assert set(np.diff(steps)) == {600}
    assert sorted(scoring_steps(7, 50)) == list(range(1, 8))  # a short run: every step
    assert scoring_steps(100, 0) == frozenset()


@pytest.mark.parametrize("amortization", ["both", "latent"])
def test_scoring_does_not_change_fast_training(tiny: dict, amortization: str) -> None:
    """Eager on CPU: with a probe scoring after every step, the final parameters and proportions are bitwise
    those of a run without one."""
    settings = {"max_epochs": 3, "lr": LR, "batch_size": 16, "n_epochs_kl_warmup": 2, "device": "cpu"}
    plain = _destvi(tiny, 5, amortization)
    train_destvi_fast(plain, seed=None, **settings)
    probed = _destvi(tiny, 5, amortization)
    probe = TrajectoryProbe(frozenset(range(1, 16)), lambda: {"v": float(probed.module.V.sum())})
    result = train_destvi_fast(probed, seed=None, trajectory=probe, **settings)
    for key, value in _params(plain).items():
        assert torch.equal(value, _params(probed)[key]), key
    if amortization == "both":
        pd.testing.assert_frame_equal(plain.get_proportions(), probed.get_proportions())
    assert [point["step"] for point in result.trajectory] == list(range(1, 16))
    assert result.trajectory[-1]["epoch"] == 3.0 and result.trajectory[0]["epoch"] == pytest.approx(0.2)


def test_the_last_point_is_the_final_score(tiny: dict) -> None:
    model = _destvi(tiny, 2)
    result = train_destvi_fast(
        model, max_epochs=4, lr=LR, batch_size=16, n_epochs_kl_warmup=2, seed=None, device="cpu",
        trajectory=_probe(tiny, model, 20, n_points=4),
    )  # fmt: skip
    assert [point["step"] for point in result.trajectory] == [5, 10, 15, 20]
    assert result.trajectory[-1]["pcc"] == _pcc(tiny, model)["pcc"]


def test_scoring_does_not_change_stock_training(tiny: dict) -> None:
    """The Lightning callback: the same bitwise guarantee, and points at Lightning's own step count."""
    settings = {
        "max_epochs": 3, "lr": LR, "batch_size": 16, "n_epochs_kl_warmup": 2, "train_size": 1.0,
        "accelerator": "cpu", "enable_progress_bar": False,
    }  # fmt: skip
    plain = _destvi(tiny, 6)
    plain.train(**settings)
    probed = _destvi(tiny, 6)
    probe = _probe(tiny, probed, 15, n_points=5)
    probed.train(**settings, callbacks=[TrajectoryCallback(probe)])
    for key, value in _params(plain).items():
        assert torch.equal(value, _params(probed)[key]), key
    assert [point["step"] for point in probe.points] == [3, 6, 9, 12, 15]
    assert probe.points[-1]["pcc"] == _pcc(tiny, probed)["pcc"]
    assert probe.points[-1]["epoch"] == 3.0


@pytest.mark.skipif(
    not (os.environ.get("SPOTSWEEP_TEST_COMPILE") or os.environ.get("CI")),
    reason="compiles twice for about a minute; runs in CI, or set SPOTSWEEP_TEST_COMPILE=1",
)
def test_compiled_training_does_not_recompile_for_scoring(tiny: dict) -> None:
    """Scoring runs eagerly beside the compiled step: a compiled run with a probe compiles exactly the graphs
    of one without (the full and the last, shorter batch)."""
    from torch._dynamo.utils import counters

    settings = {"max_epochs": 3, "lr": LR, "batch_size": 16, "n_epochs_kl_warmup": 2, "device": "cpu", "compile": True}

    def graphs_compiled(probe: TrajectoryProbe | None, model: DestVI) -> int:
        counters.clear()
        train_destvi_fast(model, seed=0, trajectory=probe, **settings)
        return int(counters["stats"]["unique_graphs"])

    without = graphs_compiled(None, _destvi(tiny, 7))
    model = _destvi(tiny, 7)
    probe = _probe(tiny, model, 15, n_points=15)
    assert graphs_compiled(probe, model) == without
    assert len(probe.points) == 15


def test_a_step_budget_stops_inside_an_epoch(tiny: dict, tmp_path) -> None:
    """66 spots at batch 16: 5 steps an epoch; 12 steps end two steps into the third epoch, which the task's
    progress report hears as its epochs to run (a step budget's task has max_epochs 0)."""
    from toolkit.engines import Checkpointing

    events: list[tuple[str, int]] = []
    saving = Checkpointing(tmp_path / "last.pt", on_event=lambda event, n: events.append((event, n)))
    model = _destvi(tiny, 1)
    result = train_destvi_fast(
        model, max_steps=12, lr=LR, batch_size=16, n_epochs_kl_warmup=2, seed=0, device="cpu", checkpoint=saving
    )
    assert result.n_steps == 12 and len(result.history) == 3
    assert events[0] == ("planned", 3)
    with pytest.raises(ValueError, match="one budget"):
        train_destvi_fast(model, max_epochs=2, max_steps=12, lr=LR, batch_size=16, n_epochs_kl_warmup=2)


def test_a_step_budget_stops_stock_training_there_too(tiny: dict) -> None:
    """The adapter's stock path: Lightning's max_steps, with the epochs it reaches into."""
    from toolkit.methods.destvi import _train_stock

    model = _destvi(tiny, 1)
    settings = {
        "max_epochs": None, "max_steps": 12, "drop_last": False, "lr": LR, "batch_size": 16,
        "n_epochs_kl_warmup": 2, "plan_kwargs": None,
    }  # fmt: skip
    n_steps, ran, _ = _train_stock(model, settings, "cpu", None)
    assert n_steps == 12 and ran["max_steps"] == 12


@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_drops_the_short_minibatch(tiny: dict, drop_last: bool) -> None:
    """66 spots at batch 16: 4 steps of 16 and one of 2 per epoch, or 4 of 16 with drop_last; both engines
    take the same steps (and the fast engine's eager run equals stock training bitwise)."""
    sizes: list[int] = []
    model = _destvi(tiny, 3)
    hook = model.module.register_forward_pre_hook(lambda _, args: sizes.append(len(args[0]["X"])) if args else None)
    result = train_destvi_fast(
        model, max_epochs=2, lr=LR, batch_size=16, n_epochs_kl_warmup=2, seed=None, device="cpu", drop_last=drop_last
    )
    hook.remove()
    per_epoch = [16, 16, 16, 16] if drop_last else [16, 16, 16, 16, 2]
    assert sizes[1:] == per_epoch * 2  # the first forward is the engine's probe of the metric names
    assert result.n_steps == len(per_epoch) * 2

    stock = _destvi(tiny, 3)
    stock.train(
        max_epochs=2, lr=LR, batch_size=16, n_epochs_kl_warmup=2, train_size=1.0, accelerator="cpu",
        enable_progress_bar=False, datasplitter_kwargs={"drop_last": drop_last},
    )  # fmt: skip
    assert int(stock.trainer.global_step) == result.n_steps
    for key, value in _params(stock).items():
        assert torch.equal(value, _params(model)[key]), key


def test_drop_last_refuses_a_batch_above_the_spots(tiny: dict) -> None:
    with pytest.raises(ValueError, match="leaves no minibatch"):
        train_destvi_fast(
            _destvi(tiny, 0), max_epochs=1, lr=LR, batch_size=100, n_epochs_kl_warmup=2, drop_last=True, device="cpu"
        )


def test_the_kl_weight_at_each_step_is_scvi_tools_own(tiny: dict) -> None:
    """A warm-up in steps, as the fast engine feeds it to the loss, step by step against scvi-tools'
    TrainingPlan.kl_weight at that step."""
    fed: list[float] = []
    model = _destvi(tiny, 0)

    def record(_: object, args: tuple, kwargs: dict) -> None:
        if torch.is_grad_enabled():  # training steps, not the engine's no-grad probe of the metric names
            fed.append(float(kwargs["loss_kwargs"]["kl_weight"]))

    hook = model.module.register_forward_pre_hook(record, with_kwargs=True)
    result = train_destvi_fast(
        model, max_steps=25, lr=LR, batch_size=16, n_epochs_kl_warmup=None, plan_kwargs={"n_steps_kl_warmup": 18},
        seed=0, device="cpu",
    )  # fmt: skip
    hook.remove()
    plan = _PlanAt(model.module, n_epochs_kl_warmup=None, n_steps_kl_warmup=18)
    assert len(fed) == 25
    for step, weight in enumerate(fed):
        plan.at_epoch, plan.at_step = step // 5, step
        assert weight == pytest.approx(float(plan.kl_weight), abs=1e-6), step
    assert result.settings["n_steps_kl_warmup"] == 18 and result.settings["n_epochs_kl_warmup"] is None


def test_sweep_settings_round_trip_and_refuse_two_budgets(tiny_sweep_data: dict) -> None:
    """max_steps, n_steps_kl_warmup and drop_last as a sweep writes them: axes in the task's settings and id;
    the dumped sweep (what a prepare job re-reads) validates again; two budgets are refused in one sentence."""
    from toolkit.config import SweepConfig, parse_sweep
    from toolkit.errors import SpotsweepError
    from toolkit.sweep import expand

    method = tiny_sweep_data["methods"][0]
    plain = expand(parse_sweep(tiny_sweep_data, "t"))
    method.pop("max_epochs", None)
    method.pop("n_epochs_kl_warmup", None)
    method.update({"max_steps": [40, 80], "n_steps_kl_warmup": 20, "drop_last": [False, True]})
    sweep = parse_sweep(tiny_sweep_data, "t")
    tasks = expand(sweep)
    assert len(tasks) == 4 * len(plain)
    assert {t.settings["max_steps"] for t in tasks} == {40, 80} and {t.max_epochs for t in tasks} == {0}
    assert {t.setting("drop_last", False) for t in tasks} == {False, True}
    assert "drop_last" not in tasks[0].extra_settings  # false is "as before": not in the id
    assert tasks[0].params["n_epochs_kl_warmup"] is None and "-t40-w20-" in tasks[0].id
    again = SweepConfig.model_validate(sweep.model_dump(mode="json"))
    assert [t.id for t in expand(again)] == [t.id for t in tasks]
    for extra, says in (({"max_epochs": 10}, "one budget"), ({"n_epochs_kl_warmup": 5}, "one KL warm-up")):
        with pytest.raises(SpotsweepError, match=says):
            parse_sweep({**tiny_sweep_data, "methods": [{**method, **extra}]}, "t")


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [18] * 10 + [9]), (True, [18] * 10)])
def test_batch_18_on_189_spots(drop_last: bool, sizes: list[int]) -> None:
    """The issue's case: 10 steps of 18 spots per epoch with drop_last, 11 without (the last of 9)."""
    from toolkit.engines.batches import EpochSampler

    sampler = EpochSampler(np.arange(189), 18, torch.device("cpu"), drop_last)
    for _ in range(3):
        assert [len(batch) for batch in sampler.epoch()] == sizes
    assert sampler.n_batches == len(sizes)
