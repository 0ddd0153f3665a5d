"""FLOPs a reward model's encoder executes in one forward pass, counted by formula (torch's
FlopCounterMode counts no attention FLOPs on CPU). Shared by score_throughput.py and
train_throughput.py so that both count the one-row last layer the same way.

Per layer, for sequences of lengths S: 2 P_layer FLOPs per token (every weight in one multiply-add)
and 4 S^2 H per sequence (QK^T and attention x V). Embeddings, pooler and head are left out.
A rewardkit model with the one-row last layer (cls pooling on a BERT-style backbone) runs that
layer's key and value projections on every token (2 x 2 H^2 per token) and the rest of it, with
4 S H of attention, for one row per sequence.
"""

from __future__ import annotations


def forward_flops(model, tokens: float, squared: float, sequences: int) -> float:
    """FLOPs of one forward over `sequences` sequences holding `tokens` tokens in all, whose
    squared lengths sum to `squared`. `model` is a rewardkit RewardModel or a transformers BERT
    classifier (`.bert`)."""
    backbone = getattr(model, "backbone", None) or model.bert
    config = backbone.config
    layers, hidden = config.num_hidden_layers, config.hidden_size
    layer_params = sum(p.numel() for p in backbone.encoder.parameters()) / layers
    flops = 2 * layers * layer_params * tokens + 4 * layers * hidden * squared
    if getattr(model, "_one_row_last_layer", False) and model.config.pooling == "cls":
        key_value = 2 * hidden * hidden
        full_last = 2 * layer_params * tokens + 4 * hidden * squared
        one_row_last = 2 * key_value * tokens + 2 * (layer_params - key_value) * sequences + 4 * hidden * tokens
        flops += one_row_last - full_last
    return float(flops)
