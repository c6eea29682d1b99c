"""SequenceModel: normalisation, prefix consistency, variable lengths, sampling, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from probgen.core.data import Sequences
from probgen.core.errors import DataError, NotFittedError
from probgen.core.testing import check_density
from probgen.deep.autoregressive import SequenceModel
from probgen.deep.tokenizer import CharTokenizer

ARCHITECTURES = ["lstm", "gru", "transformer"]


pytestmark = pytest.mark.usefixtures("seeded_global_torch")


def _tiny(arch: str, vocab="abc", **options) -> SequenceModel:
    settings = {"hidden_dim": 16, "embedding_dim": 8, "n_layers": 2, "n_heads": 2}
    settings.update(options)
    return SequenceModel(vocab, arch=arch, **settings).double().init_for_evaluation()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exp_log_prob_sums_to_one_for_each_length(arch):
    model = _tiny(arch)
    for length in (1, 2, 4):
        support = model.enumerate_support(length)
        assert support.shape == (3**length, length)
        assert abs(torch.logsumexp(model.log_prob(support), 0).item()) < 1e-10


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_log_prob_of_a_prefix_is_its_marginal(arch):
    # No end token: p(prefix) = sum over continuations of p(prefix + continuation).
    model = _tiny(arch)
    prefix = torch.tensor([[2, 0]])
    continuations = model.enumerate_support(2)
    full = torch.cat([prefix.expand(len(continuations), -1), continuations], 1)
    marginal = torch.logsumexp(model.log_prob(full), 0)
    torch.testing.assert_close(marginal, model.log_prob(prefix)[0])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_variable_lengths_in_every_input_form(arch):
    model = _tiny(arch)
    texts = ["abca", "c", "bb"]
    separate = torch.cat([model.log_prob(text) for text in texts])
    torch.testing.assert_close(model.log_prob(texts), separate)
    codes = [model.tokenizer.encode(text) for text in texts]
    torch.testing.assert_close(model.log_prob(codes), separate)
    torch.testing.assert_close(model.log_prob([c.numpy() for c in codes]), separate)
    padded = torch.nn.utils.rnn.pad_sequence(codes, batch_first=True)
    # Garbage beyond each length must not matter.
    padded[1, 1:] = 7
    sequences = Sequences(padded, torch.tensor([4, 1, 2]))
    torch.testing.assert_close(model.log_prob(sequences), separate)


def test_chain_rule_by_hand():
    model = _tiny("lstm")
    tokens = torch.tensor([[1, 2, 0]])
    begin = torch.tensor([[model.begin_token]])
    logits, _ = model.next_token_logits(torch.cat([begin, tokens[:, :2]], 1))
    log_probs = torch.log_softmax(logits[0], -1)
    expected = log_probs[0, 1] + log_probs[1, 2] + log_probs[2, 0]
    torch.testing.assert_close(model.log_prob(tokens)[0], expected)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_samples_follow_exp_log_prob_with_and_without_prompt(arch):
    model = _tiny(arch)
    support = model.enumerate_support(2)
    for prompt in (None, "ca"):
        draws = model.sample(4000, length=2, prompt=prompt, seed=1)
        counts = torch.zeros(len(support))
        index = (draws[:, 0] * 3 + draws[:, 1]).long()
        counts.index_add_(0, index, torch.ones(len(draws)))
        if prompt is None:
            probability = model.log_prob(support).exp()
        else:
            prefix = model.tokenizer.encode(prompt)[None].expand(len(support), -1)
            joint = model.log_prob(torch.cat([prefix, support], 1))
            probability = (joint - model.log_prob(prompt)).exp()
        distance = 0.5 * (counts / 4000 - probability).abs().sum().item()
        assert distance < 3 * math.sqrt(9 / (2 * math.pi * 4000)) + 0.01


def test_temperature_top_k_and_top_p():
    model = _tiny("gru")
    logits, _ = model.next_token_logits(torch.tensor([[model.begin_token]]))
    greedy = int(logits[0, -1].argmax())
    for options in ({"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}):
        draws = model.sample(50, length=1, seed=0, **options)
        assert bool((draws[:, 0] == greedy).all())
    # Temperature 2 flattens the first-token distribution to softmax(logits / 2).
    draws = model.sample(6000, length=1, temperature=2.0, seed=3)[:, 0]
    frequencies = torch.bincount(draws, minlength=3).double() / 6000
    expected = torch.softmax(logits[0, -1] / 2.0, -1)
    assert (frequencies - expected).abs().max().item() < 0.03
    # top_k=2 never draws the least likely token.
    least = int(logits[0, -1].argmin())
    assert not bool((model.sample(500, length=1, top_k=2, seed=0) == least).any())


def _nucleus(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus distribution: the most likely tokens, fewest first, until their mass
    reaches top_p, renormalised (Holtzman et al. 2020)."""
    ordered, order = probabilities.sort(descending=True)
    keep = int((ordered.cumsum(0) < top_p).sum()) + 1
    kept = torch.zeros_like(probabilities)
    kept[order[:keep]] = ordered[:keep]
    return kept / kept.sum()


