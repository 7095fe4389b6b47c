"""Every notebook reruns under papermill with small overridden parameters; bad values fail early."""
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SMALL = yaml.safe_load((ROOT / "ci" / "small_params.yaml").read_text())


@pytest.fixture(scope="session")
def _shared(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook-reruns")


@pytest.fixture(autouse=True)
def _isolated_store(_shared, monkeypatch):
    # one store and ledger for the whole rerun, as in the main job: 05 tests what 04 registered
    monkeypatch.setenv("SCIDL_STORE", str(_shared / "runs"))  # the kernel inherits it
    monkeypatch.setenv("SCIDL_LEDGER", str(_shared / "ledger.jsonl"))


def _execute(nb: Path, out: Path, **params):
    return pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent),
                               progress_bar=False, kernel_name="python3")


def _verdict(nb) -> dict[str, str]:
    text = "".join("".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("name") == "stdout")
    return dict(re.findall(r"^(\w+) = (.+)$", text, flags=re.M))


def test_every_notebook_has_small_parameters():
    assert {nb.stem for nb in NOTEBOOKS} <= set(SMALL), "add the notebook to ci/small_params.yaml"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_records_its_input_path_not_a_copy_of_itself(nb):
    papermill = nbformat.read(nb, as_version=4).metadata.papermill
    assert isinstance(papermill.input_path, str) and papermill.input_path.endswith(nb.name)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_commented_parameters_cell(nb):
    cells = nbformat.read(nb, as_version=4).cells
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    lines = tagged[0].source.splitlines()
    for line in lines:
        assert re.match(r"^\w+: [\w\[\], ]+ = .+  # .+", line), f"untyped or uncommented: {line!r}"
    # papermill --help-notebook must see every parameter (it skips lines with a second '=')
    from papermill.translators import PythonTranslator
    seen = [p.name for p in PythonTranslator.inspect(tagged[0])]
    assert seen == [line.split(":")[0] for line in lines]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reruns_with_small_parameters(nb, tmp_path):
    out = _execute(nb, tmp_path / nb.name, **SMALL[nb.stem])
    assert "Verdict" in "".join(c.source for c in out.cells if c.cell_type == "markdown")
    assert _verdict(out), "the Verdict prints name = value lines"


@pytest.mark.parametrize("param, value", [("p", 100), ("frac_train", 1.5), ("op", "pow"),
                                          ("foo", 1), ("p", "abc"), ("steps", 1.5)])
def test_bad_parameter_fails_at_once_naming_it(param, value, tmp_path):
    nb = ROOT / "notebooks" / "01_pick_phenomenon.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        _execute(nb, tmp_path / "bad.ipynb", **{param: value})
    assert err.value.ename == "ConfigError"
    assert f"{param}={value!r}" in err.value.evalue
    executed = nbformat.read(tmp_path / "bad.ipynb", as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.execution_count]
    assert len(ran) == 3, "parameters, injected parameters, then the failing setup cell"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_paper_scale_parameters_name_real_parameters(nb):
    paper = nb.with_suffix(".paper.yaml")
    assert paper.exists(), f"{paper.name}: every notebook has a paper-scale parameter set beside it"
    from papermill.translators import PythonTranslator
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    known = {p.name for p in PythonTranslator.inspect(cell)}
    assert set(yaml.safe_load(paper.read_text())) <= known


@pytest.mark.parametrize("stem, param, value", [("09_automate_and_score", "transformer_seeds", [7, 7]),
                                                ("09_automate_and_score", "q3_budget", 1),
                                                ("09_automate_and_score", "n_held_out", -1),
                                                ("09_automate_and_score", "early_frac", 2.0),
                                                ("09_automate_and_score", "held_out_seed", -5),
                                                ("07_iterate_addition", "fresh_seeds", [1, 1]),
                                                ("06_generalize", "mlp_seeds", []),
                                                ("06_generalize", "workers", 0),
                                                ("07_iterate_addition", "sweep_d_models", [30])])
