"""FLOPs a reward model's encoder executes in one forward pass, counted by formula (torch's
FlopCounterMode counts no attention FLOPs on CPU). Shared by score_throughput.py and
train_throughput.py so that both count the one-row last layer the same way.

Per layer, for sequences of lengths S: 2 W_layer FLOPs per token (one multiply-add per weight of
the layer's matrices; biases and LayerNorms are element-wise, not counted) and 4 S^2 H per sequence
(QK^T and attention x V). Embeddings, pooler and head are left out (lookups and one-row products).
A rewardkit model with the one-row last layer (cls pooling on a BERT-style backbone) runs that
layer's key and value projections on every token (2 x 2 H^2 per token) and the rest of it, with
4 S H of attention, for one row per sequence. A training step (forward + backward) executes
FORWARD_BACKWARD times the forward: each product is computed once more for the input's gradient
and once for the weight's.

`python benchmarks/flops.py` checks the formula against torch's FlopCounterMode on tiny random
BERTs with eager attention (full and one-row last layer, forward and forward + backward).
"""

from __future__ import annotations

FORWARD_BACKWARD = 3


def forward_flops(model, tokens: float, squared: float, sequences: int) -> float:
    """FLOPs of one forward over `sequences` sequences holding `tokens` tokens in all, whose
    squared lengths sum to `squared`. `model` is a rewardkit RewardModel or a transformers BERT
    classifier (`.bert`)."""
    backbone = getattr(model, "backbone", None) or model.bert
    config = backbone.config
    layers, hidden = config.num_hidden_layers, config.hidden_size
    layer_weights = sum(p.numel() for p in backbone.encoder.parameters() if p.dim() >= 2) / layers
    flops = 2 * layers * layer_weights * tokens + 4 * layers * hidden * squared
    if getattr(model, "_one_row_last_layer", False) and model.config.pooling == "cls":
        key_value = 2 * hidden * hidden
        full_last = 2 * layer_weights * tokens + 4 * hidden * squared
        one_row_last = 2 * key_value * tokens + 2 * (layer_weights - key_value) * sequences + 4 * hidden * tokens
        flops += one_row_last - full_last
    return float(flops)


def _counted(model, inputs: dict, backward: bool) -> float:
    """FlopCounterMode's count for the encoder: everything but the pooler and the head. The one-row
    layer's attention (scaled_dot_product_attention, uncounted on CPU) is run as explicit matmuls."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    def explicit_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=None):
        scores = (q @ k.transpose(-1, -2)) * scale
        return scores.masked_fill(~attn_mask, float("-inf")).softmax(-1) @ v

    original, F.scaled_dot_product_attention = F.scaled_dot_product_attention, explicit_attention
    try:
        with FlopCounterMode(display=False) as counter:
            out = model(**inputs).logits
            if backward:
                out.sum().backward()
    finally:
        F.scaled_dot_product_attention = original
    per_module = counter.get_flop_counts()
    left_out = [name for name in per_module if name.endswith((".pooler", ".score", ".classifier"))]
    return float(counter.get_total_flops() - sum(sum(per_module[name].values()) for name in left_out))


def self_check() -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from modeling_reward import RewardConfig, RewardModel

    bert = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=48, attn_implementation="eager")
    lengths = [9, 5, 7]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])  # padded: 3 rows x 9 tokens are executed
    inputs = {"input_ids": torch.randint(1, 99, mask.shape), "attention_mask": mask}
    executed = (mask.numel(), mask.shape[0] * mask.shape[1] ** 2, mask.shape[0])
    torch.manual_seed(0)
    models = {"rewardkit one-row": RewardModel(RewardConfig(backbone_config=bert, pooling="cls")),
              "rewardkit full (mean pooling)": RewardModel(RewardConfig(backbone_config=bert, pooling="mean")),
              "BertForSequenceClassification": BertForSequenceClassification(bert)}
    assert models["rewardkit one-row"]._one_row_last_layer
    for name, model in models.items():
        for backward, factor in ((False, 1), (True, FORWARD_BACKWARD)):
            formula = factor * forward_flops(model, *executed)
            counted = _counted(model, inputs, backward)
            assert formula == counted, f"{name}, backward={backward}: formula {formula:.0f} != counted {counted:.0f}"
    print("flops.py: formula equals FlopCounterMode's count on tiny BERTs (full and one-row, forward and backward)")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    self_check()
