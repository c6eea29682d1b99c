"""MADE: masks respect the ordering, exact normalisation, ensemble averaging, fit, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError, NotFittedError
from probgen.core.testing import check_density
from probgen.deep.autoregressive import MADE

pytestmark = pytest.mark.usefixtures("seeded_global_torch")


def _allowed(order: torch.Tensor) -> torch.Tensor:
    """allowed[d, j]: output d may depend on input j (j strictly earlier in the ordering)."""
    return order[None, :] < order[:, None]


@pytest.mark.parametrize("order", ["natural", "random"])
@pytest.mark.parametrize("direct_connection", [False, True])
def test_bernoulli_outputs_depend_only_on_earlier_inputs(order, direct_connection):
    made = MADE(7, [40, 40], n_masks=3, order=order, direct_connection=direct_connection).double()
    for index in range(3):
        x = torch.rand(7, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda v, k=index: made.logits(v, k), x)
        allowed = _allowed(made.orders[index])
        assert not bool((jacobian[~allowed] != 0).any())


def test_even_connectivity_realises_every_allowed_dependency():
    # Wide hidden layers with evenly spread degrees connect every allowed input-output pair,
    # so the check above cannot pass by masking everything away.
    made = MADE(6, [60], n_masks=2, connectivity="even").double()
    for index in range(2):
        x = torch.rand(6, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda v, k=index: made.logits(v, k), x)
        allowed = _allowed(made.orders[index])
        assert bool((jacobian[allowed] != 0).all())


def test_categorical_outputs_ignore_later_variables():
    made = MADE(5, [50], n_masks=2, likelihood="categorical", n_categories=3).double()
    generator = torch.Generator().manual_seed(0)
    base = torch.randint(0, 3, (1, 5), generator=generator)
    for index in range(2):
        order = made.orders[index]
        reference = made.logits(base, index)[0]
        for variable in range(5):
            changed = base.clone()
            changed[0, variable] = (changed[0, variable] + 1) % 3
            delta = (made.logits(changed, index)[0] - reference).abs().sum(-1)
            unaffected = order <= order[variable]
            assert bool((delta[unaffected] == 0).all())
            assert bool((delta[~unaffected] > 0).all())


@pytest.mark.parametrize(
    "options",
    [
        {"n_masks": 1},
        {"n_masks": 4},
        {"n_masks": 3, "direct_connection": True, "activation": "tanh"},
        {"n_masks": 2, "likelihood": "categorical", "n_categories": 3},
    ],
)
def test_exp_log_prob_sums_to_one(options):
    made = MADE(5, [24, 24], **options).double().init_for_evaluation()
    support = made.enumerate_support()
    assert support.shape == (made.n_categories**5, 5)
    total = torch.logsumexp(made.log_prob(support), 0)
    assert abs(total.item()) < 1e-10


def test_log_prob_is_log_mean_exp_over_masks():
    made = MADE(4, [16], n_masks=5).double().init_for_evaluation()
    x = made.enumerate_support()
    per_mask = torch.stack([made.log_prob_under_mask(x, k) for k in range(5)])
    expected = torch.log(per_mask.exp().mean(0))
    torch.testing.assert_close(made.log_prob(x), expected)
    assert not torch.allclose(per_mask[0], per_mask[1])


def test_single_mask_log_prob_is_the_chain_rule():
    made = MADE(3, [8], n_masks=1).double().init_for_evaluation()
    x = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    probabilities = torch.sigmoid(made.logits(x, 0))[0].tolist()
    expected = (
        math.log(probabilities[0]) + math.log(1 - probabilities[1]) + math.log(probabilities[2])
    )
    assert made.log_prob(x).item() == pytest.approx(expected, abs=1e-12)


def _chain_distribution() -> tuple[torch.Tensor, torch.Tensor]:
    """A 4-variable Markov chain: every configuration and its probability."""
    support = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float64)
    first = torch.where(support[:, 0] == 1, 0.7, 0.3)
    probability = first
    for d in range(1, 4):
        same = support[:, d] == support[:, d - 1]
        probability = probability * torch.where(same, 0.85, 0.15)
    return support, probability


def test_fit_recovers_a_known_distribution():
    support, probability = _chain_distribution()
    generator = torch.Generator().manual_seed(1)
    data = support[torch.multinomial(probability, 3000, True, generator=generator)]
    made = MADE(4, [32], n_masks=1).double()
    made.fit(data, n_epochs=25, batch_size=200, learning_rate=1e-2, seed=0)
    model_probability = made.log_prob(support).exp()
    kl = (probability * (probability.log() - model_probability.log())).sum().item()
    assert kl < 0.02
    assert len(made.history_) == 25 and made.n_iter_ == 25


def test_order_agnostic_fit_records_validation_and_keeps_normalisation():
    support, probability = _chain_distribution()
    generator = torch.Generator().manual_seed(2)
    data = support[torch.multinomial(probability, 1000, True, generator=generator)]
    made = MADE(4, [32], n_masks=4).double()
    made.fit(data[:800], validation_data=data[800:], n_epochs=8, learning_rate=5e-3, seed=0)
    assert all(record["val_log_prob"] is not None for record in made.history_)
    assert made.history_[-1]["val_log_prob"] > made.history_[0]["val_log_prob"]
    assert abs(torch.logsumexp(made.log_prob(support), 0).item()) < 1e-10


def test_contract_suite():
    support, probability = _chain_distribution()
    generator = torch.Generator().manual_seed(3)
    data = support[torch.multinomial(probability, 500, True, generator=generator)].float()
    report = check_density(MADE(4, [16], n_masks=2), data, fit_options={"n_epochs": 3, "seed": 0})
    assert abs(report["log_total_probability"]) < 1e-4


def test_bad_input_is_refused_with_clear_errors():
    made = MADE(4, [8])
    with pytest.raises(NotFittedError):
        made.log_prob(torch.zeros(2, 4))
    made.init_for_evaluation()
    with pytest.raises(DataError, match="x has shape"):
        made.log_prob(torch.zeros(2, 5))
    with pytest.raises(DataError, match="binary"):
        made.log_prob(torch.full((2, 4), 0.5))
    with pytest.raises(DataError, match="binary"):
        made.log_prob(torch.full((2, 4), 2.0))
    with pytest.raises(DataError, match="NaN"):
        made.log_prob(torch.tensor([[0.0, 1.0, float("nan"), 0.0]]))
    with pytest.raises(DataError, match="data"):
        made.fit(torch.ones(3, 3))
    categorical = MADE(3, [8], likelihood="categorical", n_categories=3).init_for_evaluation()
    with pytest.raises(DataError, match="category codes 0..2"):
        categorical.log_prob(torch.tensor([[0, 1, 3]]))
    with pytest.raises(DataError, match="n_categories"):
        MADE(3, [8], likelihood="categorical")
    with pytest.raises(DataError, match="likelihood"):
        MADE(3, [8], likelihood="gaussian")
    with pytest.raises(DataError, match="too many"):
        MADE(40, [8]).enumerate_support()


def test_batch_shape_and_sample_dtypes():
    made = MADE(3, [8], n_masks=2).init_for_evaluation()
    x = torch.zeros(2, 5, 3)
    assert made.log_prob(x).shape == (2, 5)
    assert made.sample(4, seed=0).dtype == made.dtype
    categorical = MADE(3, [8], likelihood="categorical", n_categories=4).init_for_evaluation()
    draws = categorical.sample(50, seed=0)
    assert draws.dtype == torch.long and int(draws.max()) <= 3
    assert as_tensor(draws, "draws").shape == (50, 3)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    made = MADE(5, [16], n_masks=2).double().init_for_evaluation()
    support = made.enumerate_support()
    expected = made.log_prob(support)
    made.to("cuda")
    torch.testing.assert_close(made.log_prob(support).cpu(), expected)
    assert made.sample(3, seed=0).device.type == "cuda"


def test_made_debd_recipe_matches_its_data():
    from probgen.recipes import made_debd
    from probgen.recipes._shared_data import SharedDataMissing

    with pytest.raises(DataError, match="dataset"):
        made_debd.build(dataset="adult")
    try:
        valid = made_debd.data("valid", dataset="dna")
    except SharedDataMissing as error:
        pytest.skip(str(error))
    model = made_debd.build(dataset="dna", hidden_dims=[8]).init_for_evaluation()
    assert valid.shape == (400, 180)
    assert torch.isfinite(model.log_prob(valid)).all()


def test_resume_from_checkpoint_continues_the_mask_cycle(tmp_path):
    support, probability = _chain_distribution()
    generator = torch.Generator().manual_seed(4)
    data = support[torch.multinomial(probability, 300, True, generator=generator)]
    settings = {"batch_size": 50, "learning_rate": 1e-2, "seed": 0}

    def fresh() -> MADE:
        torch.manual_seed(5)
        return MADE(4, [16], n_masks=3).double()

    straight = fresh().fit(data, n_epochs=4, **settings)
    fresh().fit(data, n_epochs=2, checkpoint_dir=tmp_path, **settings)
    resumed = fresh().fit(data, n_epochs=4, checkpoint_dir=tmp_path, resume=True, **settings)
    assert int(resumed.mask_step) == int(straight.mask_step) == 4 * 6
    torch.testing.assert_close(resumed.log_prob(support), straight.log_prob(support))
