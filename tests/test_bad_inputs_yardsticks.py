"""Bad input to predict, the yardsticks' protocol, Q3, Q4, explain and the report: every call is refused
with scidl's own error (ScidlError), naming the parameter, before pandas, numpy or torch see it, and
nothing is written. The cases are built here, not copied from an outside battery."""
import math

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from scidl.config import make_config
from scidl.errors import ScidlError
from scidl.explain import Explanation, faithfulness
from scidl.report import index_html, summarize, write_report
from scidl.yardsticks import predict, protocol, q3, q4

BASE = make_config(arch="mlp", act="quadratic", p=23, d_mlp=32, steps=100)


def _frame(n=24, seed=0):
    rng = np.random.default_rng(seed)
    f, wd = rng.uniform(0.2, 0.9, n), 10 ** rng.uniform(-1, 0.5, n)
    shows = f >= 0.5
    return pd.DataFrame({"frac_train": f, "weight_decay": wd, "shows": shows,
                         "step": np.where(shows, 10 ** (2.0 - np.log10(f)), np.nan)})


FIT, HELD = _frame(seed=0), _frame(seed=1)
MODEL = predict.fit_q1(FIT, ["frac_train", "weight_decay"])
FEATURES = ["frac_train", "weight_decay"]
CKPT = pd.DataFrame({"hash": ["a"] * 4 + ["b"] * 4, "step": [0, 10, 20, 30] * 2,
                     "stat": [0.0, 0.2, 0.6, 0.9, 0.0, 0.1, 0.1, 0.2], "label": [False, False, True, True] * 2,
                     "eventually": [True] * 4 + [False] * 4, "level_step": [20] * 4 + [np.nan] * 4})
METRICS = pd.DataFrame({"step": np.arange(0, 110, 10), "train_loss": np.linspace(4, 1, 11),
                        "test_loss": np.linspace(4, 2, 11)})
FOUND = pd.DataFrame({"component": list("abcde"), "score": [5.0, 4, 3, 2, 1]})
TRUTH = pd.DataFrame({"component": list("abcde"), "effect": [1.0, 0.5, 0.2, 0.1, 0.0]})
Q4ROW = {"run": "r", "seconds": 1.0, "within_budget": True, "claims": 3, "checked": 1.0, "faithful": True,
         "passed": True, "faithfulness": 0.9, "best_random": 0.1, "oracle": 0.95}
EXPL = dict(kind="k", run="r", claims=["c"], parts=pd.DataFrame({"component": ["x"]}),
            faithfulness={"score": 0.9, "random_scores": [0.1], "loss": 0.5, "full_loss": 0.1, "chance_loss": 3.1})


def _q3_task(**kw):
    clean = torch.randint(0, 23, (8, 3))
    base = dict(phenomenon="planted", corruption="another pair",
                candidates=("blocks.0.attn.hook_z:0@2", "blocks.0.attn.hook_z:1@2"), excluded={},
                clean=clean, corrupt=clean.flip(0), labels=clean[:, 0], truth_clean=clean, truth_corrupt=clean.flip(0),
                truth_labels=clean[:, 0], answer_pos=2)
    return q3.Q3Task(**{**base, **kw})


