"""RewardConfig / RewardModel behaviour on tiny random backbones."""

import copy
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

import configuration_reward
from configuration_reward import RewardConfig, check_pooling_reads_the_text
from modeling_reward import RewardModel, pairwise_loss
from tests import helpers

TEXTS = [
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("Say hi", "hi"),
    ("How do I boil an egg?", "Put it in boiling water for about nine minutes, then cool it in cold water."),
]


def _encode(tokenizer, pairs, padding_side="right"):
    tokenizer.padding_side = padding_side
    try:
        return tokenizer([p for p, _ in pairs], [r for _, r in pairs], padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"


# ---------------------------------------------------------------- config


def test_config_defaults_follow_the_contract():
    config = RewardConfig(backbone_config=helpers.tiny_backbone_config("bert"))
    assert config.model_type == "reward_model"
    assert config.alpha == 1.0 and config.pooling == "cls"
    assert config.num_labels == 1 and config.problem_type == "regression"
    assert config.id2label == {0: "reward"}
    assert set(config.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    assert RewardConfig(backbone_config=helpers.tiny_backbone_config("gpt2")).pooling == "last"
    assert RewardConfig().backbone_config.model_type == "bert"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "max"}, "pooling"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": "2"}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -2.0}, "alpha"),
        ({"head_dropout": 1.5}, "head_dropout"),
        ({"reward_std": 0.0}, "reward_std"),
        ({"reward_mean": float("inf")}, "reward_mean"),
        ({"calibration_temperature": -1.0}, "calibration_temperature"),
        ({"temperature": -1.0}, "calibration_temperature"),  # the old key is read into the new one
        ({"normalize_rewards": True}, "normalize_rewards"),
        ({"num_labels": 2}, "num_labels"),
        ({"problem_type": "single_label_classification"}, "problem_type"),
        ({"backbone_config": {"hidden_size": 8}}, "model_type"),
        ({"backbone_config": 3}, "backbone_config"),
    ],
)
def test_config_rejects_invalid_fields(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RewardConfig(**kwargs)


def test_config_takes_numpy_numbers_as_the_forward_does():
    """`model(**tokens, alpha=np.float32(2))` was accepted while `RewardConfig(alpha=np.float32(2))` and
    `config.alpha = np.float32(2)` were refused: one scale, two rules. Both take numpy numbers now and
    store a plain float, which config.json can hold; numpy zero and NaN are still refused."""
    config = RewardConfig(alpha=np.float32(2.0), reward_mean=np.float64(0.5), reward_std=np.float32(2.0))
    config.alpha = np.int64(3)
    assert (config.alpha, config.reward_mean, config.reward_std) == (3.0, 0.5, 2.0)
    assert all(type(v) is float for v in (config.alpha, config.reward_mean, config.reward_std))
    assert '"alpha": 3.0' in config.to_json_string()
    for bad in (np.float32(0.0), np.float64("nan"), np.bool_(True)):
        with pytest.raises(ValueError, match="alpha"):
            RewardConfig(alpha=bad)


def test_config_round_trips_through_dict():
    config = RewardConfig(backbone_config=helpers.tiny_backbone_config("roberta"), alpha=3.0, pooling="mean",
                          reward_mean=0.5, reward_std=2.0, calibration_temperature=1.7)
    again = RewardConfig.from_dict(config.to_dict())
    assert again.backbone_config.model_type == "roberta"
    assert (again.alpha, again.pooling, again.reward_mean, again.reward_std, again.calibration_temperature) == (
        3.0, "mean", 0.5, 2.0, 1.7)
    # the key before the rename is read into the new field and not written back
    legacy = RewardConfig(backbone_config=helpers.tiny_backbone_config(), temperature=0.9)
    assert legacy.calibration_temperature == 0.9 and "temperature" not in legacy.to_dict()


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
ROTARY_BACKBONES = [  # (type, its settings, the names and values transformers 4.x must be given)
    ("qwen2", dict(rope_theta=1e6), dict(rope_theta=1e6)),
    ("llama", dict(rope_theta=5e5, rope_scaling=LLAMA3_ROPE, max_position_embeddings=131072),
     dict(rope_theta=5e5, rope_scaling={**LLAMA3_ROPE, "type": "llama3"})),
    ("phi", dict(rope_theta=2e4, partial_rotary_factor=0.5), dict(rope_theta=2e4, partial_rotary_factor=0.5)),
    ("gpt_neox", dict(rotary_emb_base=20000, rotary_pct=0.5), dict(rotary_emb_base=20000, rotary_pct=0.5)),
    ("modernbert", dict(global_rope_theta=8e4, local_rope_theta=5e3), dict(global_rope_theta=8e4, local_rope_theta=5e3)),
]


@pytest.mark.parametrize("kind, settings, expected", ROTARY_BACKBONES, ids=[case[0] for case in ROTARY_BACKBONES])
def test_rotary_settings_reach_transformers_4_by_its_own_names(kind, settings, expected, monkeypatch):
    """transformers 5 saves them as `rope_parameters`, which 4.57 does not read: it loaded a Qwen2
    backbone (theta 1e6) with theta 10000 and gave other rewards without a word, though the README
    says the models load with 4.57 (checked there: these five now give the 5.23 rewards, 1e-6)."""
    saved = AutoConfig.for_model(kind, **settings).to_dict()  # the backbone_config of config.json
    given = {}
    for_model = AutoConfig.for_model
    monkeypatch.setattr(configuration_reward, "_TRANSFORMERS_4", True)
    monkeypatch.setattr(configuration_reward.AutoConfig, "for_model",
                        lambda model_type, **values: given.update(copy.deepcopy(values)) or for_model(model_type, **values))
    RewardConfig(backbone_config=saved)
    assert "rope_parameters" not in given
    assert {name: given.get(name) for name in expected} == expected


def test_rotary_settings_transformers_4_has_no_names_for_are_refused(monkeypatch):
    """Gemma 3's local layers scaled: 4.x scales its global layers only, so loading would change rewards."""
    monkeypatch.setattr(configuration_reward, "_TRANSFORMERS_4", True)
    rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e4}}
    with pytest.raises(ValueError, match=r"transformers>=5\.3"):
        RewardConfig(backbone_config={"model_type": "gemma3_text", "rope_parameters": rope})