@pytest.mark.parametrize(("temperature", "prompt"), [(1.0, None), (0.1, None), (1.0, "ca")])
def test_top_p_draws_follow_the_exact_nucleus_distribution(temperature, prompt):
    model = _tiny("gru", vocab="abcdef")
    context = [model.begin_token] + ([] if prompt is None else model.tokenizer.encode(prompt)
                                     .tolist())
    with torch.no_grad():
        logits, _ = model.next_token_logits(torch.tensor([context]))
    # top_p applies to the tempered distribution (at 0.1 far from the untempered one).
    probabilities = torch.softmax(logits[0, -1] / temperature, -1)
    ordered = probabilities.sort(descending=True).values
    cumulative = ordered.cumsum(0)
    n = 6000
    for kept in range(2, 6):
        # Midway into the kept-th token's mass: the nucleus holds exactly `kept` tokens.
        top_p = float(cumulative[kept - 2] + 0.5 * ordered[kept - 1])
        expected = _nucleus(probabilities, top_p)
        assert int((expected > 0).sum()) == kept
        draws = model.sample(
            n, length=1, top_p=top_p, temperature=temperature, prompt=prompt, seed=kept
        )[:, 0]
        frequencies = torch.bincount(draws, minlength=6).double() / n
        assert bool((frequencies[expected == 0] == 0).all()), (top_p, frequencies, expected)
        # Four standard errors of a frequency (at most 0.5 / sqrt(n)).
        assert (frequencies - expected).abs().max().item() < 4 * 0.5 / math.sqrt(n)


def test_fit_learns_a_deterministic_pattern_and_bits_per_character():
    text = "abcab" * 60
    model = SequenceModel("abc", arch="lstm", embedding_dim=8, hidden_dim=32, n_layers=1)
    model.fit(text, seq_length=20, n_epochs=40, batch_size=5, learning_rate=1e-2, seed=0)
    assert model.bits_per_character("abcababcab") < 0.5
    assert model.sample_text(1, length=7, prompt="abcab", seed=0, top_k=1)[0] == "abcababcabab"
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_bits_per_character_matches_log_prob(arch):
    model = _tiny(arch, max_length=16)
    text = "abcacbbacab"
    exact = -model.log_prob(text).item() / len(text) / math.log(2)
    assert model.bits_per_character(text) == pytest.approx(exact, rel=1e-9)
    segmented = -model.log_prob([text[:4], text[4:8], text[8:]]).sum().item()
    assert model.bits_per_character(text, segment_length=4) == pytest.approx(
        segmented / len(text) / math.log(2), rel=1e-9
    )


def test_recurrent_state_is_carried_exactly_through_chunks():
    model = _tiny("lstm")
    codes = model.tokenizer.encode("abcabbcaacbabcab")
    streamed = model._streamed_log_prob(codes, chunk=3)
    assert streamed == pytest.approx(model.log_prob(codes[None]).item(), rel=1e-10)


