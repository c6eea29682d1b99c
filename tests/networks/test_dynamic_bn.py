"""DynamicBayesianNetwork: oracles are brute-force enumeration, probgen.HMM, the unrolled
BayesianNetwork, counting, and pgmpy's DBNInference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

import probgen
from probgen.core.errors import ConvergenceWarning, DataError, NotFittedError
from probgen.core.testing import check_density
from probgen.networks.dynamic import DynamicBayesianNetwork
from probgen.networks.dynamic_structure import learn_dbn_structure


def random_table(shape, generator):
    values = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.05
    return values / values.sum(-1, keepdim=True)


def random_dbn(states, intra, inter, prior=None, seed=0, **options):
    """A DBN with random tables (every entry positive)."""
    shell = DynamicBayesianNetwork(states, intra, inter, prior_edges=prior)
    generator = torch.Generator().manual_seed(seed)
    return DynamicBayesianNetwork(
        states, intra, inter, prior_edges=prior,
        prior_tables={v: random_table(shell.table_shape(v, "prior"), generator)
                      for v in shell.variables},
        transition_tables={v: random_table(shell.table_shape(v), generator)
                           for v in shell.variables},
        **options,
    )


def tiny_dbn():
    # two nodes of 2 and 3 states, an intra edge a -> b, inter edges a -> a, b -> a, b -> b
    return random_dbn({"a": 2, "b": 3}, [("a", "b")], [("a", "a"), ("b", "a"), ("b", "b")])


def brute_force(dbn, sequence):
    """log P(observed) and the smoothed/filtered marginals by enumerating every completion."""
    steps = len(sequence)
    cards = dbn.cardinalities
    joint = {}
    for flat in itertools.product(*[range(c) for c in cards * steps]):
        path = np.array(flat).reshape(steps, len(cards))
        probability = 1.0
        for t in range(steps):
            kind = "prior" if t == 0 else "transition"
            for i, v in enumerate(dbn.variables):
                index = [path[t + o, dbn.variables.index(p)] for p, o in dbn.parents(v, kind)]
                probability *= float(dbn.table(v, kind)[tuple(index) + (path[t, i],)])
        joint[flat] = (path, probability)

    def agrees(path, upto):
        return all(sequence[t][i] < 0 or path[t, i] == sequence[t][i]
                   for t in range(upto) for i in range(len(cards)))

    total = sum(p for path, p in joint.values() if agrees(path, steps))
    smoothed = {v: np.zeros((steps, c)) for v, c in zip(dbn.variables, cards)}
    filtered = {v: np.zeros((steps, c)) for v, c in zip(dbn.variables, cards)}
    for path, p in joint.values():
        for t in range(steps):
            for i, v in enumerate(dbn.variables):
                if agrees(path, steps):
                    smoothed[v][t, path[t, i]] += p / total
                if agrees(path, t + 1):
                    filtered[v][t, path[t, i]] += p
    for v in filtered:
        filtered[v] /= filtered[v].sum(-1, keepdims=True)
    return math.log(total), smoothed, filtered


@pytest.mark.parametrize(
    "inter",
    [[("a", "a"), ("b", "a"), ("b", "b")], [("b", "b")], []],
    ids=["full-interface", "interface-b", "no-interface"],
)
def test_tiny_dbn_matches_brute_force_with_missing_values(inter):
    dbn = random_dbn({"a": 2, "b": 3}, [("a", "b")], inter)
    assert dbn.interface == sorted({p for p, _ in inter})
    sequences = [[[1, -1], [-1, 2], [0, -1]], [[-1, -1], [-1, 0], [1, 1]], [[0, 2], [1, 0],
                                                                             [1, 1]]]
    log_probs = dbn.log_prob(torch.tensor(sequences))
    smoothed, filtered = dbn.smooth(sequences), dbn.filter(sequences)
    for row, sequence in enumerate(sequences):
        log_total, exact_smoothed, exact_filtered = brute_force(dbn, sequence)
        assert float(log_probs[row]) == pytest.approx(log_total, abs=1e-10)
        for v in dbn.variables:
            assert np.allclose(smoothed[v][row].numpy(), exact_smoothed[v], atol=1e-10)
            assert np.allclose(filtered[v][row].numpy(), exact_filtered[v], atol=1e-10)


def test_enumerated_support_sums_to_one_and_matches_samples():
    report = check_density(tiny_dbn(), torch.zeros(4, 3, 2, dtype=torch.long),
                           fit=False, sample_options={"length": 3}, n_samples=4000)
    assert abs(report["log_total_probability"]) < 1e-9
    assert report["sample_total_variation"] < 0.1


def test_prior_edges_differ_from_intra_edges():
    # the prior slice has b -> a while later slices have a -> b: log_prob must use each
    dbn = random_dbn({"a": 2, "b": 2}, [("a", "b")], [("b", "b")], prior=[("b", "a")], seed=3)
    sequence = [[1, 0], [-1, 1]]
    assert float(dbn.log_prob([sequence])[0]) == pytest.approx(brute_force(dbn, sequence)[0])
    complete = [[1, 0], [0, 1]]
    assert float(dbn.log_prob([complete])[0]) == pytest.approx(brute_force(dbn, complete)[0])


def hmm_pair(seed=0):
    generator = torch.Generator().manual_seed(seed)
    start, transition = random_table((3,), generator), random_table((3, 3), generator)
    emission = random_table((3, 4), generator)
    dbn = DynamicBayesianNetwork(
        {"z": 3, "x": 4}, intra_edges=[("z", "x")], inter_edges=[("z", "z")],
        prior_tables={"z": start, "x": emission},
        transition_tables={"z": transition, "x": emission},
    )
    hmm = probgen.HMM(3, "categorical", n_symbols=4).double().set_parameters(
        start_probs=start, transition_probs=transition, emission_probs=emission
    )
    return dbn, hmm


def test_dbn_encoding_an_hmm_equals_probgen_hmm():
    dbn, hmm = hmm_pair()
    observations = [torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(n))
                    for n in (7, 4, 1)]
    sequences = [torch.stack([torch.full_like(x, -1), x], dim=1) for x in observations]
    expected = hmm.log_prob(observations)
    assert torch.allclose(dbn.log_prob(sequences), expected.double(), atol=1e-9)
    posterior = hmm.posterior(observations)
    smoothed = dbn.smooth(sequences)["z"]
    for i, x in enumerate(observations):
        assert torch.allclose(smoothed[i, : len(x)], posterior[i, : len(x)].double(), atol=1e-9)


def test_ragged_batch_equals_one_sequence_at_a_time():
    dbn = tiny_dbn()
    sequences = [torch.tensor([[1, -1], [0, 2], [-1, 1], [1, 1]]), torch.tensor([[0, -1]]),
                 torch.tensor([[0, 1], [1, 2]])]
    batched = dbn.log_prob(sequences)
    single = torch.cat([dbn.log_prob([s]) for s in sequences])
    assert torch.allclose(batched, single, atol=1e-12)


def test_unrolled_network_gives_the_same_log_prob():
    dbn = tiny_dbn()
    sequences = dbn.sample(6, length=4, seed=1).double()
    sequences[::2, 1, 0] = float("nan")
    sequences[1, 3, 1] = float("nan")
    unrolled = dbn.unroll(4)
    rows = sequences.reshape(6, -1)
    assert torch.allclose(dbn.log_prob(sequences), unrolled.log_prob(rows), atol=1e-10)


def test_complete_data_fit_counts_families():
    truth = tiny_dbn()
    data = truth.sample(50, length=5, seed=2)
    for pseudocount in (0.0, 2.0):
        model = DynamicBayesianNetwork({"a": 2, "b": 3}, [("a", "b")],
                                       [("a", "a"), ("b", "a"), ("b", "b")],
                                       pseudocount=pseudocount).fit(data)
        codes = data.numpy()
        counts = np.full((2, 3, 2), pseudocount)  # transition of a: (a[t-1], b[t-1], a[t])
        for seq in codes:
            for t in range(1, 5):
                counts[seq[t - 1, 0], seq[t - 1, 1], seq[t, 0]] += 1
        expected = counts / counts.sum(-1, keepdims=True)
        assert np.allclose(model.table("a").numpy(), expected)
        prior_b = np.full((2, 3), pseudocount)
        for seq in codes:
            prior_b[seq[0, 0], seq[0, 1]] += 1
        assert np.allclose(model.table("b", "prior").numpy(),
                           prior_b / prior_b.sum(-1, keepdims=True))
        assert len(model.history_) == 1


def test_em_with_missing_values_recovers_the_generating_tables():
    truth = random_dbn({"a": 2, "b": 2}, [("a", "b")], [("a", "a"), ("b", "b")], seed=5)
    data = truth.sample(400, length=12, seed=0).double()
    hide = torch.rand(data.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    data[hide] = float("nan")
    model = DynamicBayesianNetwork({"a": 2, "b": 2}, [("a", "b")], [("a", "a"), ("b", "b")],
                                   max_iter=200, tol=1e-8, seed=0).fit(data)
    for v in ("a", "b"):
        assert torch.allclose(model.table(v), truth.table(v), atol=0.05)
    history = [record["log_likelihood"] for record in model.history_]
    assert all(later >= earlier - 1e-8 for earlier, later in zip(history, history[1:]))
    assert model.converged_


def test_em_fits_a_hidden_chain_better_than_its_start():
    # an HMM-shaped DBN fitted to observations only: EM must raise the likelihood
    dbn, _ = hmm_pair(seed=4)
    data = dbn.sample(60, length=15, seed=0)
    data[..., 0] = -1
    model = DynamicBayesianNetwork({"z": 3, "x": 4}, [("z", "x")], [("z", "z")], max_iter=30,
                                   tol=0.0, seed=1)
    with pytest.warns(ConvergenceWarning):
        model.fit(data)
    history = [record["log_likelihood"] for record in model.history_]
    assert history[-1] > history[0] + 1.0
    assert float(model.log_prob(data).sum()) > history[0]


def test_filtering_matches_pgmpy_dbn_inference():
    from pgmpy.inference import DBNInference

    dbn = random_dbn({"a": 2, "b": 3}, [("a", "b")], [("a", "a"), ("b", "b"), ("b", "a")],
                     seed=7)
    inference = DBNInference(dbn.to_pgmpy())
    observed_b = [2, 0, 1]
    sequence = [[-1, b] for b in observed_b]
    filtered = dbn.filter([sequence])["a"][0]
    for t in range(len(observed_b)):
        evidence = {("b", s): observed_b[s] for s in range(t + 1)}
        answer = inference.forward_inference([("a", t)], evidence)[("a", t)].values
        assert np.allclose(filtered[t].numpy(), answer, atol=1e-8)


def test_save_load_and_contract_on_fitted_model(tmp_path):
    truth = tiny_dbn()
    data = truth.sample(30, length=4, seed=0)
    model = DynamicBayesianNetwork({"a": 2, "b": 3}, [("a", "b")], [("a", "a"), ("b", "a"),
                                                                     ("b", "b")])
    check_density(model, data, sample_options={"length": 3})
    model.save(tmp_path / "dbn.probgen")
    restored = probgen.load(tmp_path / "dbn.probgen")
    assert torch.equal(restored.log_prob(data), model.log_prob(data))
    assert restored.inter_edges == model.inter_edges


def test_data_frames_of_state_names_are_accepted():
    dbn = random_dbn({"rain": ["no", "yes"], "wet": ["dry", "wet"]}, [("rain", "wet")],
                     [("rain", "rain")], seed=2)
    frames = [pd.DataFrame({"wet": ["wet", "dry", "wet"]})]
    codes = torch.tensor([[[-1, 1], [-1, 0], [-1, 1]]])
    assert torch.allclose(dbn.log_prob(frames), dbn.log_prob(codes))


def test_structure_learning_recovers_the_transition_slice():
    truth = DynamicBayesianNetwork(
        {"a": 2, "b": 2, "c": 2}, intra_edges=[("a", "b")],
        inter_edges=[("a", "a"), ("b", "c"), ("c", "c")],
        prior_tables={"a": [0.5, 0.5], "b": [[0.9, 0.1], [0.1, 0.9]], "c": [0.5, 0.5]},
        transition_tables={
            "a": [[0.9, 0.1], [0.1, 0.9]],
            "b": [[0.85, 0.15], [0.15, 0.85]],
            "c": [[[0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.1, 0.9]]],
        },
    )
    data = truth.sample(100, length=30, seed=0)
    learned = learn_dbn_structure(data, states=truth.states)
    assert set(learned.inter_edges) == set(truth.inter_edges)
    assert {frozenset(e) for e in learned.intra_edges} == {frozenset(("a", "b"))}
    no_intra = learn_dbn_structure(data, states=truth.states, intra=False)
    assert no_intra.intra_edges == []
    assert learned.fitted_ and learned.structure_score_ > no_intra.structure_score_


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DynamicBayesianNetwork({"a": 2, "b": 2}, [("a", "b"), ("b", "a")]), "cycle"),
        (lambda: DynamicBayesianNetwork({"a": 2}, [], [("a", "z")]), "unknown variable 'z'"),
        (lambda: DynamicBayesianNetwork({"a": 2}, [], [("a", "a")],
                                        transition_tables={"a": [0.5, 0.5]}), "shape"),
        (lambda: DynamicBayesianNetwork({"a": 2}, prior_tables={"a": [0.5, 0.6]}),
         "sum to one"),
    ],
)
def test_bad_structures_and_tables_raise(build, message):
    with pytest.raises(DataError, match=message):
        build()


def test_bad_sequences_raise_naming_the_problem():
    dbn = tiny_dbn()
    with pytest.raises(DataError, match="'b'"):
        dbn.log_prob(torch.tensor([[[0, 3]]]))
    with pytest.raises(DataError, match="features|shape"):
        dbn.log_prob(torch.zeros(2, 3, 5, dtype=torch.long))
    small = random_dbn({"a": 2, "b": 3}, [], [("a", "a")], max_joint_states=4)
    with pytest.raises(DataError, match="max_joint_states"):
        small.log_prob(torch.tensor([[[0, -1]]]))
    assert torch.isfinite(small.log_prob(torch.tensor([[[0, 1]]]))).all()  # complete: no limit
    with pytest.raises(NotFittedError):
        DynamicBayesianNetwork({"a": 2}).sample(2)


def test_em_seed_and_max_iter_are_honoured():
    dbn, _ = hmm_pair(seed=4)
    data = dbn.sample(20, length=10, seed=0)
    data[..., 0] = -1

    def fitted(seed):
        model = DynamicBayesianNetwork({"z": 3, "x": 4}, [("z", "x")], [("z", "z")],
                                       max_iter=7, tol=0.0, seed=seed)
        with pytest.warns(ConvergenceWarning):
            return model.fit(data)

    first, again, other = fitted(1), fitted(1), fitted(2)
    assert first.n_iter_ == 7
    loose = DynamicBayesianNetwork({"z": 3, "x": 4}, [("z", "x")], [("z", "z")],
                                   max_iter=7, tol=1e6, seed=1).fit(data)
    assert loose.converged_ and loose.n_iter_ == 2  # the first change is below tol
    assert torch.equal(first.table("z"), again.table("z"))
    assert not torch.allclose(first.table("z"), other.table("z"))


def test_structure_options_prior_and_max_indegree():
    truth = DynamicBayesianNetwork(
        {"a": 2, "b": 2, "c": 2}, intra_edges=[], inter_edges=[("a", "c"), ("b", "c")],
        prior_edges=[("a", "b")],
        prior_tables={"a": [0.5, 0.5], "b": [[0.95, 0.05], [0.05, 0.95]], "c": [0.5, 0.5]},
        transition_tables={
            "a": [0.5, 0.5], "b": [0.5, 0.5],
            "c": [[[0.95, 0.05], [0.5, 0.5]], [[0.5, 0.5], [0.05, 0.95]]],
        },
    )
    data = truth.sample(300, length=6, seed=0)
    learned = learn_dbn_structure(data, states=truth.states, prior="learn")
    assert {frozenset(e) for e in learned.prior_edges} == {frozenset(("a", "b"))}
    assert sorted(learned.inter_edges) == [("a", "c"), ("b", "c")]
    assert learn_dbn_structure(data, states=truth.states).prior_edges == []
    limited = learn_dbn_structure(data, states=truth.states, max_indegree=1)
    assert all(len(limited.parents(v)) <= 1 for v in limited.variables)
    with pytest.raises(DataError, match="missing value"):
        gappy = data.double()
        gappy[0, 1, 0] = float("nan")
        learn_dbn_structure(gappy, states=truth.states)


def test_umbrella_recipe_reproduces_the_textbook_filtering():
    from probgen.recipes import dbn_umbrella

    model = dbn_umbrella.true_model()
    rain = model.filter(torch.tensor([[[-1, 1, -1], [-1, 1, -1]]]))["rain"][0, 1, 1]
    assert round(float(rain), 3) == dbn_umbrella.REFERENCE["filtered_rain_day2_umbrella_twice"]
