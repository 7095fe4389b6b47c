"""Interventions on a toy hooked model where the right answer is known by construction."""
import pytest
import torch
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from scidl import interventions as iv
from scidl.phenomena.grokking import zoom


class Toy(HookedRootModule):
    """logits = [2 * a_0 + 0 * a_1, b_0 * 0]: only feature 0 of hook_a matters, hook_b never does."""

    def __init__(self):
        super().__init__()
        self.hook_a, self.hook_b = HookPoint(), HookPoint()
        self.setup()

    def forward(self, x):
        a = self.hook_a(x * 1.0)  # (batch, 2)
        b = self.hook_b(x * 3.0)
        return torch.stack([2 * a[:, 0] + 0 * a[:, 1], 0 * b[:, 0]], dim=-1)


def metric(logits):
    return logits[:, 0].mean() - logits[:, 1].mean()


CLEAN, CORRUPT = torch.tensor([[1.0, 5.0], [3.0, -1.0]]), torch.tensor([[0.0, 2.0], [-1.0, 4.0]])
COMPONENTS = ["hook_a", "hook_a:0", "hook_a:1", "hook_b"]


def test_activation_patching_known_answer():
    df = iv.activation_patching(Toy(), CLEAN, CORRUPT, COMPONENTS, metric).set_index("component")
    assert df.effect.to_dict() == pytest.approx({"hook_a": 1.0, "hook_a:0": 1.0, "hook_a:1": 0.0,
                                                 "hook_b": 0.0})


def test_attribution_patching_is_exact_on_a_linear_model():
    exact = iv.activation_patching(Toy(), CLEAN, CORRUPT, COMPONENTS, metric)
    approx = iv.attribution_patching(Toy(), CLEAN, CORRUPT, COMPONENTS, metric)
    assert list(approx.component) == COMPONENTS
    assert approx.effect.tolist() == pytest.approx(exact.effect.tolist(), abs=1e-6)


def test_ablations_known_answer():
    model, labels = Toy(), torch.tensor([0, 0])
    x = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    df = iv.ablate(model, x, labels, ["hook_a:0", "hook_a:1", "hook_b"], how="zero").set_index("component")
    assert df.loc["hook_a:1", "effect"] == pytest.approx(0.0)
    assert df.loc["hook_b", "effect"] == pytest.approx(0.0)
    assert df.loc["hook_a:0", "effect"] > 0.5  # the answer logit collapses to 0
    mean = iv.ablate(model, x, labels, ["hook_a:0"], how="mean")
    # mean of a_0 is 2: logits become [4, 0] for both rows
    expected = float(torch.nn.functional.cross_entropy(torch.tensor([[4.0, 0.0]] * 2, dtype=torch.float64), labels))
    assert mean.loss.iloc[0] == pytest.approx(expected)
    resample = iv.ablate(model, x, labels, ["hook_a:1"], how="resample")
    assert resample.effect.iloc[0] == pytest.approx(0.0)


def test_head_component_indexes_the_head_axis():
    act = torch.zeros(5, 3, 4, 8)  # (batch, pos, head, d_head)
    name, fn = iv.ablation_hook("blocks.0.attn.hook_z:2", "zero")
    out = fn(act + 1, None)
    assert out[:, :, 2].abs().sum() == 0 and out[:, :, [0, 1, 3]].min() == 1


def test_bad_ablation_kind_names_the_parameter():
    with pytest.raises(ValueError, match=r"how='max' is not allowed"):
        iv.ablation_hook("hook_a", "max")


def test_index_lists_select_several_neurons():
    assert iv.parse_component("hook_post:3,8") == ("hook_post", [3, 8], None)
    assert iv.parse_component("blocks.0.attn.hook_z:1@2") == ("blocks.0.attn.hook_z", 1, 2)
    name, fn = iv.ablation_hook("hook_post:1,3", "zero")
    out = fn(torch.ones(2, 5), None)
    assert out.sum(0).tolist() == [2, 0, 2, 0, 2]


def test_default_components_run_on_both_architectures():
    from scidl.phenomena.grokking.circuits import all_tokens
    from scidl.config import make_config
    from scidl.registry import make_model
    for arch in ("transformer", "mlp"):
        cfg = make_config(p=11, arch=arch, d_mlp=16, d_model=16)
        model = make_model(cfg.model, cfg.task)
        tokens = all_tokens(11)
        labels = (tokens[:, 0] + tokens[:, 1]) % 11
        comps = iv.default_components(model)
        df = iv.ablate(model, tokens, labels, comps, how="mean")
        assert list(df.component) == comps and df.loss.notna().all()


def test_position_restricts_the_patch_to_one_position():
    act = torch.ones(5, 3, 4, 8)  # (batch, pos, head, d_head)
    _, fn = iv.ablation_hook("blocks.0.attn.hook_z:2@1", "zero")
    out = fn(act, None)
    assert out[:, 1, 2].abs().sum() == 0 and out.sum() == act.sum() - 5 * 8
    _, fn = iv.ablation_hook("blocks.0.mlp.hook_post:0,3@2", "zero")
    out = fn(torch.ones(2, 3, 4), None)
    assert out[:, 2].tolist() == [[0, 1, 1, 0]] * 2 and out[:, :2].min() == 1