CASES = [
    # ---- predict: frames, columns, dtypes
    ("frame['shows']", lambda: predict.fit_q1(FIT.assign(shows=np.where(FIT.shows, "yes", "no")), FEATURES)),
    ("frame['shows']", lambda: predict.fit_q1(FIT.assign(shows=FIT.shows.astype(float)), FEATURES)),
    ("lacks the column(s) ['shows']", lambda: predict.fit_q1(FIT.drop(columns="shows"), FEATURES)),
    ("frame=None", lambda: predict.fit_q1(None, FEATURES)),
    ("frame='an empty DataFrame'", lambda: predict.fit_q1(FIT.iloc[:0], FEATURES)),
    ("features=[]", lambda: predict.fit_q1(FIT, [])),
    ("features='frac_train'", lambda: predict.fit_q1(FIT, "frac_train")),
    ("features=['frac_train', 'frac_train']", lambda: predict.fit_q1(FIT, ["frac_train", "frac_train"])),
    ("log=('nope',)", lambda: predict.fit_q1(FIT, FEATURES, log=("nope",))),
    ("frame['step']=nan", lambda: predict.fit_q1(FIT.assign(step=np.nan), FEATURES)),
    ("frame['step']=-1", lambda: predict.fit_q1(FIT.assign(step=-1.0), FEATURES)),
    ("l2=-5.0", lambda: predict.fit_q1(FIT, FEATURES, l2=-5.0)),
    ("l2=nan", lambda: predict.fit_q1(FIT, FEATURES, l2=math.nan)),
    ("frame['weight_decay']", lambda: predict.fit_q1(FIT.assign(weight_decay=np.inf), FEATURES)),
    ("frame['weight_decay']", lambda: predict.fit_q1(FIT.assign(weight_decay="a"), FEATURES)),
    ("l2=-10", lambda: predict.fit_censored(FIT, ["frac_train"], 1000, l2=-10)),
    ("features=[]", lambda: predict.fit_censored(FIT, [], 1000)),
    ("fit_fn=None", lambda: predict.loo_accuracy(None, FIT)),
    ("at least 2 rows", lambda: predict.loo_accuracy(lambda f: predict.fit_q1(f, FEATURES), FIT.iloc[:1])),
    ("frame['frac_train']", lambda: predict.best_threshold(FIT.assign(frac_train=np.nan), FEATURES)),
    ("features=[]", lambda: predict.best_threshold(FIT, [])),
    ("held_out=None", lambda: predict.threshold_calls(FIT, None, FEATURES)),
    ("model=None", lambda: predict.score_q1(None, FIT, HELD)),
    ("held_out='an empty DataFrame'", lambda: predict.score_q1(MODEL, FIT, HELD.iloc[:0])),
    ("held_out['step']=nan", lambda: predict.score_q1(MODEL, FIT, HELD.assign(step=np.nan))),
    ("held_out['shows']", lambda: predict.score_q1(MODEL, FIT, HELD.assign(shows="no"))),
    ("frac=5.0", lambda: predict.early_features(METRICS, frac=5.0)),
    ("frac='0.1'", lambda: predict.early_features(METRICS, frac="0.1")),
    ("n_points=0", lambda: predict.early_features(METRICS, n_points=0)),
    ("columns='train_loss'", lambda: predict.early_features(METRICS, columns="train_loss")),
    ("total_steps=-100", lambda: predict.early_features(METRICS, total_steps=-100)),
    ("metrics['train_loss']", lambda: predict.early_features(METRICS.assign(train_loss=np.nan))),
    ("lacks the column(s) ['step']", lambda: predict.early_features(METRICS.drop(columns="step"))),
    ("threshold=nan", lambda: predict.detector_scores(None, CKPT, "stat", threshold=math.nan)),
    ("lacks the column(s) ['nope']", lambda: predict.detector_scores(CKPT, CKPT, "nope")),
    ("held_out='an empty DataFrame'", lambda: predict.detector_scores(CKPT, CKPT.iloc[:0], "stat")),
    ("precision=2.0", lambda: predict.early_warning(CKPT, CKPT, "stat", precision=2.0)),
    ("precision=nan", lambda: predict.early_warning(CKPT, CKPT, "stat", precision=math.nan)),
    ("fit['eventually']", lambda: predict.early_warning(CKPT.assign(eventually="yes"), CKPT, "stat")),
    ("n_held_out=-1", lambda: predict.q1_configs(BASE, [0.3, 0.6], [0.1, 1.0], -1)),
    ("n_held_out=2.5", lambda: predict.q1_configs(BASE, [0.3, 0.6], [0.1, 1.0], 2.5)),
    ("frac_trains=0.3", lambda: predict.q1_configs(BASE, 0.3, [0.1, 1.0], 2)),
    ("weight_decays[0]='a'", lambda: predict.q1_configs(BASE, [0.3, 0.6], ["a", "b"], 2)),
    ("seed=-1", lambda: predict.q1_configs(BASE, [0.3, 0.6], [0.1, 1.0], 2, seed=-1)),
    ("seed=None", lambda: predict.q1_configs(BASE, [0.3, 0.6], [0.1, 1.0], 2, seed=None)),
    ("held_out_seed0=-5", lambda: predict.q1_configs(BASE, [0.3, 0.6], [0.1, 1.0], 2, held_out_seed0=-5)),
    ("base=None", lambda: predict.q1_configs(None, [0.3, 0.6], [0.1, 1.0], 2)),
    ("multiple_of['d_mlp']=0", lambda: predict.sample_configs(BASE, {"d_mlp": [16, 64]}, 2, 0, multiple_of={"d_mlp": 0})),
    ("multiple_of key 'd_mlpp'", lambda: predict.sample_configs(BASE, {"d_mlp": [16, 64]}, 2, 0, multiple_of={"d_mlpp": 4})),
    ("derive(", lambda: predict.sample_configs(BASE, {"d_mlp": [16, 64]}, 2, 0, derive=lambda c: 5)),
    ("derive(", lambda: predict.sample_configs(BASE, {"d_mlp": [16, 64]}, 2, 0, derive=lambda c: {"seed": 3})),
    ("grid={'nope'", lambda: predict.extrapolation_configs(BASE, {"nope": [1.0, 2.0]}, 2, 0)),
    ("multiple_of['d_mlp']=0", lambda: predict.extrapolation_configs(BASE, {"d_mlp": [16, 64]}, 2, 0,
                                                                     multiple_of={"d_mlp": 0})),
    ("log=('nope',)", lambda: predict.extrapolation_configs(BASE, {"d_mlp": [16, 64]}, 2, 0, log=("nope",))),
    ("grid['d_mlp']=[]", lambda: predict.extrapolation_configs(BASE, {"d_mlp": []}, 2, 0)),
    ("point=None", lambda: predict.grid_distance({"x": [1.0, 2.0]}, None)),
    ("it lacks the grid field 'x'", lambda: predict.grid_distance({"x": [1.0, 2.0]}, {"y": 1.0})),
    ("point['x']=nan", lambda: predict.grid_distance({"x": [1.0, 2.0]}, {"x": math.nan})),
    ("grid={}", lambda: predict.grid_distance({}, {"x": 1.0})),
    ("grid['x'][0]=0.0", lambda: predict.grid_distance({"x": [0.0, 2.0]}, {"x": 1.0}, log=("x",))),
    ("families={}", lambda: predict.choose_q1(FIT, {})),
    ("families['x']=5", lambda: predict.choose_q1(FIT, {"x": 5})),
    ("fit=[1, 2]", lambda: predict.check_disjoint([1, 2], [])),
    ("ignore_seeds='no'", lambda: predict.check_disjoint([BASE], [], ignore_seeds="no")),
    # ---- protocol
    ("scores[0]='a'", lambda: protocol.auroc(["a", "b"], [True, False])),
    ("labels=", lambda: protocol.auroc([0.1, 0.9], [0, 2])),
    ("labels=", lambda: protocol.auroc([0.1, 0.9, 0.5], [math.nan, 1, 0])),
    ("labels=", lambda: protocol.auroc([0.1, 0.9], ["no", "yes"])),
    ("budget=None", lambda: protocol.Usage(1, 0, 8, 1, 0.0).over(None)),
    ("minimum=-1", lambda: protocol.check_seeds("seeds", [1, 2], minimum=-1)),
    ("seeds={1: 'a'}", lambda: protocol.check_seeds("seeds", {1: "a"})),
    ("passed='no'", lambda: protocol.share("no")),
    ("passed[]='False'", lambda: protocol.share(["False", "False"])),
    ("passed[]=None", lambda: protocol.share([None])),
    ("passed[]=nan", lambda: protocol.share([math.nan, 0.0])),
    ("passed=None", lambda: protocol.share(None)),
    ("hits=None", lambda: protocol.pooled_recall(None, 3)),
    ("values='12'", lambda: protocol.mean_interval("12")),
    ("values[0]=True", lambda: protocol.mean_interval([True, False])),
    ("values=5.0", lambda: protocol.mean_interval(5.0)),
    # ---- q3
    ("task=None", lambda: q3.budget(torch.nn.Linear(2, 2), None)),
    ("important=-1", lambda: q3.localization_scores(FOUND, TRUTH, important=-1)),
    ("important=nan", lambda: q3.localization_scores(FOUND, TRUTH, important=math.nan)),
    ("found['score']", lambda: q3.localization_scores(FOUND.assign(score="x"), TRUTH)),
    ("found.component='a' is not allowed twice", lambda: q3.localization_scores(
        FOUND.assign(component=list("aacde")), TRUTH)),
    ("k=0", lambda: q3.summarize(pd.DataFrame({"method": ["m"], "hits": [1], "spearman": [0.5], "within_budget": [1],
                                               "forward": [1], "rows": [8], "flops": [1.0]}), k=0)),
    ("per_model=None", lambda: q3.summarize(None)),
    ("per_model=\"DataFrame with columns ['method']\" is not allowed: it lacks", lambda: q3.summarize(pd.DataFrame({"method": ["m"]}))),
    ("task=None", lambda: q3.score_model(torch.nn.Linear(2, 2), None, protocol.Budget(10))),
    ("budget=None", lambda: q3.score_model(torch.nn.Linear(2, 2), _q3_task(), None)),
    ("methods=['structural']", lambda: q3.score_model(torch.nn.Linear(2, 2), _q3_task(), protocol.Budget(10),
                                                      methods=["structural"])),
    ("candidates=None", lambda: q3.structural_order(None)),
    ("answer_pos=99", lambda: _q3_task(answer_pos=99)),
    ("candidates[]='nonsense'", lambda: _q3_task(candidates=("blocks.0.attn.hook_z:0@2", "nonsense"))),
    ("candidates='ab'", lambda: _q3_task(candidates="ab")),
    ("excluded=None", lambda: _q3_task(excluded=None)),
    ("labels=", lambda: _q3_task(labels=torch.zeros(8))),
    # ---- q4
    ("run=None", lambda: q4.score_model(None)),
    ("run='run'", lambda: q4.score_model("run")),
    ("rows=None", lambda: q4.summarize(None)),
    ("rows=[]", lambda: q4.summarize([])),
    ("rows[0]={}", lambda: q4.summarize([{}])),
    ("rows[0]['faithfulness']='0.9'", lambda: q4.summarize([{**Q4ROW, "faithfulness": "0.9"}])),
    ("rows[0]['passed']='no'", lambda: q4.summarize([{**Q4ROW, "passed": "no"}])),
    ("rows[0]['seconds']=-5", lambda: q4.summarize([{**Q4ROW, "seconds": -5}])),
    ("rows[0]['checked']=3.0", lambda: q4.summarize([{**Q4ROW, "checked": 3.0}])),
    ("rows=", lambda: q4.summarize(Q4ROW)),
    # ---- explain
    ("loss=True", lambda: faithfulness(True, 0.1, 2.0)),
    ("full_loss=-3.0", lambda: faithfulness(1.0, -3.0, -2.0)),
    ("faithfulness=", lambda: Explanation(**{**EXPL, "faithfulness": {}})),
    ("faithfulness['random_scores']=[]", lambda: Explanation(**{**EXPL, "faithfulness": {**EXPL["faithfulness"],
                                                                                          "random_scores": []}})),
    ("faithfulness['score']='high'", lambda: Explanation(**{**EXPL, "faithfulness": {**EXPL["faithfulness"],
                                                                                      "score": "high"}})),
    ("faithfulness['score']=nan", lambda: Explanation(**{**EXPL, "faithfulness": {**EXPL["faithfulness"],
                                                                                   "score": math.nan}})),
    ("claims='abc'", lambda: Explanation(**{**EXPL, "claims": "abc"})),
    ("parts=None", lambda: Explanation(**{**EXPL, "parts": None})),
    ("margin='a'", lambda: Explanation(**EXPL).beats_random(margin="a")),
    ("margin=nan", lambda: Explanation(**EXPL).beats_random(margin=math.nan)),
    # ---- report (pure parts; write_report below)
    ("notebook=None", lambda: summarize(None)),
    ("summaries=[]", lambda: index_html([])),
    ("summaries=['a']", lambda: index_html(["a"])),
]