# ---------------------------------------------------------------- forward, alpha


def test_forward_shapes_and_mse_with_labels(tokenizer):
    model = helpers.tiny_reward_model()
    batch = _encode(tokenizer, TEXTS)
    out = model(**batch, labels=torch.tensor([1.0, 0.0, 2.0]))
    assert out.logits.shape == (3, 1) and out.rewards.shape == (3, 1)
    expected = torch.mean((out.rewards[:, 0] - torch.tensor([1.0, 0.0, 2.0])) ** 2)
    assert torch.allclose(out.loss, expected)
    assert isinstance(model(**batch, return_dict=False), tuple)


def test_forward_takes_labels_and_alpha_in_the_documented_positions(tokenizer):
    """The contract's signature is forward(input_ids, attention_mask, token_type_ids, labels, alpha, ...):
    positionally, labels and alpha must reach the loss and the scale, not BERT's position_ids slot
    (which crashed in the embedding lookup)."""
    model = helpers.tiny_reward_model()
    batch = _encode(tokenizer, TEXTS)
    labels = torch.tensor([1.0, 0.0, 2.0])
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with torch.no_grad():
        by_name = model(**batch, labels=labels, alpha=2.0)
        by_position = model(ids, mask, types, labels, 2.0)
    assert torch.equal(by_position.loss, by_name.loss)
    assert torch.equal(by_position.logits, by_name.logits)


