"""oneDNN linear layers for CPU scoring (rewardkit/cpu_linear.py): same numbers, scoped, reversible."""

from __future__ import annotations

import pytest
import torch

from rewardkit.cpu_linear import onednn_linear_available, onednn_linears
from tests.helpers import tiny_reward_model

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no usable oneDNN linear")


def _inputs(batch: int = 4, length: int = 19):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 2000, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, 11:] = 0
    attention_mask[3, 5:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_same_rewards_as_the_plain_forward(kind):
    model = tiny_reward_model(kind)
    inputs = _inputs()
    with torch.inference_mode():
        plain = model(**inputs).rewards
        with onednn_linears(model) as patched:
            fast = model(**inputs).rewards
    assert patched > 0
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_feed_forward_gelu_is_fused_and_linears_routed():
    model = tiny_reward_model("bert")
    with onednn_linears(model):
        intermediates = [m for m in model.modules() if type(m).__name__ == "BertIntermediate"]
        linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
        assert intermediates and all("forward" in m.__dict__ for m in intermediates)
        assert all("forward" in m.__dict__ for m in linears)


def test_model_is_restored_after_the_block_even_on_error():
    model = tiny_reward_model("bert")
    with pytest.raises(RuntimeError, match="boom"):
        with onednn_linears(model):
            raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_falls_back_to_autograd_when_grad_is_enabled():
    """The oneDNN op has no backward: with grad on, a patched layer must still train correctly."""
    model = tiny_reward_model("bert")  # eval: no dropout, so both passes are deterministic
    inputs = _inputs()
    reference = torch.autograd.grad(model(**inputs).rewards.sum(), model.score.weight)[0]
    with onednn_linears(model):
        patched = torch.autograd.grad(model(**inputs).rewards.sum(), model.score.weight)[0]
    torch.testing.assert_close(patched, reference)


def test_layers_on_other_devices_or_dtypes_are_left_alone():
    model = tiny_reward_model("bert").to(torch.float64)
    with onednn_linears(model) as patched:
        assert patched == 0


def test_scorer_results_do_not_change_with_onednn(tokenizer):
    """RewardScorer routes through oneDNN on CPU; its scores equal the plain forward's (1e-5)."""
    from rewardkit.scoring import RewardScorer

    model = tiny_reward_model("bert")
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu")
    prompts = ["What is 2+2?", "Name a colour.", "Say hi."]
    responses = ["4", "Blue, or perhaps a deep shade of green.", "Hello there!"]
    scores = scorer.score(prompts, responses)
    with torch.inference_mode():
        for prompt, response, score in zip(prompts, responses, scores):
            tokens = tokenizer(prompt, response, return_tensors="pt")
            assert model(**tokens).logits.item() == pytest.approx(score, abs=1e-5)
    assert not any("forward" in m.__dict__ for m in model.modules())
