"""The project's bad-input suite: every entry point refuses bad input with scidl's own error type
(ScidlError), names the parameter, and leaves the run store and the ledger exactly as they were."""
import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import scidl
from scidl import interventions as iv
from scidl.phenomena.grokking import zoom
from scidl.phenomena.grokking import circuits, fourier, zoom
from scidl.config import RunConfig, make_config
from scidl.ensemble import train_ensemble
from scidl.errors import ScidlError
from scidl.explorer import CheckpointExplorer
from scidl.hypotheses import Control, Hypothesis, Ledger, proportion_ci
from scidl.phenomena.grokking.measures import Context, gini, progress_measures, restricted_loss
from scidl.notebook import check_parameters
from scidl.phenomena.grokking.definition import max_spike_ratio
from scidl.store import RunStore
from scidl.sweep import SweepConfig, run_sweep
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import configure_torch, train

TINY = dict(p=23, d_model=32, n_heads=4, d_mlp=64, steps=60, eval_every=10, checkpoint_every=20, lr=3e-3)
H1 = dict(id="H1", claim="c", measurement="m", comparison=">", threshold=1.0, falsifier="f",
          controls=(Control("ctrl", "c", "<", 0.5),))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with one finished tiny run and a ledger with H1 registered after it."""
    root = tmp_path_factory.mktemp("bad-inputs")
    torch.use_deterministic_algorithms(True)
    store = RunStore(root / "runs")
    run = train(make_config(**TINY), store, progress=False)
    ledger = Ledger(root / "ledger.jsonl")
    ledger.register(Hypothesis(**H1))
    model = run.load_model()
    data = make_dataset(run.config.task)
    tokens, labels = data.test
    return dict(root=root, store=store, run=run, ledger=ledger, model=model, data=data,
                tokens=tokens[:32], labels=labels[:32])


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _metric(logits):
    return logits[:, -1, 0].mean()


def _injected(source):
    return {"__annotations__": {"p": int, "frac_trains": list[float]}, "p": 97, "frac_trains": [0.3],
            "In": ["", "p: int = 97  # modulus", source]}


CASES = [
    # ---- configs: make_config, RunConfig, from_dict
    ("p=100", lambda w: make_config(p=100)),
    ("p=2", lambda w: make_config(p=2)),
    ("p=1000003", lambda w: make_config(p=1000003)),
    ("p='97'", lambda w: make_config(p="97")),
    ("p=97.0", lambda w: make_config(p=97.0)),
    ("p=True", lambda w: make_config(p=True)),
    ("frac_train=0", lambda w: make_config(frac_train=0)),
    ("frac_train=1.5", lambda w: make_config(frac_train=1.5)),
    ("frac_train=1e-09", lambda w: make_config(frac_train=1e-9)),
    ("frac_train=0.9999999", lambda w: make_config(frac_train=0.9999999)),
    ("frac_train=nan", lambda w: make_config(frac_train=math.nan)),
    ("op='pow'", lambda w: make_config(op="pow")),
    ("op=['add']", lambda w: make_config(op=["add"])),
    ("data_seed=-1", lambda w: make_config(data_seed=-1)),
    ("lr=0", lambda w: make_config(lr=0)),
    ("lr=inf", lambda w: make_config(lr=math.inf)),
    ("lr=nan", lambda w: make_config(lr=math.nan)),
    ("lr=-1", lambda w: make_config(lr=-1)),
    ("weight_decay=inf", lambda w: make_config(weight_decay=math.inf)),
    ("weight_decay=-0.1", lambda w: make_config(weight_decay=-0.1)),
    ("beta1=1.0", lambda w: make_config(beta1=1.0)),
    ("beta2=-0.1", lambda w: make_config(beta2=-0.1)),
    ("steps=0", lambda w: make_config(steps=0)),
    ("steps=1.5", lambda w: make_config(steps=1.5)),
    ("warmup_steps=-1", lambda w: make_config(warmup_steps=-1)),
    ("eval_every=0", lambda w: make_config(eval_every=0)),
    ("checkpoint_every=-5", lambda w: make_config(checkpoint_every=-5)),
    ("checkpoint_steps=[-1]", lambda w: make_config(checkpoint_steps=[-1])),
    ("checkpoint_steps=None", lambda w: make_config(checkpoint_steps=None)),
    ("checkpoint_steps=[1000000000]", lambda w: make_config(checkpoint_steps=[10**9])),
    ("seed=-3", lambda w: make_config(seed=-3)),
    ("loss_dtype='float16'", lambda w: make_config(loss_dtype="float16")),
    ("arch='cnn'", lambda w: make_config(arch="cnn")),
    ("act='tanh'", lambda w: make_config(act="tanh")),
    ("d_model=0", lambda w: make_config(d_model=0)),
    ("n_heads=3", lambda w: make_config(n_heads=3)),
    ("d_mlp=-1", lambda w: make_config(d_mlp=-1)),
    ("n_layers=0", lambda w: make_config(n_layers=0)),
    ("init_scale=inf", lambda w: make_config(init_scale=math.inf)),
    ("init_scale=0", lambda w: make_config(init_scale=0)),
    ("d_model=1000000", lambda w: make_config(d_model=10**6, n_heads=1)),
    ("'foo'", lambda w: make_config(foo=1)),
    ("bogus", lambda w: RunConfig.from_dict({**make_config().to_dict(), "task": {"p": 23, "bogus": 1}})),
    ("RunConfig.task='x'", lambda w: RunConfig(task="x")),
    # ---- training entry points
    ("threads=0", lambda w: configure_torch(0)),
    ("threads='2'", lambda w: configure_torch("2")),
    ("on_divergence='ignore'", lambda w: train(w["run"].config, w["store"], on_divergence="ignore")),
    ("cfg='p=97'", lambda w: train("p=97", w["store"])),
    # ---- sweeps and ensembles
    ("grid['p']", lambda w: SweepConfig({"p": []})),
    ("p=100", lambda w: SweepConfig({"p": [23, 100]})),
    ("n_samples=-1", lambda w: SweepConfig({"p": [23]}, n_samples=-1)),
    ("'nope'", lambda w: SweepConfig({"nope": [1]})),
    ("executor='threads'", lambda w: run_sweep([w["run"].config], w["store"], executor="threads")),
    ("workers=0", lambda w: run_sweep([w["run"].config], w["store"], executor="processes", workers=0)),
    ("sweep[0]='abc'", lambda w: run_sweep(["abc"], w["store"])),
    ("batch='yes'", lambda w: run_sweep([w["run"].config], w["store"], batch="yes")),
    ("configs=", lambda w: train_ensemble([make_config(arch="mlp", p=23), make_config(arch="mlp", p=29)],
                                          w["store"])),
    # ---- the store
    ("run='nope'", lambda w: w["store"].load("nope")),
    ("step=7", lambda w: w["run"].load_state(7)),
    # ---- hypotheses and the ledger
    ("Hypothesis.id=''", lambda w: Hypothesis(**{**H1, "id": ""})),
    ("Hypothesis.controls='abc'", lambda w: Hypothesis(**{**H1, "controls": "abc"})),
    ("Hypothesis.comparison='>='", lambda w: Hypothesis(**{**H1, "comparison": ">="})),
    ("Hypothesis.threshold=inf", lambda w: Hypothesis(**{**H1, "threshold": math.inf})),
    ("Hypothesis.statistic='median'", lambda w: Hypothesis(**{**H1, "statistic": "median"})),
    ("Hypothesis.scope", lambda w: Hypothesis(**{**H1, "scope": {"task.p": [23]}})),
    ("Control.name=''", lambda w: Control("", "c", ">", 1.0)),
    ("add_evidence.value='abc'", lambda w: w["ledger"].add_evidence("H1", w["run"], "abc")),
    ("add_evidence.value=nan", lambda w: w["ledger"].add_evidence("H1", w["run"], math.nan)),
    ("id='NOPE'", lambda w: w["ledger"].add_evidence("NOPE", w["run"], 1.0)),
    ("condition='ctrl_x'", lambda w: w["ledger"].add_evidence("H1", w["run"], 1.0, condition="ctrl_x")),
    ("before H1 was registered", lambda w: w["ledger"].add_evidence("H1", w["run"], 1.0)),
    ("cannot be edited", lambda w: w["ledger"].register(Hypothesis(**{**H1, "claim": "other"}))),
    ("exploratory_runs='abc'", lambda w: w["ledger"].register(Hypothesis(**{**H1, "id": "H9"}), "abc")),
    ("refines='H0'", lambda w: w["ledger"].register(Hypothesis(**{**H1, "id": "H9", "refines": "H0"}))),
    ("successes=5", lambda w: proportion_ci(5, 3)),
    # ---- interventions and hooks
    ("component='hook_post:x'", lambda w: iv.parse_component("hook_post:x")),
    ("hook_nope", lambda w: iv.ablate(w["model"], w["tokens"], w["labels"], ["hook_nope"])),
    ("index=999", lambda w: iv.ablate(w["model"], w["tokens"], w["labels"], ["blocks.0.mlp.hook_post:999"])),
    ("how='max'", lambda w: iv.ablate(w["model"], w["tokens"], w["labels"], ["hook_embed"], how="max")),
    ("components='blocks.0.mlp.hook_post'", lambda w: iv.ablate(w["model"], w["tokens"], w["labels"],
                                                                "blocks.0.mlp.hook_post")),
    ("tokens=tensor", lambda w: iv.loss(w["model"], w["tokens"].float(), w["labels"])),
    ("tokens with values", lambda w: iv.loss(w["model"], w["tokens"] + 30, w["labels"])),
    ("labels=tensor", lambda w: iv.loss(w["model"], w["tokens"], w["labels"][:5])),
    ("corrupt of shape (7, 3)", lambda w: iv.activation_patching(w["model"], w["tokens"][:10], w["tokens"][:7],
                                                                 ["hook_embed"], _metric)),
    ("metric with clean=", lambda w: iv.activation_patching(w["model"], w["tokens"][:8], w["tokens"][:8],
                                                            ["hook_embed"], _metric)),
    ("freqs=[999]", lambda w: zoom.ablate_freqs(w["model"], w["tokens"], w["labels"], [999])),
    ("n=20", lambda w: zoom.random_freqs(23, [1], 20)),
    ("key_freqs=[0]", lambda w: zoom.energy_normalized_ablations(w["model"], w["tokens"], w["labels"], [0])),
    ("hook_nope", lambda w: w["model"].run_with_cache(w["tokens"], names_filter=["hook_nope"])),
    ("hook_nope", lambda w: w["model"].run_with_hooks(w["tokens"], fwd_hooks=[("hook_nope", lambda a, h: a)])),
    # ---- measures and views
    ("key_freqs=(999,)", lambda w: Context(w["data"], (999,), "add")),
    ("measures=['nope']", lambda w: progress_measures(w["run"], key_freqs=[1], measures=("nope",))),
    ("op='mul'", lambda w: restricted_loss(w["model"], Context(w["data"], (1,), "mul"))),
    ("x of 4 entries", lambda w: gini(torch.zeros(4))),
    ("threshold=0", lambda w: circuits.key_freqs(w["model"], threshold=0)),
    ("min_frac=2", lambda w: circuits.key_freqs(w["model"], min_frac=2)),
    ("neuron=999", lambda w: CheckpointExplorer(w["run"], key_freqs=[1]).figure(60, neuron=999)),
    ("step=7", lambda w: CheckpointExplorer(w["run"], key_freqs=[1]).figure(7)),
    ("key_freqs=[999]", lambda w: CheckpointExplorer(w["run"], key_freqs=[999])),
    ("metrics without a memorization step", lambda w: max_spike_ratio(
        pd.DataFrame({"step": [0, 10], "train_loss": [3.0, 3.0], "train_acc": [0.1, 0.1]}))),
    ("sign=2", lambda w: fourier.sum_directions(23, [1], sign=2)),
    ("freqs=[12]", lambda w: fourier.project_freqs(torch.zeros(23, 4), [12])),
    ("p=10000000000", lambda w: make_config(p=10**10)),
    ("steps=1000000000000", lambda w: make_config(steps=10**12)),
    ("checkpoint_steps={20: 'x'}", lambda w: make_config(checkpoint_steps={20: "x"})),
    ("config=", lambda w: w["store"].has(w["run"].hash)),
    ("run='../x/", lambda w: w["store"].load("../x/" + w["run"].hash)),
    ("step=60.0", lambda w: w["run"].load_state(60.0)),
    ("SweepConfig.grid=None", lambda w: SweepConfig(grid=None)),
    ("SweepConfig.base='p=23'", lambda w: SweepConfig({"p": [23]}, base="p=23")),
    ("columns='nope'", lambda w: __import__("scidl.sweep").sweep.sweep_metrics([w["run"].config], w["store"],
                                                                               columns=("nope",))),
    ("configs=", lambda w: train_ensemble([make_config(arch="mlp", p=23)] * 2, w["store"])),
    ("register.h='H1'", lambda w: w["ledger"].register("H1")),
    ("Hypothesis.threshold=2.0", lambda w: Hypothesis(**{**H1, "statistic": "proportion", "threshold": 2.0,
                                                         "controls": ()})),
    ("interval.level=1.5", lambda w: proportion_ci(2, 3, level=1.5)),
    ("mean_ci.values[]=nan", lambda w: __import__("scidl.hypotheses").hypotheses.mean_ci([1.0, math.nan])),
    ("Ledger.path", lambda w: Ledger(w["root"])),
    ("seed=1.5", lambda w: zoom.random_freqs(23, [1], 2, seed=1.5)),
    ("metric=None", lambda w: iv.activation_patching(w["model"], w["tokens"][:8], w["tokens"][8:16],
                                                     ["hook_embed"], None)),
    ("pos=99", lambda w: zoom.patching_components(w["model"], pos=99)),
    ("p=24", lambda w: zoom.random_freqs(24, [1], 2)),
    ("Context.data='data'", lambda w: Context("data", (1,), "add")),
    ("pm='an empty DataFrame'", lambda w: __import__("scidl.phenomena.grokking.measures").phenomena.grokking.measures.detect_phases(pd.DataFrame())),
    ("metrics=", lambda w: scidl.grokking_summary(pd.DataFrame({"step": [0]}))),
    ("freqs=[0]", lambda w: fourier.sum_directions(23, [0])),
    ("tokens=tensor(shape=(32, 3), dtype=torch.float32)", lambda w: w["model"].run_with_cache(w["tokens"].float())),
    ("fwd_hooks=", lambda w: w["model"].run_with_hooks(w["tokens"], fwd_hooks=[("hook_embed",)])),
    # ---- notebook parameters (papermill)
    ("parameter foo=1", lambda w: check_parameters({**_injected("# Parameters\np = 97\nfoo = 1\n"), "foo": 1})),
    ("parameter p='abc'", lambda w: check_parameters({**_injected("# Parameters\np = 'abc'\n"), "p": "abc"})),
    ("parameter frac_trains=0.3", lambda w: check_parameters({**_injected("# Parameters\nfrac_trains = 0.3\n"),
                                                              "frac_trains": 0.3})),
]


def test_the_suite_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("named, call", CASES, ids=[f"{i:03d}" for i in range(len(CASES))])
def test_bad_input_gets_a_clear_error_and_changes_nothing(world, named, call):
    before = _digest(world["root"])
    with pytest.raises(ScidlError) as err:
        call(world)
    assert named in str(err.value), f"the error does not name {named!r}: {err.value}"
    assert _digest(world["root"]) == before, "the store or the ledger changed"