def test_the_battery_is_large():
    assert len(CASES) >= 100


@pytest.mark.parametrize("named, call", CASES, ids=[f"{i:03d}" for i in range(len(CASES))])
def test_bad_input_is_refused_naming_it(named, call):
    with pytest.raises(ScidlError) as err:
        call()
    assert named in str(err.value), f"the error does not name {named!r}: {err.value}"


def test_valid_numpy_and_torch_scalars_are_accepted_not_refused():
    assert faithfulness(np.float32(1.0), 0.1, 2.0) == pytest.approx((2.0 - 1.0) / 1.9)
    assert faithfulness(torch.tensor(1.0), np.float64(0.1), 2) == pytest.approx((2.0 - 1.0) / 1.9)
    assert protocol.share(np.array([True, False]))["share"] == 0.5
    assert protocol.auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0


def _notebook(path, **edit):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t\n\n**Question.** q?"),
                                         nbformat.v4.new_code_cell("1", outputs=[])],
                                  metadata={"papermill": {"duration": 1.0}})
    for key, value in edit.items():
        if key == "papermill":
            nb.metadata.papermill = value
        elif key == "duration":
            nb.metadata.papermill.duration = value
        elif key == "no_source":
            del nb.cells[1]["source"]
    if "no_source" in edit:  # nbformat would refuse to write it: write the JSON as a broken tool would
        import json

        path.write_text(json.dumps(nb))
    else:
        nbformat.write(nb, path, version=4)
    return path