def test_repeated_seeds_and_budgets_are_refused_before_anything_runs(stem, param, value, tmp_path):
    """A repeated seed is one model counted twice; a refusal comes in the setup cell, before training."""
    nb = ROOT / "notebooks" / f"{stem}.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        _execute(nb, tmp_path / "bad.ipynb", **{param: value})
    assert err.value.ename == "ConfigError" and f"parameter {param}={value!r}" in err.value.evalue
    assert "allowed:" in err.value.evalue
    executed = nbformat.read(tmp_path / "bad.ipynb", as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.execution_count]
    assert len(ran) == 3, "parameters, injected parameters, then the failing setup cell"


def _parameters(nb: Path) -> tuple[str, dict]:
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    return cell.source, namespace


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_allowed_values_are_declared_once_and_met_by_the_defaults_small_and_paper_sets(nb):
    from scidl.notebook import check_parameters, declared_rules

    source, namespace = _parameters(nb)
    rules = declared_rules(source)  # an unknown rule's text fails here
    free = {n for n, kind in namespace["__annotations__"].items() if kind is str and n.endswith(("_path", "_address"))}
    assert set(namespace["__annotations__"]) - free == set(rules), "every parameter but paths declares its allowed values"
    paper = yaml.safe_load(nb.with_suffix(".paper.yaml").read_text()) or {}
    for values in ({}, SMALL[nb.stem], paper):
        check_parameters({**namespace, **values}, source=source)


@pytest.mark.parametrize("stem, param, value, rule", [
    ("01_pick_phenomenon", "p", 91, "prime"), ("01_pick_phenomenon", "compare_dtype", "float16", "one of"),
    ("02_high_level_sweep", "frac_trains", [0.3, 0.3], "distinct"), ("02_high_level_sweep", "weight_decays", [-1.0], "at least 0"),
    ("02_high_level_sweep", "executor", "threads", "one of"), ("03_zoom_in", "patch_position", 3, "0 to 2"),
    ("04_hypothesize", "null_shuffles", 0, "at least 1"), ("05_test_and_refine", "fresh_seeds", [2**32], "seed"),
    ("06_generalize", "add_widths", [0], "at least 1"), ("06_generalize", "ops", ["add", "pow"], "one of"),
    ("07_iterate_addition", "n_digits", 1, "2 to 9"), ("07_iterate_addition", "sweep_d_models", [30], "multiple of 4"),
    ("09_automate_and_score", "fit_frac_trains", [0.5], "at least 2 items"),
    ("09_automate_and_score", "held_out_min_cells", 0.5, "below 0.5"), ("09_automate_and_score", "q4_budget_s", 0.0, "above 0"),
])
def test_a_value_outside_the_declared_rules_is_refused_naming_the_rule(stem, param, value, rule):
    from scidl.config import ConfigError
    from scidl.notebook import check_parameters

    source, namespace = _parameters(ROOT / "notebooks" / f"{stem}.ipynb")
    with pytest.raises(ConfigError) as err:
        check_parameters({**namespace, param: value}, source=source)
    assert f"parameter {param}={value!r} is not allowed: fails '{rule}" in str(err.value)


@pytest.mark.parametrize("text", ["between 1 and 3", "at least", "one of", "prime number", "above x"])
def test_an_unknown_rule_is_an_error_not_a_rule_that_always_holds(text):
    from scidl.config import ConfigError
    from scidl.notebook import declared_rules

    with pytest.raises(ConfigError, match="allowed-values rule"):
        declared_rules(f"n: int = 3  # a count; allowed: {text}\n")


def test_the_parameters_cell_is_found_in_the_kernel_history():
    from scidl.config import ConfigError
    from scidl.notebook import check_parameters

    source = "p: int = 5  # modulus; allowed: prime\nk: int = 1  # k; allowed: at least 1\n"
    namespace: dict = {}
    exec(source, namespace)
    history = ["", "import scidl", source, "# Parameters\np = 6\n", "scidl.check_parameters(globals())"]
    with pytest.raises(ConfigError, match="parameter p=6"):
        check_parameters({**namespace, "p": 6, "In": history})
    check_parameters({**namespace, "In": history})
