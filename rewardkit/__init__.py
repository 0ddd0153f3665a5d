"""rewardkit: train, score, explain and publish reward models for RLHF on Hugging Face transformers.

The model itself (`RewardConfig`, `RewardModel`, the losses) lives in the two remote-code files
`configuration_reward.py` / `modeling_reward.py`, installed as top-level modules and uploaded to the
Hub beside the weights. Everything else (data, training, scoring, evaluation, publishing) is here.
Heavy imports are lazy so that `rewardkit --help` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "RewardConfig": "configuration_reward",
    "RewardModel": "modeling_reward",
    "pairwise_loss": "modeling_reward",
    "ranking_loss": "modeling_reward",
    "mse_loss": "modeling_reward",
    "RewardScorer": "rewardkit.scoring",
    "load_reward_data": "rewardkit.data",
    "RewardDataError": "rewardkit.data",
    "RewardTrainingArguments": "rewardkit.training_args",
    "RewardTrainer": "rewardkit.training",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover (re-exports for type checkers)
    from configuration_reward import RewardConfig  # noqa: F401
    from modeling_reward import RewardModel, mse_loss, pairwise_loss, ranking_loss  # noqa: F401
    from rewardkit.data import RewardDataError, load_reward_data  # noqa: F401
    from rewardkit.scoring import RewardScorer  # noqa: F401
    from rewardkit.training import RewardTrainer  # noqa: F401
    from rewardkit.training_args import RewardTrainingArguments  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rewardkit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
