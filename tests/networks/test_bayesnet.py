"""BayesianNetwork: brute force on small networks, pgmpy agreement, sampling, learning, errors."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from probgen.core.errors import ConvergenceWarning, DataError, NotFittedError
from probgen.networks.bayesnet import BayesianNetwork, read_bif


def random_network(seed: int = 0) -> BayesianNetwork:
    """A small diamond-plus network with random tables (no zeros)."""
    rng = np.random.default_rng(seed)
    parents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"]}
    cards = {"a": 3, "b": 2, "c": 2, "d": 3, "e": 2}
    tables = {
        v: rng.dirichlet(np.ones(cards[v]), size=tuple(cards[p] for p in given))
        for v, given in parents.items()
    }
    states = {v: [f"{v}{i}" for i in range(c)] for v, c in cards.items()}
    return BayesianNetwork(parents=parents, tables=tables, states=states)


def brute_joint(network: BayesianNetwork) -> torch.Tensor:
    support = network.enumerate_support()
    return network.log_prob(support).exp().reshape(network.cardinalities)


@pytest.fixture(scope="module")
def pgmpy_models():
    pytest.importorskip("pgmpy")
    from pgmpy.utils import get_example_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: get_example_model(name) for name in ("asia", "alarm")}


# ---- brute force ------------------------------------------------------------------------------
def test_joint_is_product_of_tables_and_normalised():
    network = random_network()
    joint = brute_joint(network)
    assert torch.allclose(joint.sum(), torch.tensor(1.0, dtype=torch.float64))
    tables = network.tables
    a, b, c, d, e = 1, 0, 1, 2, 1
    expected = (
        tables["a"][a]
        * tables["b"][a, b]
        * tables["c"][a, c]
        * tables["d"][b, c, d]
        * tables["e"][d, e]
    )
    assert torch.allclose(joint[a, b, c, d, e], expected)


def test_query_marginals_and_missing_log_prob_match_brute_force():
    network = random_network(1)
    joint = brute_joint(network)
    # P(a, d | e = e1)
    conditioned = joint[..., 1]
    expected = conditioned.sum(dim=(1, 2)) / conditioned.sum()
    table = network.query(["a", "d"], {"e": "e1"})
    assert torch.allclose(table.values, expected, atol=1e-12)
    marginals = network.marginals({"e": "e1"})
    assert torch.allclose(marginals["c"], conditioned.sum(dim=(0, 1, 3)) / conditioned.sum())
    # log_prob with a missing value sums it out exactly
    rows = torch.tensor([[1.0, float("nan"), 0.0, 2.0, float("nan")]], dtype=torch.float64)
    assert torch.allclose(network.log_prob(rows).exp(), joint[1, :, 0, 2, :].sum().reshape(1))
    frame = pd.DataFrame({"a": ["a1"], "d": ["d2"]})
    assert torch.allclose(network.log_prob(frame).exp(), joint[1, :, :, 2, :].sum().reshape(1))


def test_batched_evidence_is_one_query_per_row():
    network = random_network(2)
    joint = brute_joint(network)
    evidence = pd.DataFrame({"b": ["b0", None, "b1"], "e": [None, "e0", "e1"]})
    table = network.query("a", evidence)
    marginals = network.marginals(evidence)
    assert table.values.shape == (3, 3)
    expected = [
        joint[:, 0].sum(dim=(1, 2, 3)),
        joint[..., 0].sum(dim=(1, 2, 3)),
        joint[:, 1, :, :, 1].sum(dim=(1, 2)),
    ]
    for row in range(3):
        assert torch.allclose(table.values[row], expected[row] / expected[row].sum())
        assert torch.allclose(marginals["a"][row], expected[row] / expected[row].sum())


def test_map_query_matches_brute_force():
    network = random_network(3)
    joint = brute_joint(network)
    conditioned = joint[:, :, :, :, 0]
    best = torch.unravel_index(conditioned.argmax(), conditioned.shape)
    found = network.map_query(evidence={"e": "e0"})
    assert found == {v: network.states[v][int(i)] for v, i in zip("abcd", best)}
    pair = network.map_query(["a", "d"], {"e": "e0"})
    summed = conditioned.sum(dim=(1, 2))
    a, d = torch.unravel_index(summed.argmax(), summed.shape)
    assert pair == {"a": f"a{int(a)}", "d": f"d{int(d)}"}


# ---- pgmpy agreement --------------------------------------------------------------------------
def test_classic_asia_marginals_agree_with_pgmpy(pgmpy_models):
    from pgmpy.inference import VariableElimination

    asia = BayesianNetwork.from_example("asia")
    engine = VariableElimination(pgmpy_models["asia"])
    for evidence in (None, {"asia": "yes", "xray": "yes"}, {"smoke": "no", "dysp": "yes"}):
        ours = asia.marginals(evidence)
        for variable in asia.variables:
            if evidence and variable in evidence:
                continue
            theirs = engine.query([variable], evidence=evidence, show_progress=False)
            order = [theirs.state_names[variable].index(s) for s in asia.states[variable]]
            assert np.allclose(ours[variable].numpy(), theirs.values[order], atol=1e-6)
    # the textbook figures: P(lung=yes) = 0.055, P(either=yes) = 0.064828
    marginals = asia.marginals()
    assert float(marginals["lung"][0]) == pytest.approx(0.055, abs=1e-12)
    assert float(marginals["either"][0]) == pytest.approx(0.064828, abs=1e-12)


def test_alarm_batched_queries_agree_with_pgmpy(pgmpy_models):
    from pgmpy.inference import VariableElimination

    alarm = BayesianNetwork.from_example("alarm")
    engine = VariableElimination(pgmpy_models["alarm"])
    rng = np.random.default_rng(0)
    rows, targets = [], []
    while len(rows) < 12:
        chosen = rng.choice(alarm.variables, 4, replace=False)
        evidence = {v: alarm.states[v][rng.integers(len(alarm.states[v]))] for v in chosen[1:]}
        if np.isfinite(float(alarm.log_prob(pd.DataFrame([evidence]))[0])):
            rows.append(evidence)
            targets.append(chosen[0])
    frame = pd.DataFrame(rows, columns=alarm.variables)
    marginals = alarm.marginals(frame)
    for row, (target, evidence) in enumerate(zip(targets, rows)):
        theirs = engine.query([target], evidence=evidence, show_progress=False)
        order = [theirs.state_names[target].index(s) for s in alarm.states[target]]
        assert np.allclose(marginals[target][row].numpy(), theirs.values[order], atol=1e-6)
        single = alarm.query(target, evidence).values.numpy()
        assert np.allclose(single, theirs.values[order], atol=1e-6)


def test_pgmpy_round_trip(pgmpy_models):
    asia = BayesianNetwork.from_pgmpy(pgmpy_models["asia"])
    assert asia.graph.number_of_edges() == 8
    back = BayesianNetwork.from_pgmpy(asia.to_pgmpy())
    support = asia.enumerate_support()
    assert torch.allclose(asia.log_prob(support), back.log_prob(support))
    assert torch.allclose(
        asia.log_prob(support), BayesianNetwork.from_example("asia").log_prob(support)
    )


def test_bif_round_trip_with_our_reader_and_pgmpy(tmp_path):
    from pgmpy.readwrite import BIFReader

    network = random_network(4)
    path = tmp_path / "net.bif"
    network.write_bif(path)
    again = read_bif(path)
    support = network.enumerate_support()
    assert torch.allclose(network.log_prob(support), again.log_prob(support))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = BayesianNetwork.from_pgmpy(BIFReader(str(path)).get_model())
    reordered = support[:, [theirs.variables.index(v) for v in network.variables]]
    inverse = torch.empty_like(reordered)
    inverse[:, [theirs.variables.index(v) for v in network.variables]] = support
    assert torch.allclose(network.log_prob(support), theirs.log_prob(inverse))
    network.write_bif(tmp_path / "net.bif.gz")
    assert read_bif(tmp_path / "net.bif.gz").edges == network.edges


# ---- sampling ---------------------------------------------------------------------------------
def test_forward_sampling_frequencies_match_exact_joint():
    network = random_network(5)
    joint = brute_joint(network).reshape(-1)
    samples = network.sample(40000, seed=0)
    assert samples.shape == (40000, 5) and samples.dtype == torch.long
    assert torch.equal(samples, network.sample(40000, seed=0))
    index = torch.zeros(40000, dtype=torch.long)
    for column, card in enumerate(network.cardinalities):
        index = index * card + samples[:, column]
    counts = torch.bincount(index, minlength=joint.numel()).double()
    _, p_value = stats.chisquare(counts.numpy(), (joint * 40000).numpy())
    assert p_value > 1e-4


def test_likelihood_weighting_and_gibbs_match_exact_posterior():
    network = random_network(6)
    evidence = {"e": "e1", "b": "b0"}
    exact = network.marginals(evidence)
    samples, log_weights = network.sample(20000, evidence=evidence, seed=1)
    assert (samples[:, 4] == 1).all() and (samples[:, 1] == 0).all()
    weights = torch.softmax(log_weights, 0)
    weighted = torch.zeros(3, dtype=torch.float64).index_add_(0, samples[:, 0], weights)
    assert torch.allclose(weighted, exact["a"], atol=0.02)
    approx, info = network.approximate_marginals(evidence, method="gibbs", n_samples=20000, seed=2)
    assert info["converged"] and info["r_hat"] < 1.05
    for variable in network.variables:
        assert torch.allclose(approx[variable], exact[variable], atol=0.03)
    approx, info = network.approximate_marginals(evidence, method="likelihood_weighting", seed=3)
    assert info["effective_sample_size"] > 100
    assert torch.allclose(approx["d"], exact["d"], atol=0.03)


def test_loopy_bp_reports_convergence_and_is_close():
    network = random_network(7)
    approx, info = network.approximate_marginals({"e": "e0"}, method="loopy_bp")
    exact = network.marginals({"e": "e0"})
    assert info["converged"] and info["n_iter"] >= 2
    for variable in network.variables:
        assert torch.allclose(approx[variable], exact[variable], atol=0.05)


def test_gibbs_interface_shapes_and_clamping():
    network = random_network(8)
    generator = torch.Generator().manual_seed(0)
    state = network.initial_state(16, generator=generator, evidence={"d": "d1"})
    assert state.shape == (16, 5) and (state[:, 3] == 1).all()
    new = network.gibbs_step(state, generator=generator, evidence={"d": "d1"})
    assert new.shape == (16, 5) and (new[:, 3] == 1).all()


# ---- learning ---------------------------------------------------------------------------------
def test_mle_recovers_generating_tables_on_a_large_sample():
    truth = random_network(9)
    data = truth.sample(100_000, seed=0, as_frame=True)
    fitted = BayesianNetwork(edges=truth.edges, states=truth.states).fit(data)
    for variable in truth.variables:
        assert torch.allclose(fitted.table(variable), truth.table(variable), atol=0.03)


def test_bdeu_pseudo_counts_formula():
    network = BayesianNetwork(
        edges=[("x", "y")],
        states={"x": ["0", "1"], "y": ["0", "1", "2"]},
        method="bayes",
        prior="bdeu",
        equivalent_sample_size=6.0,
    )
    data = pd.DataFrame({"x": ["0", "0", "1"], "y": ["2", "1", "2"]})
    network.fit(data)
    # alpha per cell = 6 / (2 * 3) = 1: P(y | x=0) = (counts + 1) / (2 + 3)
    assert torch.allclose(network.table("y")[0], torch.tensor([1, 2, 2], dtype=torch.float64) / 5)
    # root x: alpha per cell = 6 / 2 = 3: P(x) = (counts + 3) / (3 + 6)
    assert torch.allclose(network.table("x"), torch.tensor([5 / 9, 4 / 9], dtype=torch.float64))


def test_em_with_missing_values_recovers_tables():
    truth = random_network(10)
    data = truth.sample(20000, seed=1, as_frame=True)
    rng = np.random.default_rng(0)
    mask = rng.random(data.shape) < 0.2
    data = data.mask(mask)
    fitted = BayesianNetwork(edges=truth.edges, states=truth.states, tol=1e-7).fit(data)
    assert fitted.n_iter_ > 1
    history = [record["log_likelihood"] for record in fitted.history_]
    assert [record["iteration"] for record in fitted.history_] == list(range(1, len(history) + 1))
    assert all(b >= a - 1e-6 for a, b in zip(history, history[1:]))
    for variable in truth.variables:
        assert torch.allclose(fitted.table(variable), truth.table(variable), atol=0.05)


def test_em_with_a_latent_variable_increases_likelihood():
    truth = BayesianNetwork(
        edges=[("h", "x1"), ("h", "x2"), ("h", "x3")],
        tables={
            "h": [0.3, 0.7],
            "x1": [[0.9, 0.1], [0.2, 0.8]],
            "x2": [[0.8, 0.2], [0.1, 0.9]],
            "x3": [[0.85, 0.15], [0.3, 0.7]],
        },
    )
    data = truth.sample(5000, seed=0, as_frame=True).drop(columns="h")
    model = BayesianNetwork(
        edges=truth.edges,
        states={v: ["0", "1"] for v in ["x1", "x2", "x3"]},
        latent={"h": 2},
        seed=0,
        max_iter=200,
    )
    model.fit(data)
    history = [record["log_likelihood"] for record in model.history_]
    assert all(b >= a - 1e-6 for a, b in zip(history, history[1:]))
    observed_truth = float(truth.log_prob(data).sum())
    assert history[-1] >= observed_truth - 5.0


def test_complete_data_fit_records_one_history_entry():
    truth = random_network(12)
    data = truth.sample(200, seed=0, as_frame=True)
    fitted = BayesianNetwork(edges=truth.edges, states=truth.states).fit(data)
    loglik = float(fitted.log_prob(data).sum())
    assert fitted.history_ == [{"iteration": 1, "log_likelihood": pytest.approx(loglik)}]
    assert fitted.n_iter_ == 1 and fitted.converged_


def test_constructor_settings_are_used():
    truth = random_network(13)
    data = truth.sample(300, seed=0, as_frame=True)
    states = truth.states
    mle = BayesianNetwork(edges=truth.edges, states=states).fit(data)
    bayes = BayesianNetwork(edges=truth.edges, states=states, method="bayes").fit(data)
    assert any(not torch.equal(mle.table(v), bayes.table(v)) for v in truth.variables)
    missing = data.mask(np.random.default_rng(0).random(data.shape) < 0.3)
    with pytest.warns(ConvergenceWarning):
        once = BayesianNetwork(edges=truth.edges, states=states, max_iter=1).fit(missing)
    assert once.n_iter_ == 1 and len(once.history_) == 1 and not once.converged_
    config = bayes.get_config()
    assert config["method"] == "bayes" and config["max_iter"] == 100
    assert BayesianNetwork.from_config(config).method == "bayes"


def test_fit_settings_are_deprecated_but_still_apply():
    truth = random_network(13)
    data = truth.sample(300, seed=0, as_frame=True)
    expected = BayesianNetwork(edges=truth.edges, states=truth.states, method="bayes").fit(data)
    network = BayesianNetwork(edges=truth.edges, states=truth.states)
    with pytest.warns(DeprecationWarning, match=r"BayesianNetwork\(method=\.\.\.\)"):
        network.fit(data, method="bayes")
    for variable in truth.variables:
        assert torch.equal(network.table(variable), expected.table(variable))
    missing = data.mask(np.random.default_rng(0).random(data.shape) < 0.3)
    network = BayesianNetwork(edges=truth.edges, states=truth.states)
    with pytest.warns(DeprecationWarning, match="max_iter"), pytest.warns(ConvergenceWarning):
        network.fit(missing, max_iter=1)
    assert network.n_iter_ == 1
    assert network.max_iter == 100  # the constructor's setting is kept


# ---- contract pieces and errors ---------------------------------------------------------------
def test_save_load_round_trip(assert_save_load_round_trip):
    network = random_network(11)
    assert_save_load_round_trip(network, network.enumerate_support(), n_samples=50, seed=3)


def test_enumerate_support_refuses_large_networks():
    with pytest.raises(DataError, match="max_size"):
        BayesianNetwork.from_example("alarm").enumerate_support()


def test_unfitted_network_raises():
    network = BayesianNetwork(edges=[("x", "y")])
    with pytest.raises(NotFittedError):
        network.sample(3)


def test_cycle_is_rejected_naming_the_cycle():
    with pytest.raises(DataError, match="cycle.*a -> b -> c -> a|cycle"):
        BayesianNetwork(edges=[("a", "b"), ("b", "c"), ("c", "a")])


@pytest.mark.parametrize(
    "tables, message",
    [
        ({"x": [0.5, 0.6], "y": [[0.5, 0.5], [0.5, 0.5]]}, "tables\\['x'\\] does not sum to one"),
        ({"x": [0.5, 0.5], "y": [0.5, 0.5]}, "tables\\['y'\\] has shape"),
        ({"x": [0.5, 0.5], "y": [[0.5, 0.5], [1.5, -0.5]]}, "tables\\['y'\\] has negative"),
    ],
)
def test_bad_tables_name_the_variable(tables, message):
    with pytest.raises(DataError, match=message):
        BayesianNetwork(
            edges=[("x", "y")], tables=tables, states={"x": ["0", "1"], "y": ["0", "1"]}
        )


def test_bad_evidence_names_the_variable():
    network = random_network(12)
    with pytest.raises(DataError, match="unknown variable 'zz'"):
        network.query("a", {"zz": "1"})
    with pytest.raises(DataError, match="variable 'b' has no state 'nope'"):
        network.query("a", {"b": "nope"})
    with pytest.raises(DataError, match="unknown variable 'qq'"):
        network.query("qq")


def test_zero_probability_evidence_is_a_clear_error():
    network = BayesianNetwork(
        edges=[("x", "y")],
        tables={"x": [1.0, 0.0], "y": [[1.0, 0.0], [0.5, 0.5]]},
        states={"x": ["off", "on"], "y": ["off", "on"]},
    )
    for call in (
        lambda: network.query("x", {"y": "on"}),
        lambda: network.marginals({"y": "on"}),
        lambda: network.sample(5, evidence={"y": "on"}),
        lambda: network.map_query(evidence={"y": "on"}),
    ):
        with pytest.raises(DataError, match="probability zero.*'y': 'on'"):
            call()


def test_unseen_states_in_data_name_the_column():
    network = random_network(13)
    data = pd.DataFrame({"a": ["a0", "a9"], "b": ["b0", "b1"]})
    with pytest.raises(DataError, match="column 'a' has state 'a9'"):
        network.fit(data)
    with pytest.raises(DataError, match="not a network variable"):
        network.log_prob(pd.DataFrame({"zz": [1]}))
    with pytest.raises(DataError, match="variable 'c'"):
        network.log_prob(torch.tensor([[0, 0, 5, 0, 0]]))


def test_brute_force_support_is_every_assignment():
    network = random_network(14)
    support = network.enumerate_support()
    assert support.shape[0] == np.prod(network.cardinalities)
    assert len({tuple(row) for row in support.tolist()}) == support.shape[0]
    assert set(itertools.product(range(3), range(2))) == {
        tuple(row) for row in support[:, :2].tolist()
    }


def test_forward_sampling_is_the_inverse_cdf_of_the_seeded_uniforms():
    # Oracle: the same uniforms (one row per variable, in order) pushed through each table's
    # cumulative row with searchsorted; states of probability zero (first, middle, last) are
    # never drawn.
    parents = {"a": [], "b": ["a"], "c": ["a", "b"]}
    tables = {
        "a": [0.0, 0.5, 0.0, 0.5],
        "b": [[0.2, 0.0, 0.8], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.3, 0.4]],
        "c": np.random.default_rng(3).dirichlet(np.ones(2), size=(4, 3)),
    }
    network = BayesianNetwork(parents=parents, tables=tables)
    samples = network.sample(5000, seed=11)
    generator = torch.Generator().manual_seed(11)
    uniforms = torch.rand(3, 5000, generator=generator, dtype=torch.float64)
    expected = torch.empty(5000, 3, dtype=torch.long)
    for column, variable in enumerate(network.variables):
        table = network.table(variable)
        rows = table.reshape(-1, table.shape[-1])
        config = torch.zeros(5000, dtype=torch.long)
        for parent in network.parents[variable]:
            config = (
                config * len(network.states[parent]) + expected[:, network.variables.index(parent)]
            )
        cumulative = rows.cumsum(dim=1)[config]
        drawn = torch.searchsorted(cumulative, uniforms[column][:, None], right=True)
        expected[:, column] = drawn[:, 0].clamp_max(rows.shape[1] - 1)
    assert torch.equal(samples, expected)
    probabilities = network.log_prob(samples).exp()
    assert bool((probabilities > 0).all())
    assert set(samples[:, 0].tolist()) == {1, 3}


# ---- evidence encoding ---------------------------------------------------------------------------
def test_string_frames_encode_like_the_column_by_column_path():
    # Wide frames of state names take a one-pass encoder; it must give the same codes as
    # encoding column by column (the path every other kind of frame takes), keep the columns
    # it is given in any order, and leave errors to that path (same messages).
    network = random_network(3)
    rng = np.random.default_rng(0)
    frame = network.sample(40, seed=1, as_frame=True)[["e", "a", "c", "b", "d"]]
    frame = frame.mask(rng.random(frame.shape) < 0.6)  # NaN where unobserved
    frame.loc[3, "b"] = None
    fast = network.encode(frame)
    per_column = network.encode(frame.astype({"a": "category"}))  # not all strings: slow path
    assert torch.equal(fast, per_column)
    expected = torch.full((40, 5), -1, dtype=torch.long)
    for column in frame.columns:
        position = network.variables.index(column)
        for row, value in enumerate(frame[column]):
            if isinstance(value, str):
                expected[row, position] = int(value[1:])
    assert torch.equal(fast, expected)
    assert torch.equal(network.encode(frame.iloc[:0].reindex(range(2))), torch.full((2, 5), -1))
    numbers = pd.DataFrame({"a": [2, None], "b": ["b1", None]})  # not a state name of 'a'
    with pytest.raises(DataError, match="column 'a' has state 2"):
        network.encode(numbers)
    with pytest.raises(DataError, match="column 'c' has state 'c7'"):
        network.encode(pd.DataFrame({"b": ["b0", None], "c": [None, "c7"]}))
    complete = network.sample(3, seed=2, as_frame=True)
    assert torch.equal(network.encode(complete, allow_missing=False), network.sample(3, seed=2))
    complete.loc[1, "b"] = None
    with pytest.raises(DataError, match="missing values for variable 'b'"):
        network.encode(complete, allow_missing=False)


def test_arrow_string_frames_take_the_dictionary_path_and_agree_with_object_frames():
    # pandas >= 3 stores strings in pyarrow: those frames are encoded by one dictionary
    # encoding of all columns joined. A column offset, a wrong row order or a null read as a
    # state would give other codes than the object-array path on the same cells.
    pytest.importorskip("pyarrow")  # optional: without it pandas keeps strings in Python
    from probgen.networks.codec import _factorize_arrow_strings

    network = random_network(4)
    rng = np.random.default_rng(3)
    frame = network.sample(30, seed=5, as_frame=True)[["d", "b", "e", "a", "c"]]
    frame = frame.mask(rng.random(frame.shape) < 0.5)
    frame["e"] = np.nan  # no evidence at all on a column: float NaN, not strings
    # two chunks per column, as after a concat
    frame = pd.concat([frame.iloc[:13], frame.iloc[13:]], ignore_index=True)
    as_strings = frame.astype({c: "string[pyarrow]" for c in "dbac"})
    assert _factorize_arrow_strings(as_strings) is not None
    as_objects = frame.astype(object)
    assert _factorize_arrow_strings(as_objects) is None
    fast = network.encode(as_strings)
    assert torch.equal(fast, network.encode(as_objects))
    # the one-pass encoder answers itself (a None would hide its bugs behind the slow path)
    one_pass = network._codec._encode_string_frame(as_strings)
    assert one_pass is not None and torch.equal(torch.from_numpy(one_pass), fast)
    assert bool((fast[:, network.variables.index("e")] == -1).all())
    assert int((fast >= 0).sum()) == int(frame.notna().to_numpy().sum())
    bad = as_strings.copy()
    bad.loc[4, "a"] = "a9"
    with pytest.raises(DataError, match="column 'a' has state 'a9'"):
        network.encode(bad)