@pytest.mark.parametrize("component, match", [("hook_post:999", "index=999"), ("hook_post:1@5", "position=5"),
                                              ("hook_post:x", "component='hook_post:x'")])
def test_bad_components_fail_clearly(component, match):
    with pytest.raises(iv.InterventionError, match=match):
        _, fn = iv.ablation_hook(component, "zero")
        fn(torch.ones(2, 3, 32), None)


def test_patching_needs_one_corrupt_input_per_clean_input():
    with pytest.raises(iv.InterventionError, match="corrupt of shape"):
        iv.activation_patching(Toy(), CLEAN, CORRUPT[:1], COMPONENTS, metric)


def test_attribution_tracks_activation_patching_on_a_trained_transformer(tmp_path):
    """Not exact off a linear model, so checked on a model trained here: same ranking of components."""
    from scipy.stats import spearmanr

    from scidl.config import make_config
    from scidl.store import RunStore
    from scidl.phenomena.grokking.task import make_dataset
    from scidl.train import train
    cfg = make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=300, lr=3e-3, eval_every=100,
                      checkpoint_every=0, frac_train=0.6)
    model = train(cfg, RunStore(tmp_path), progress=False).load_model()
    tokens = make_dataset(cfg.task).tokens[:200]
    corrupt = tokens.clone()
    corrupt[:, 1] = (corrupt[:, 1] + 1) % 23
    answers = (tokens[:, 0] + tokens[:, 1]) % 23

    def logit_diff(logits):
        logits = logits[:, -1] if logits.dim() == 3 else logits
        return (logits.gather(1, answers[:, None]).squeeze(1) - logits.mean(1)).mean()
    comps = ["hook_embed@1", *[f"blocks.0.attn.hook_z:{h}@2" for h in range(4)],
             *[f"blocks.0.mlp.hook_post:{i * 8},{i * 8 + 1},{i * 8 + 2},{i * 8 + 3}@2" for i in range(8)]]
    exact = iv.activation_patching(model, tokens, corrupt, comps, logit_diff)
    approx = iv.attribution_patching(model, tokens, corrupt, comps, logit_diff)
    rho = spearmanr(exact.effect, approx.effect).statistic
    assert rho > 0.6, rho


def test_energy_normalized_ablations_cover_all_energy_and_define_the_gap():
    from scidl.phenomena.grokking.circuits import all_tokens
    from scidl.config import make_config
    from scidl.registry import make_model
    cfg = make_config(p=23, d_model=32, d_mlp=64)
    model = make_model(cfg.model, cfg.task)
    tokens = all_tokens(23)
    labels = (tokens[:, 0] + tokens[:, 1]) % 23
    table = zoom.energy_normalized_ablations(model, tokens, labels, [2, 5])
    assert list(table.kind) == ["key", "key", "non-key"] and table.freqs.iloc[-1] == [1, 3, 4, 6, 7, 8, 9, 10, 11]
    assert table.energy.sum() == pytest.approx(1.0, abs=1e-5)  # every non-constant frequency, once
    assert (table.effect_per_energy == table.effect / table.energy).all()
    gap = zoom.energy_normalized_gap(table)
    assert gap == pytest.approx(table.effect_per_energy[:2].mean() - table.effect_per_energy.iloc[2])
    with pytest.raises(iv.InterventionError, match="undefined"):
        zoom.energy_normalized_gap(table[table.kind == "non-key"])


def test_random_freqs_avoid_the_excluded_ones_and_are_seeded():
    picks = zoom.random_freqs(23, [1, 2, 3], 4, seed=5)
    assert len(set(picks)) == 4 and not set(picks) & {1, 2, 3} and set(picks) <= set(range(1, 12))
    assert picks == zoom.random_freqs(23, [1, 2, 3], 4, seed=5) and picks == sorted(picks)
    with pytest.raises(iv.InterventionError, match="n=9"):
        zoom.random_freqs(23, [1, 2, 3], 9)


def test_patching_agreement_known_values():
    import pandas as pd
    a = pd.DataFrame({"component": list("abcde"), "effect": [0.9, 0.5, 0.1, 0.0, -0.2]})
    same = iv.patching_agreement(a, a.assign(effect=a.effect * 2), k=2)
    assert same == {"spearman": pytest.approx(1.0), "topk_overlap": 1.0}
    flipped = iv.patching_agreement(a, a.assign(effect=-a.effect), k=2)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["topk_overlap"] == 1.0  # |effect| ranks
    with pytest.raises(iv.InterventionError, match="constant"):
        iv.patching_agreement(a, a.assign(effect=1.0), k=2)


def test_patching_components_are_upstream_of_a_nonlinearity():
    from scidl.config import make_config
    from scidl.registry import make_model
    cfg = make_config(p=11, d_model=16, d_mlp=16)
    model = make_model(cfg.model, cfg.task)
    comps = zoom.patching_components(model, {3: [0, 5], 4: []}, pos=2)
    assert comps == ["hook_embed@1", *[f"blocks.0.attn.hook_z:{h}@2" for h in range(4)],
                     "blocks.0.hook_attn_out@2", "blocks.0.mlp.hook_pre:0,5@2"]
    assert len(zoom.patching_components(model, {}, pos=2)) == 6 + 8  # 8 neuron groups without clusters
