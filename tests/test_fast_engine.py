"""The fast destVI engine: same model, same optimisation, same answers as stock scvi-tools training.

Tiny data (66 spots x 60 genes) keeps the whole file well under a minute on two cores; nothing here
measures time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

torch = pytest.importorskip("torch")
scvi = pytest.importorskip("scvi")

import pandas as pd  # noqa: E402
from scvi.model import CondSCVI, DestVI  # noqa: E402
from scvi.train import TrainingPlan  # noqa: E402

from toolkit.engines import fast as fast_module  # noqa: E402
from toolkit.engines import train_condscvi_fast, train_destvi_fast  # noqa: E402
from toolkit.engines.schedule import kl_weight  # noqa: E402
from toolkit.engines.step import distributions_unvalidated  # noqa: E402
from toolkit.metrics import li2022_prediction, li2022_truth, score  # noqa: E402

LR = 3e-3


def _destvi(tiny: dict, seed: int, amortization: str) -> DestVI:
    scvi.settings.seed = seed
    return DestVI.from_rna_model(
        tiny["st"].copy(),
        tiny["sc_model"],
        vamp_prior_p=5,
        amortization=amortization,
        prior_mode="normal",
        augmentation=False,
    )


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _proportions(model, amortization: str) -> pd.DataFrame:
    """softmax(V) for latent amortization: get_proportions returns softplus(V) there (scvi bug)."""
    if amortization == "both":
        return model.get_proportions()
    weights = torch.softmax(model.module.V.detach().cpu(), dim=0).T.numpy()[:, : len(model.cell_type_mapping)]
    weights = weights / weights.sum(axis=1, keepdims=True)
    return pd.DataFrame(weights, index=model.adata.obs_names, columns=list(model.cell_type_mapping))


def _pcc(tiny: dict, proportions: pd.DataFrame) -> float:
    truth = li2022_truth(tiny["spots"].obsm["cell_counts"], proportions.columns)
    return score(truth, li2022_prediction(proportions, truth.columns)).means()["pcc_cell_type"]


@pytest.mark.parametrize("amortization", ["both", "latent"])
def test_bitwise_identical_to_stock_training(tiny: dict, amortization: str) -> None:
    """Eager on CPU with seed=None the fast engine replays stock training exactly, random draws included."""
    stock = _destvi(tiny, 3, amortization)
    stock.train(
        max_epochs=4,
        lr=LR,
        batch_size=8,
        n_epochs_kl_warmup=2,
        train_size=1.0,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    fast = _destvi(tiny, 3, amortization)
    result = train_destvi_fast(fast, max_epochs=4, lr=LR, batch_size=8, n_epochs_kl_warmup=2, seed=None, device="cpu")

    expected, got = _params(stock), _params(fast)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert result.n_steps == stock.trainer.global_step
    pd.testing.assert_frame_equal(_proportions(stock, amortization), _proportions(fast, amortization))
    assert _pcc(tiny, _proportions(fast, amortization)) == pytest.approx(_pcc(tiny, _proportions(stock, amortization)))
    for name in ("elbo_train", "reconstruction_loss_train", "kl_local_train", "kl_global_train", "train_loss"):
        np.testing.assert_allclose(
            result.history[name].to_numpy(), stock.history[name].iloc[:, 0].to_numpy(dtype=float), rtol=1e-5
        )


def test_reference_bitwise_identical_to_stock(tiny: dict) -> None:
    """CondSCVI trains with the same TrainingPlan; the fast engine replays it exactly too."""
    models = {}
    for engine in ("stock", "fast"):
        scvi.settings.seed = 5
        model = CondSCVI(tiny["reference"], n_hidden=16, n_latent=3, n_layers=1, weight_obs=False, prior="normal")
        if engine == "stock":
            model.train(
                max_epochs=3, lr=1e-3, batch_size=128, train_size=1, accelerator="cpu", enable_progress_bar=False
            )
        else:
            train_condscvi_fast(model, max_epochs=3, lr=1e-3, batch_size=128, device="cpu")
        models[engine] = _params(model)
    for key in models["stock"]:
        assert torch.equal(models["stock"][key], models["fast"][key]), key


@pytest.mark.parametrize("amortization", ["both", "latent"])
def test_trains_loss_decreases_and_proportions_work(tiny: dict, amortization: str) -> None:
    model = _destvi(tiny, 0, amortization)
    result = train_destvi_fast(model, max_epochs=12, lr=1e-2, batch_size=33, n_epochs_kl_warmup=3, seed=0, device="cpu")
    elbo = result.history["elbo_train"].to_numpy()
    assert np.isfinite(elbo).all()
    assert elbo[-2:].mean() < elbo[:2].mean()
    assert model.is_trained_ and not model.module.training
    props = model.get_proportions()
    assert props.shape == (tiny["st"].n_obs, len(model.cell_type_mapping))
    np.testing.assert_allclose(props.sum(axis=1), 1.0, rtol=1e-5)
    gamma = model.get_gamma(return_numpy=True)
    assert gamma.shape == (tiny["st"].n_obs, 3, len(model.cell_type_mapping))
    assert list(model.history) == list(result.history.columns)


def test_same_seed_same_result_different_seed_differs(tiny: dict) -> None:
    runs = []
    for seed in (7, 7, 8):
        model = _destvi(tiny, 0, "both")
        result = train_destvi_fast(
            model, max_epochs=3, lr=LR, batch_size=8, n_epochs_kl_warmup=2, seed=seed, device="cpu"
        )
        runs.append((_params(model), result.history))
    (a, ha), (b, hb), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(ha, hb)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 66, 500])
def test_step_count(tiny: dict, batch_size: int) -> None:
    """Every epoch covers all spots; the last, smaller batch is kept (drop_last=False)."""
    n_spots = tiny["st"].n_obs
    epochs = 1 if batch_size == 1 else 2
    model = _destvi(tiny, 0, "latent")
    result = train_destvi_fast(
        model, max_epochs=epochs, lr=LR, batch_size=batch_size, n_epochs_kl_warmup=1, seed=0, device="cpu"
    )
    assert result.n_steps == epochs * math.ceil(n_spots / batch_size)
    assert result.n_steps == fast_module.steps_per_run(n_spots, batch_size, epochs)
    assert len(result.history) == epochs


class _PlanAt(TrainingPlan):
    """TrainingPlan with settable epoch and step, so its own kl_weight property can be queried."""

    at_epoch = 0
    at_step = 0

    @property
    def current_epoch(self) -> int:
        return self.at_epoch

    @property
    def global_step(self) -> int:
        return self.at_step


@pytest.mark.parametrize(
    "plan_kwargs",
    [
        {"n_epochs_kl_warmup": 7},
        {"n_epochs_kl_warmup": 7, "min_kl_weight": 0.2, "max_kl_weight": 0.9},
        {"n_epochs_kl_warmup": None, "n_steps_kl_warmup": 30},
        {"n_epochs_kl_warmup": None, "n_steps_kl_warmup": None},
        {"n_epochs_kl_warmup": 0},
    ],
)
def test_kl_schedule_matches_training_plan(tiny: dict, plan_kwargs: dict) -> None:
    plan = _PlanAt(_destvi(tiny, 0, "both").module, **plan_kwargs)
    settings = (plan.n_epochs_kl_warmup, plan.n_steps_kl_warmup, plan.max_kl_weight, plan.min_kl_weight)
    for epoch, step in [(0, 0), (1, 5), (3, 29), (6, 30), (7, 31), (50, 400)]:
        plan.at_epoch, plan.at_step = epoch, step
        assert kl_weight(epoch, step, *settings) == pytest.approx(float(plan.kl_weight), abs=1e-7)


def test_history_records_the_warmup_per_epoch(tiny: dict) -> None:
    model = _destvi(tiny, 0, "both")
    result = train_destvi_fast(model, max_epochs=6, lr=LR, batch_size=32, n_epochs_kl_warmup=4, seed=0, device="cpu")
    np.testing.assert_allclose(result.history["kl_weight"], [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert result.settings["eps"] == 0.01 and result.settings["weight_decay"] == 1e-6
    assert result.settings["optimizer"] == "Adam" and result.settings["lr"] == LR


def test_loss_kwargs_reach_the_loss(tiny: dict) -> None:
    """ct_sparsity_weight etc. travel through plan_kwargs, as with DestVI.train."""
    histories = []
    for weight in (0.0, 50.0):
        model = _destvi(tiny, 0, "both")
        result = train_destvi_fast(
            model,
            max_epochs=2,
            lr=LR,
            batch_size=32,
            n_epochs_kl_warmup=1,
            seed=0,
            device="cpu",
            plan_kwargs={"ct_sparsity_weight": weight},
        )
        histories.append(result)
    assert histories[0].settings["loss_kwargs"]["ct_sparsity_weight"] == 0.0
    assert histories[1].history["v_sparsity_train"].abs().sum() > histories[0].history["v_sparsity_train"].abs().sum()


def test_refuses_what_it_cannot_reproduce(tiny: dict) -> None:
    model = _destvi(tiny, 0, "both")
    with pytest.raises(ValueError, match="reduce_lr_on_plateau"):
        train_destvi_fast(
            model,
            max_epochs=1,
            lr=LR,
            batch_size=8,
            n_epochs_kl_warmup=1,
            device="cpu",
            plan_kwargs={"reduce_lr_on_plateau": True},
        )
    with pytest.raises(ValueError, match="batch_size"):
        train_destvi_fast(model, max_epochs=1, lr=LR, batch_size=0, n_epochs_kl_warmup=1, device="cpu")


def test_distribution_checks_restored() -> None:
    before = torch.distributions.Distribution._validate_args
    with distributions_unvalidated():
        with distributions_unvalidated():
            assert torch.distributions.Distribution._validate_args is False
        assert torch.distributions.Distribution._validate_args is False
    assert torch.distributions.Distribution._validate_args == before


@pytest.mark.skipif(
    not (os.environ.get("SPOTSWEEP_TEST_COMPILE") or os.environ.get("CI")),
    reason="compiles for about a minute; runs in CI, or set SPOTSWEEP_TEST_COMPILE=1",
)
def test_compiled_engine_trains_deterministically(tiny: dict) -> None:
    runs = []
    for _ in range(2):
        model = _destvi(tiny, 0, "both")
        result = train_destvi_fast(
            model, max_epochs=3, lr=LR, batch_size=16, n_epochs_kl_warmup=2, seed=1, device="cpu", compile=True
        )
        runs.append((_params(model), result))
    (a, ra), (b, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(ra.history["elbo_train"]).all()


def test_fit_many_runs_jobs_in_separate_processes_in_order() -> None:
    from toolkit.backends.packing import describe_worker, fit_many

    jobs = [{"tag": i} for i in range(4)] + [{"nope": 1}]
    results = fit_many(describe_worker, jobs, workers=2, threads_per_worker=1, return_exceptions=True)
    assert [r["tag"] for r in results[:4]] == [0, 1, 2, 3]
    assert all(r["torch_threads"] == 1 for r in results[:4])
    assert os.getpid() not in {r["pid"] for r in results[:4]}
    assert isinstance(results[4], TypeError)
    with pytest.raises(TypeError):
        fit_many(describe_worker, [{"nope": 1}], workers=1)
    fresh = fit_many(describe_worker, jobs[:4], workers=2, threads_per_worker=1, fresh_process_per_job=True)
    assert len({r["pid"] for r in fresh}) == 4  # one process per job: its peak memory is its own


def wait_for_usr2(seconds: float, started: str) -> str:
    """A packed job: "signalled" if USR2 reached it within `seconds`, "skipped" if the pack had stopped."""
    import signal
    import time

    from toolkit.backends.packing import stop_requested

    got: list[int] = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
    if stop_requested():
        return "skipped"
    (Path(started) / str(os.getpid())).touch()
    deadline = time.monotonic() + seconds
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    return "signalled" if got else "timed out"


def test_a_stop_reaches_every_running_packed_job_and_no_new_one_starts(tmp_path: Path) -> None:
    """What a packed SLURM element does on USR2: every worker gets USR2 itself, queued jobs do not start."""
    import threading
    import time

    from toolkit.backends.packing import fit_many, stop_event

    stop = stop_event()

    def stop_once_both_run() -> None:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=stop_once_both_run, daemon=True).start()
    jobs = [{"seconds": 120.0, "started": str(tmp_path)}] * 3
    results = fit_many(wait_for_usr2, jobs, workers=2, threads_per_worker=1, stop=stop)
    assert results == ["signalled", "signalled", "skipped"]


def test_resume_after_a_stop_is_bitwise_an_uninterrupted_run(tiny: dict, tmp_path) -> None:
    """Stop after epoch 2 of 5 (state saved), resume in a fresh model: the same numbers as one run."""
    from toolkit.engines import Checkpointing, TrainingStopped

    settings = {"max_epochs": 5, "lr": LR, "batch_size": 16, "n_epochs_kl_warmup": 3, "device": "cpu"}
    whole = _destvi(tiny, 4, "latent")
    expected = train_destvi_fast(whole, seed=4, **settings)

    path = tmp_path / "fast.pt"
    interrupted = _destvi(tiny, 4, "latent")
    done: list[int] = []
    stop = Checkpointing(path, every_n_epochs=0, stop_requested=lambda: len(done) == 2)
    with pytest.raises(TrainingStopped) as stopped:
        train_destvi_fast(interrupted, seed=4, on_epoch_end=done.append, checkpoint=stop, **settings)
    assert stopped.value.epochs_done == 2 and path.is_file()

    torch.manual_seed(12345)  # whatever happened in between must not matter
    resumed = _destvi(tiny, 9, "latent")
    result = train_destvi_fast(resumed, seed=4, checkpoint=Checkpointing(path, every_n_epochs=2), **settings)
    for key, value in _params(whole).items():
        assert torch.equal(value, _params(resumed)[key]), key
    pd.testing.assert_frame_equal(result.history, expected.history)
    assert result.n_steps == expected.n_steps

    again = _destvi(tiny, 9, "latent")  # the final save lets a requeue after training skip it
    finished = train_destvi_fast(again, seed=4, checkpoint=Checkpointing(path), **settings)
    assert len(finished.epoch_seconds) == 0
    assert all(torch.equal(v, _params(again)[k]) for k, v in _params(whole).items())

    with pytest.raises(ValueError, match="different run"):
        train_destvi_fast(
            _destvi(tiny, 4, "latent"), seed=4, checkpoint=Checkpointing(path), **{**settings, "batch_size": 8}
        )