def test_transformer_context_limit():
    model = _tiny("transformer", max_length=4)
    with pytest.raises(DataError, match="max_length is 4"):
        model.log_prob(["abcab"])
    # Sampling stops at the same limit (prompt plus draws), naming the argument.
    assert model.sample(3, length=4, seed=0).shape == (3, 4)
    assert model.log_prob(model.sample(3, length=4, seed=0)).isfinite().all()
    with pytest.raises(DataError, match=r"length=5 exceeds this transformer's max_length=4"):
        model.sample(3, length=5, seed=0)
    assert model.sample(2, length=2, prompt="ab", seed=0).shape == (2, 2)
    with pytest.raises(DataError, match=r"length=3 after a prompt of 2 tokens.*at most 2"):
        model.sample(2, length=3, prompt="ab", seed=0)
    with pytest.raises(DataError, match="shorten the prompt"):
        model.sample_text(1, length=1, prompt="abcab")
    # Recurrent models have no such limit.
    assert _tiny("lstm", max_length=4).sample(2, length=9, seed=0).shape == (2, 9)


def test_integer_vocabulary_and_tokenizer_round_trip():
    model = SequenceModel(4, hidden_dim=8, n_layers=1).init_for_evaluation()
    assert model.log_prob(np.array([[0, 3, 2]])).shape == (1,)
    with pytest.raises(DataError, match="integer tokens"):
        model.log_prob(["ab"])
    tokenizer = CharTokenizer.from_text("hello world")
    assert tokenizer.decode(tokenizer.encode("low")) == "low"
    assert SequenceModel(tokenizer).get_config()["vocab"] == tokenizer.symbols


def test_contract_suite_for_each_architecture():
    texts = ["abcab", "bca", "cabcabc", "aab"] * 10
    for arch in ARCHITECTURES:
        model = SequenceModel("abc", arch=arch, embedding_dim=8, hidden_dim=16, n_layers=1)
        report = check_density(
            model, texts, fit_options={"n_epochs": 2, "seed": 0}, sample_options={"length": 3}
        )
        assert abs(report["log_total_probability"]) < 1e-4


def test_bad_input_is_refused_with_clear_errors():
    model = SequenceModel("abc", hidden_dim=8, n_layers=1)
    with pytest.raises(NotFittedError):
        model.log_prob(["ab"])
    model.init_for_evaluation()
    with pytest.raises(DataError, match=r"x\[1\] has symbol 'z' at position 2"):
        model.log_prob(["ab", "abz"])
    with pytest.raises(DataError, match="token 3 at position 1, outside the vocabulary"):
        model.log_prob(torch.tensor([[0, 3]]))
    with pytest.raises(DataError, match="NaN"):
        model.log_prob(np.array([[0.0, float("nan")]]))
    with pytest.raises(DataError, match="whole numbers"):
        model.log_prob(np.array([[0.5, 1.0]]))
    with pytest.raises(DataError, match="empty string"):
        model.log_prob(["ab", ""])
    with pytest.raises(DataError, match="prompt has symbol"):
        model.sample(2, length=2, prompt="q")
    with pytest.raises(DataError, match="temperature"):
        model.sample(2, length=2, temperature=0)
    with pytest.raises(DataError, match="top_p"):
        model.sample(2, length=2, top_p=1.5)
    with pytest.raises(DataError, match="vocab has repeated"):
        SequenceModel("aab")
    with pytest.raises(DataError, match="arch"):
        SequenceModel("ab", arch="mamba")
    with pytest.raises(DataError, match="too many"):
        SequenceModel("abcdefghij").enumerate_support(6)
    with pytest.raises(DataError, match="data has symbol"):
        model.fit("abq", n_epochs=1)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cuda_matches_cpu(arch):
    model = _tiny(arch)
    support = model.enumerate_support(3)
    expected = model.log_prob(support)
    model.to("cuda")
    torch.testing.assert_close(model.log_prob(support).cpu(), expected)
    assert model.sample(3, length=4, seed=0).device.type == "cuda"
    assert list(itertools.chain(*model.sample_text(1, length=2)))


def test_charlm_recipe_vocabulary_matches_the_text():
    from probgen.recipes import charlm_shakespeare
    from probgen.recipes._shared_data import SharedDataMissing

    try:
        train = charlm_shakespeare.text("train")
        valid = charlm_shakespeare.text("valid")
    except SharedDataMissing as error:
        pytest.skip(str(error))
    assert "".join(sorted(set(train + valid))) == charlm_shakespeare.VOCAB
    assert len(train) == int(0.9 * (len(train) + len(valid)))
    chunks = charlm_shakespeare.data("valid", n=3, seq_length=10)
    assert chunks == [valid[:10], valid[10:20], valid[20:30]]