def test_alpha_is_a_pure_multiplier_per_call(tokenizer):
    model = helpers.tiny_reward_model()
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        base = model(**batch).logits
        for alpha in (10.0, 0.5, 3):
            scaled = model(**batch, alpha=alpha)
            assert torch.allclose(scaled.logits, alpha * base, atol=1e-6)
            assert torch.allclose(scaled.rewards, base, atol=1e-6)  # raw reward untouched
        # alpha only rescales: <= 0 would invert (or erase) every ranking made from the output
        for bad in (-2.0, 0.0, float("nan")):
            with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
                model(**batch, alpha=bad)


def test_alpha_from_config_at_load_time(tokenizer, tmp_path):
    model = helpers.tiny_reward_model()
    model.save_pretrained(tmp_path)
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        base = model(**batch).logits
        loaded = RewardModel.from_pretrained(tmp_path, alpha=4.0).eval()
        assert loaded.config.alpha == 4.0
        assert torch.allclose(loaded(**batch).logits, 4.0 * base, atol=1e-5)
        assert torch.allclose(loaded(**batch, alpha=1.0).logits, base, atol=1e-5)  # call beats config


@pytest.mark.parametrize("override, message", [
    (dict(alpha=0), "`alpha` must be > 0"), (dict(alpha=-2.0), "`alpha` must be > 0"),
    (dict(alpha=float("nan")), "`alpha` must be a finite number"),
    (dict(calibration_temperature=-1.0), "`calibration_temperature` must be > 0"),
    (dict(reward_std=0.0), "`reward_std` must be > 0"), (dict(reward_mean=float("inf")), "`reward_mean` must be"),
    (dict(pooling="max"), "`pooling` must be one of"), (dict(head_dropout=1.5), "`head_dropout` must be in"),
    # the pipeline applies a sigmoid for these: it returned sigmoid(alpha * r) as the reward
    (dict(problem_type="single_label_classification"), "`problem_type` must be 'regression'"),
    (dict(problem_type="multi_label_classification"), "`problem_type` must be 'regression'"),
])
def test_load_time_overrides_are_checked_like_the_constructor(tmp_path, override, message):
    """`from_pretrained(repo, alpha=10)` is the documented way to rescale at load time; it sets the
    field after `__init__`, so `alpha=-2` loaded and silently inverted every score (0 zeroed them)."""
    helpers.tiny_reward_model(reward_mean=0.25, reward_std=2.0).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        RewardModel.from_pretrained(tmp_path, **override)
    with pytest.raises(ValueError, match=message):
        RewardConfig.from_pretrained(tmp_path, **override)
    config = RewardConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        setattr(config, *next(iter(override.items())))
    assert RewardModel.from_pretrained(tmp_path, alpha=4.0).config.alpha == 4.0  # a valid override still works


def test_normalization_without_statistics_is_a_clear_error(tokenizer, tmp_path):
    helpers.tiny_reward_model().save_pretrained(tmp_path)  # no reward_mean / reward_std
    model = RewardModel.from_pretrained(tmp_path, normalize_rewards=True).eval()
    with pytest.raises(ValueError, match="normalize_rewards=True needs reward_mean and reward_std"):
        model(**_encode(tokenizer, TEXTS))


def test_normalization_is_opt_in_and_exact(tokenizer):
    model = helpers.tiny_reward_model(reward_mean=0.25, reward_std=2.0, alpha=3.0)
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        out = model(**batch)
        assert torch.allclose(out.logits, 3.0 * out.rewards, atol=1e-6)
        model.config.normalize_rewards = True
        normalized = model(**batch)
        assert torch.allclose(normalized.logits, 3.0 * (out.rewards - 0.25) / 2.0, atol=1e-6)