@pytest.mark.parametrize("edit, named", [({"duration": "abc"}, "duration='abc'"), ({"duration": -5}, "duration=-5"),
                                         ({"papermill": [1]}, "metadata.papermill=[1]"),
                                         ({"no_source": True}, "must be a readable, valid .ipynb")])
def test_write_report_reads_every_notebook_before_writing_anything(tmp_path, edit, named):
    good = _notebook(tmp_path / "good.ipynb")
    bad = _notebook(tmp_path / "bad.ipynb", **edit)
    out = tmp_path / "out"
    with pytest.raises(ScidlError, match=named.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        write_report([good, bad], out)
    assert not out.exists(), "a refused report left files behind"


@pytest.mark.parametrize("notebooks, out, named", [
    ("GEN", "out", "notebooks="), ([None], "out", "notebooks[]=None"), (["x.txt"], "out", "must be an .ipynb file"),
    (["NB"], None, "out=None"), (["NB"], 123, "out=123"), (["NB"], "FILE", "is a file"),
])
def test_write_report_refuses_bad_paths_naming_them(tmp_path, notebooks, out, named):
    nb = _notebook(tmp_path / "nb.ipynb")
    (tmp_path / "afile").write_text("x")
    notebooks = (p for p in [nb]) if notebooks == "GEN" else [nb if n == "NB" else n for n in notebooks]
    out = tmp_path / "afile" if out == "FILE" else tmp_path / out if isinstance(out, str) else out
    with pytest.raises(ScidlError, match=named.replace("[", r"\[").replace("]", r"\]")):
        write_report(notebooks, out)
    assert not (tmp_path / "out").exists()