# ---------------------------------------------------------------- padding invariance


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2", "distilbert", "deberta-v2", "modernbert", "llama"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_reward_does_not_depend_on_padding_or_batch(tokenizer, kind, pooling, padding_side):
    model = helpers.tiny_reward_model(kind, pooling=pooling)
    with torch.no_grad():
        alone = [model(**_encode(tokenizer, [pair])).logits[0, 0].item() for pair in TEXTS]
        batch = _encode(tokenizer, TEXTS, padding_side)
        assert (batch["attention_mask"] == 0).any()  # there really is padding
        together = model(**batch).logits[:, 0].tolist()
    assert together == pytest.approx(alone, abs=1e-5)


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2", "opt", "distilbert", "deberta-v2", "modernbert", "llama"])
def test_backbones_train_one_step_and_round_trip(kind, tokenizer, tmp_path):
    model = helpers.tiny_reward_model(kind).train()
    chosen = _encode(tokenizer, TEXTS)
    rejected = _encode(tokenizer, [(p, "no.") for p, _ in TEXTS])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = pairwise_loss(model(**chosen).rewards, model(**rejected).rewards)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before["score.weight"], model.score.weight)
    changed_backbone = [n for n, p in model.named_parameters() if n.startswith("backbone.") and not torch.equal(before[n], p)]
    assert changed_backbone, "the backbone must be trained too"

    model.eval().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded, info = RewardModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(**chosen).logits, model(**chosen).logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt_neo", "olmo2", "qwen3_moe", "smollm3"])
def test_decoders_not_named_in_our_list_default_to_last_pooling(tokenizer, kind):
    """The decoder types were a hand-written list: gpt_neo, olmo2, qwen3_moe, smollm3 (saved as a base
    model, so no *ForCausalLM in `architectures`) got `cls`, the first token, which a causal decoder
    lets see nothing after it: every response to a prompt scored the same."""
    from transformers import AutoConfig

    backbone = helpers.tiny_backbone_config(kind) if kind == "gpt_neo" else AutoConfig.for_model(kind)
    assert RewardConfig(backbone_config=backbone).pooling == "last"
    if kind == "gpt_neo":
        model = helpers.tiny_reward_model(kind)
        with torch.no_grad():
            rewards = model(**_encode(tokenizer, [("Say hi", "hi"), ("Say hi", "no, I will not")])).rewards[:, 0]
        assert abs(rewards[0] - rewards[1]) > 1e-4
    for encoder in ("bert", "roberta", "distilbert", "deberta-v2", "modernbert"):  # unchanged
        assert RewardConfig(backbone_config=helpers.tiny_backbone_config(encoder)).pooling == "cls"
    xlnet = AutoConfig.for_model("xlnet", architectures=["XLNetLMHeadModel"])  # reads both ways: cls is allowed
    assert RewardConfig(backbone_config=xlnet).pooling == "last"
    check_pooling_reads_the_text(xlnet, "cls")


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neo"])
def test_cls_pooling_on_a_causal_decoder_is_refused(tmp_path, kind):
    """`from_backbone(decoder, pooling="cls")` built a model whose reward read the first token alone
    (with a BOS token: one reward for every text); training it reported a loss of log 2 and no error."""
    torch.manual_seed(0)
    from transformers import AutoModel

    AutoModel.from_config(helpers.tiny_backbone_config(kind)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"pooling 'cls' reads the first token.*causal decoder \\({kind}\\)"):
        RewardModel.from_backbone(str(tmp_path), pooling="cls")
    assert RewardModel.from_backbone(str(tmp_path), pooling="mean").config.pooling == "mean"


def test_minilm_backbone_weights_equal_the_checkpoint(minilm_path):
    model = RewardModel.from_backbone(str(minilm_path))
    checkpoint = load_file(str(minilm_path / "model.safetensors"))
    ours = model.backbone.state_dict()
    compared = 0
    for name, tensor in checkpoint.items():
        key = name.removeprefix("bert.")
        if key in ours:
            assert torch.equal(ours[key], tensor), key
            compared += 1
    assert compared >= len(ours) - 2  # every backbone weight (position_ids buffers aside)
    assert model.config.backbone_config.hidden_size == 384 and model.config.pooling == "cls"
    assert model.score.weight.shape == (1, 384)


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_from_backbone_of_a_half_precision_checkpoint_keeps_fp32_weights_and_head(tmp_path, stored):
    """transformers 5 loads a checkpoint in its stored dtype by default (dtype="auto"), and many Hub
    checkpoints are stored in fp16/bf16: a fresh reward model (what `rewardkit train` trains) must
    still get fp32 weights and an fp32 head ("weights stay fp32"), unless a dtype is asked for."""
    from transformers import AutoModel

    torch.manual_seed(0)
    AutoModel.from_config(helpers.tiny_backbone_config("bert")).to(stored).save_pretrained(tmp_path)
    model = RewardModel.from_backbone(str(tmp_path))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    asked = RewardModel.from_backbone(str(tmp_path), backbone_kwargs={"dtype": torch.bfloat16})
    assert asked.backbone.dtype == torch.bfloat16
    assert asked.score.weight.dtype == torch.float32  # the head stays fp32, as from_pretrained(dtype=...) keeps it
    inputs = {"input_ids": torch.randint(5, 100, (2, 7))}
    with torch.no_grad():
        assert asked(**inputs).rewards.dtype == torch.float32


def test_forward_errors_are_clear():
    model = helpers.tiny_reward_model()
    with pytest.raises(ValueError, match="input_ids"):
        model()


@pytest.mark.parametrize("kind, limit, segments", [("bert", 512, True), ("bert", 512, False), ("roberta", 518, True),
                                                    ("gpt2", 512, False)])
def test_an_input_longer_than_the_backbone_reads_is_a_clear_error(kind, limit, segments):
    """Neither the tokenizer nor `pipeline` truncates by default, and a long response then failed deep
    in torch ("index out of range in self", or for BERT without token_type_ids "index 512 is out of
    bounds"). The error now names the length, the backbone's limit and the fix; the limit itself
    still scores, and RoBERTa's count starts after its padding index (520 positions hold 518)."""
    model = helpers.tiny_reward_model(kind)
    for length in (limit, limit + 1):
        batch = {"input_ids": torch.randint(1000, 2000, (2, length))}
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        if segments:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if length == limit:
            with torch.no_grad():
                assert model(**batch).logits.shape == (2, 1)
            continue
        with pytest.raises(ValueError, match=rf"has {length} tokens; this backbone \({kind}\) reads at most {limit}"
                                             rf"\. Pass truncation=True, max_length={limit}"):
            model(**batch)


# ---------------------------------------------------------------- one-row last layer (cls pooling)


def _full_forward(model, batch):
    """The same model with the one-row shortcut switched off: every position of every layer."""
    model._one_row_last_layer = False
    try:
        return model(**batch)
    finally:
        model._one_row_last_layer = True


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_one_row_last_layer_equals_the_full_forward(tokenizer, kind, padding_side):
    model = helpers.tiny_reward_model(kind, pooling="cls").eval()
    assert model._one_row_last_layer
    batch = _encode(tokenizer, TEXTS, padding_side)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, _full_forward(model, batch).logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_one_row_last_layer_gives_the_full_forwards_gradients(tokenizer, kind):
    model = _no_dropout(helpers.tiny_reward_model(kind, pooling="cls").train())
    batch = _encode(tokenizer, TEXTS)
    grads = []
    for forward in (model, lambda **b: _full_forward(model, b)):
        model.zero_grad()
        forward(**batch).rewards.pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert "backbone.encoder.layer.1.intermediate.dense.weight" in grads[0]  # the last layer trains
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


def test_one_row_last_layer_runs_the_last_layer_on_cls_rows_only(tokenizer):
    model = helpers.tiny_reward_model("bert", pooling="cls").eval()
    batch = _encode(tokenizer, TEXTS)
    seen = []
    hook = model.backbone.encoder.layer[-1].intermediate.register_forward_hook(
        lambda module, args, output: seen.append(tuple(output.shape)))
    with torch.no_grad():
        model(**batch)
    hook.remove()
    assert seen == [(len(TEXTS), model.config.backbone_config.intermediate_size)]  # (B, I), not (B, S, I)


def test_one_row_shortcut_steps_aside_when_all_states_are_wanted(tokenizer):
    model = helpers.tiny_reward_model("bert", pooling="cls").eval()
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
        assert output.hidden_states is not None and len(output.hidden_states) == 3  # embeddings + 2 layers
        assert torch.allclose(output.logits, _full_forward(model, batch).logits, atol=1e-5)
    model.config.pooling = "mean"  # pooling read per call: mean needs every row
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, _full_forward(model, batch).logits, atol=1e-6)


def test_return_dict_false_in_the_config_gives_a_tuple(tokenizer, tmp_path):
    """As transformers' own models do: `from_pretrained(path, return_dict=False)` makes forward
    return a tuple (the config's flag was ignored: a ModelOutput came back)."""
    helpers.tiny_reward_model().save_pretrained(tmp_path)
    model = RewardModel.from_pretrained(tmp_path, return_dict=False).eval()
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        output = model(**batch)
        assert isinstance(output, tuple) and output[0].shape == (len(TEXTS), 1)
        assert torch.equal(model(**batch, return_dict=True).logits, output[0])  # the call's own flag wins


def test_output_flags_set_in_the_config_reach_the_backbone(tokenizer, tmp_path):
    """`from_pretrained(path, output_hidden_states=True)` sets the flag on the reward config, which the
    backbone never read: no hidden states came back (and the one-row shortcut ran)."""
    helpers.tiny_reward_model().save_pretrained(tmp_path)
    model = RewardModel.from_pretrained(tmp_path, output_hidden_states=True, output_attentions=True,
                                        attn_implementation="eager").eval()
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        output = model(**batch)
        assert len(output.hidden_states) == 3 and len(output.attentions) == 2  # embeddings + 2 layers; 2 layers
        assert torch.allclose(output.logits, _full_forward(model, batch).logits, atol=1e-5)
        model.config.output_hidden_states = model.config.output_attentions = False
        assert model(**batch).hidden_states is None
        model.config.output_hidden_states = True  # set after loading, as users do
        assert len(model(**batch).hidden_states) == 3


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_exported_and_traced_models_score_either_padding_side(tokenizer, kind):
    """Exported or traced on a right-padded batch, the model must score a left-padded one the same.
    A branch on the mask's values (is anything left-padded?) made torch.export fail and
    torch.jit.trace bake in the example's answer (left-padded rewards off by ~0.06)."""
    model = helpers.tiny_reward_model(kind)
    right, left = (_encode(tokenizer, TEXTS, side) for side in ("right", "left"))
    right, left = ({key: b[key] for key in ("input_ids", "attention_mask")} for b in (right, left))
    with torch.no_grad():
        expected = model(**right).logits
        exported = torch.export.export(model, (), right).module()
        assert torch.allclose(exported(**left).logits, expected, atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's own warnings about Python values
            traced = torch.jit.trace(model, (right["input_ids"], right["attention_mask"]), strict=False)
        assert torch.allclose(traced(left["input_ids"], left["attention_mask"])["logits"], expected, atol=1e-5)


def test_the_model_compiles_as_one_graph(tokenizer):
    """`torch.compile(model, fullgraph=True)` failed inside dynamo on the hook of the one-row last
    layer (without fullgraph it broke the graph there); compiled, the model takes the full forward.
    backend="eager": dynamo traces the whole graph, with no code generation to wait for."""
    model = helpers.tiny_reward_model()
    batch = _encode(tokenizer, TEXTS, "left")
    with torch.no_grad():
        expected = model(**batch).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        assert torch.allclose(compiled(**batch).logits, expected, atol=1e-5)
    torch.compiler.reset()


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_other_backbones_take_the_ordinary_forward(kind):
    assert not helpers.tiny_reward_model(kind)._one_row_last_layer


@pytest.mark.parametrize("reentrant", [True, False])
def test_one_row_last_layer_trains_under_gradient_checkpointing(tokenizer, reentrant):
    model = _no_dropout(helpers.tiny_reward_model("bert", pooling="cls").train())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    batch = _encode(tokenizer, TEXTS)
    grads = []
    for forward in (model, lambda **b: _full_forward(model, b)):
        model.zero_grad()
        forward(**batch).rewards.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "backbone.embeddings.word_embeddings.weight" in grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


@pytest.mark.parametrize("bad", [np.float32(0.0), np.int64(-3), torch.tensor(0.0), torch.tensor(-2.0),
                                 torch.tensor([1.0, -1.0]), torch.tensor([1.0, 2.0]), True, np.bool_(True), "2"])
def test_alpha_per_call_refuses_numpy_and_tensor_values_that_are_not_positive(tokenizer, bad):
    """A numpy scalar or a tensor alpha (an annealed scale kept as a tensor, a value read from an
    array) passed the check, which looked at Python numbers only: alpha=np.float32(0) zeroed every
    output and torch.tensor(-2.0) inverted every ranking, which the README says is refused."""
    model = helpers.tiny_reward_model()
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        model(**_encode(tokenizer, TEXTS), alpha=bad)


def test_alpha_per_call_takes_positive_numpy_and_tensor_values(tokenizer):
    model = helpers.tiny_reward_model()
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        base = model(**batch).logits
        for alpha in (np.float32(2.0), np.int64(3), torch.tensor(0.5), torch.tensor([[2.0]]), torch.full((1, 1, 1), 3.0)):
            logits = model(**batch, alpha=alpha).logits
            assert logits.shape == base.shape and torch.allclose(logits, float(alpha) * base, atol=1e-6)


def test_alpha_per_call_of_several_values_is_refused_not_broadcast(tokenizer):
    """torch.tensor([1.0, 2.0]) passed the check (every value > 0) and broadcast the (B, 1) logits to
    (B, 2); a single value in any shape, (1, 1, 1) included, keeps them (B, 1)."""
    model = helpers.tiny_reward_model()
    with pytest.raises(ValueError, match=r"got a tensor of shape \(3,\): one value per call"):
        model(**_encode(tokenizer, TEXTS), alpha=torch.tensor([1.0, 2.0, 3.0]))



def test_transformers_trainer_with_gradient_accumulation_logs_the_true_mse_and_its_gradient(tokenizer, tmp_path):
    """A user fine-tuning the model with transformers' own Trainer on `labels`: with 2 accumulation
    steps the logged loss and grad_norm were twice the batch MSE's (Trainer read `**kwargs` in forward
    as "the loss is already divided for accumulation" and skipped its division)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = helpers.tiny_reward_model()
    for module in model.modules():  # dropout off: the step's loss must equal one plain forward
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = _encode(tokenizer, TEXTS + TEXTS[:1])
    labels = torch.tensor([1.0, -2.0, 3.0, 0.5])
    model.zero_grad()
    expected = model(**batch, labels=labels).loss
    expected.backward()
    expected_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad()
    rows = [{**{key: value[i] for key, value in batch.items()}, "labels": labels[i]} for i in range(len(labels))]
    logged = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append(logs)

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             max_steps=1, logging_steps=1, learning_rate=0.0, max_grad_norm=1e9, report_to=[],
                             save_strategy="no", use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Record()])
    trainer.train()
    assert logged[0]["loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert logged[0]["grad_norm"] == pytest.approx(expected_norm.item(), rel=1e-4)
