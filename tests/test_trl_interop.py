"""TRL 1.16 interoperability: RewardTrainer trains our model on rewardkit's inputs; GRPO loads a
published folder by path the way it loads any reward model, and `reward_function` scores pairs right."""

import json

import pytest
import torch

from rewardkit.features import PairEncoder, PairwiseCollator, encode_rows
from rewardkit.scoring import RewardScorer
from rewardkit.trl_interop import PreferenceCollator, as_pair, preference_dataset, reward_function
from tests import helpers

trl = pytest.importorskip("trl")

ROWS = [{"prompt": f"question {i}: which word?", "chosen": "a good, clear answer " * (1 + i % 2),
         "rejected": "meh", "margin": None} for i in range(8)]
PROMPTS = ["what is two plus two?", "name a colour", "what is two plus two?"]
COMPLETIONS = [" four, of course", " blue", " five"]


def _trl_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                  report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=1,
                  bf16=False,                    # TRL's default bf16=True refuses to start on a CPU-only machine
                  remove_unused_columns=False)   # keep the token type columns for PreferenceCollator
    values.update(overrides)
    return trl.RewardConfig(**values)


def test_trl_reward_trainer_trains_our_model_on_rewardkit_inputs(tmp_path, tokenizer):
    model = helpers.tiny_reward_model()
    dataset = preference_dataset(ROWS, tokenizer, max_length=32)
    collator = PreferenceCollator(pad_token_id=tokenizer.pad_token_id)

    # What TRL will train on is exactly what rewardkit's own trainer (and scorer) feed the model.
    ours = PairwiseCollator(tokenizer)(encode_rows(ROWS[:4], "pairwise", PairEncoder(tokenizer, 32)))
    theirs = collator([dataset[i] for i in range(4)])
    assert theirs.keys() == ours.keys() == {"input_ids", "attention_mask", "token_type_ids"}
    for key in ours:
        assert torch.equal(theirs[key], ours[key]), key

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = trl.RewardTrainer(model=model, args=_trl_args(tmp_path), train_dataset=dataset,
                                processing_class=tokenizer, data_collator=collator)
    assert len(trainer.train_dataset) == len(ROWS)  # TRL's length filter dropped nothing
    trainer.train()
    assert trainer.state.global_step == 2
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert "score.weight" in changed and any(name.startswith("backbone.") for name in changed)

    trainer.save_model(str(tmp_path / "trl-rm"))  # a rewardkit folder: weights, config, code, tokenizer
    saved = RewardScorer(str(tmp_path / "trl-rm"))
    batch = tokenizer([r["prompt"] for r in ROWS], [r["chosen"] for r in ROWS], padding=True, return_tensors="pt")
    with torch.no_grad():
        in_memory = model.eval()(**batch).logits[:, 0].tolist()
    assert saved.score([r["prompt"] for r in ROWS], [r["chosen"] for r in ROWS]) == pytest.approx(in_memory, abs=1e-5)


@pytest.mark.parametrize("built_by", ["from_backbone", "from_pretrained"])
def test_trl_reward_trainer_gives_every_trainable_weight_a_gradient_as_ddp_needs(tmp_path, tokenizer, built_by):
    """The README recipe under torchrun: TRL's RewardConfig turns gradient checkpointing on, so the
    Trainer wraps the model in DDP with find_unused_parameters=False, which failed at the second step
    ("Expected to have finished reduction in the prior iteration") on BERT's pooler, trainable but
    never read. Checked in one process: one backward through TRL's loss reaches every trainable weight."""
    from modeling_reward import RewardModel

    base = helpers.save_tiny_backbone(tmp_path / "base")
    model = RewardModel.from_backbone(str(base))
    if built_by == "from_pretrained":  # loading makes every weight trainable again
        model.save_pretrained(tmp_path / "rm")
        model = RewardModel.from_pretrained(tmp_path / "rm")
    dataset = preference_dataset(ROWS, tokenizer, max_length=32)
    collator = PreferenceCollator(tokenizer.pad_token_id)
    trainer = trl.RewardTrainer(model=model, args=_trl_args(tmp_path), train_dataset=dataset,
                                processing_class=tokenizer, data_collator=collator)
    assert trainer.args.gradient_checkpointing  # TRL's default, which DDP cannot combine with unused weights
    trainer.model.train()
    trainer.compute_loss(trainer.model, collator([dataset[i] for i in range(4)])).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert any(p.requires_grad for p in model.backbone.encoder.parameters())  # the backbone itself trains


def test_preference_dataset_refuses_rows_that_are_not_pairs_by_row(tokenizer):
    """`load_reward_data(...).rows` of a ranked or mse file failed with a bare KeyError 'chosen'."""
    ranked = [ROWS[0], {"prompt": "q", "responses": ["best", "worse", "worst"]}]
    with pytest.raises(ValueError, match=r"Row 2 is not a pairwise row: it has no 'chosen', 'rejected'.*'responses'"):
        preference_dataset(ranked, tokenizer, max_length=32)
    with pytest.raises(ValueError, match="Row 1 is not a pairwise row.*rewardkit train"):
        preference_dataset([{"prompt": "q", "response": "a", "reward": 1.0}], tokenizer, max_length=32)


def test_readme_trl_recipe_lets_the_trained_length_warning_fire(tokenizer, caplog):
    """The README's RewardTrainer recipe called `preference_dataset(rows, tokenizer, max_length=256)`
    without `model_config`, so the warning of a length above the model's `trained_max_length` could
    not fire for anyone who followed it, e.g. with a rewardkit model trained at 32 tokens. Its call,
    as printed, is run here on such a model."""
    import ast
    import re

    readme = (helpers.REPO_ROOT / "README.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", readme, re.S) if "trl.RewardTrainer(" in code)
    call = next(node for node in ast.walk(ast.parse(block))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "preference_dataset")
    model = helpers.tiny_reward_model(trained_max_length=32)
    with caplog.at_level("WARNING", logger="rewardkit.trl_interop"):
        eval(compile(ast.Expression(call), "README.md", "eval"),  # the README's own call, as printed
             {"preference_dataset": preference_dataset, "rows": ROWS, "tokenizer": tokenizer, "model": model})
    assert "longer than the 32 this model was trained at" in caplog.text


def test_preference_dataset_longer_than_the_trained_length_is_warned_about(tokenizer, caplog):
    """`score` and `evaluate` warn of a max_length above the model's `trained_max_length`;
    `preference_dataset` cut pairs longer without a word, and the model TRL trained on them was
    then scored (RewardScorer, evaluate, the card) at the shorter length its config still named."""
    config = helpers.tiny_reward_model(trained_max_length=32).config
    with caplog.at_level("WARNING", logger="rewardkit.trl_interop"):
        preference_dataset(ROWS, tokenizer, model_config=config)  # the trained length itself
        preference_dataset(ROWS, tokenizer, max_length=16, model_config=config)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="rewardkit.trl_interop"):
        preference_dataset(ROWS, tokenizer, max_length=64, model_config=config)
    assert "cuts pairs at 64 tokens, longer than the 32 this model was trained at" in caplog.text
    assert "model.config.trained_max_length = 64" in caplog.text


def test_trl_drops_pairs_longer_than_its_max_length_unless_it_is_none(tmp_path):
    """README: `preference_dataset` pairs longer than `RewardConfig.max_length` (default 1024) are
    dropped by TRL's length filter, not cut; `RewardConfig(max_length=None)` keeps them all."""
    from transformers import GPT2Config

    from modeling_reward import RewardConfig, RewardModel

    tokenizer = _word_tokenizer(bos_in_template=False)
    backbone = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=2048,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
    rows = [{"prompt": "what is two plus two ?", "chosen": "four " * n, "rejected": "five"} for n in (10, 1100)]
    dataset = preference_dataset(rows, tokenizer, max_length=1536, model_config=backbone)
    assert [len(ids) for ids in dataset["chosen_ids"]] == [16, 1106]  # both fit preference_dataset's 1536

    def kept(**overrides):
        model = RewardModel(RewardConfig(backbone_config=backbone))
        return len(trl.RewardTrainer(model=model, args=_trl_args(tmp_path, **overrides), train_dataset=dataset,
                                     processing_class=tokenizer, data_collator=PreferenceCollator(0)).train_dataset)

    assert kept() == 1  # TRL's default max_length 1024 dropped the long pair
    assert kept(max_length=None) == 2


def test_trl_raw_text_path_is_not_how_our_model_reads_pairs(tmp_path, tokenizer):
    """The pitfall documented in the README: TRL on raw text needs an EOS token (BERT has none),
    concatenates prompt + response without [SEP] and ends in a doubled [SEP]."""
    from datasets import Dataset

    raw = Dataset.from_list([{k: v for k, v in row.items() if k != "margin"} for row in ROWS])
    with pytest.raises(TypeError):  # `chosen.endswith(None)`: BERT tokenizers have no eos_token
        trl.RewardTrainer(model=helpers.tiny_reward_model(), args=_trl_args(tmp_path), train_dataset=raw,
                          processing_class=tokenizer)
    trainer = trl.RewardTrainer(model=helpers.tiny_reward_model(), args=_trl_args(tmp_path, eos_token="[SEP]"),
                                train_dataset=raw, processing_class=tokenizer)
    trl_ids = trainer.train_dataset[0]["chosen_ids"]
    pair_ids = tokenizer(ROWS[0]["prompt"], ROWS[0]["chosen"])["input_ids"]
    assert trl_ids[-2:] == [tokenizer.sep_token_id] * 2 and trl_ids != pair_ids


@pytest.fixture(scope="module")
def published(tmp_path_factory, tokenizer):
    """A tiny trained-looking model, saved and turned into a Hub folder."""
    from rewardkit.publishing import build_publish_folder

    root = tmp_path_factory.mktemp("trl_published")
    torch.manual_seed(1)
    model = helpers.tiny_reward_model()
    model.score.bias.data.fill_(0.5)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return build_publish_folder(root / "model", root / "hub", repo_id="someone/tiny-rm")


def test_published_folder_loaded_like_trl_online_trainers_gives_scorer_rewards(published, tmp_path):
    # trl/trainer/grpo_trainer.py (and rloo_trainer.py), TRL 1.16:
    #   AutoModelForSequenceClassification.from_pretrained(reward_func, num_labels=1, trust_remote_code=...)
    code = f"""
    import json, torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path = {str(published)!r}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    batch = tokenizer({PROMPTS!r}, {COMPLETIONS!r}, padding=True, return_tensors="pt")
    with torch.inference_mode():
        print(json.dumps(model(**batch).logits[:, 0].tolist()))
    """
    rewards = helpers.run_fresh_python(code, tmp_path)
    assert rewards == pytest.approx(RewardScorer(str(published)).score(PROMPTS, COMPLETIONS), abs=1e-5)


def test_grpo_loads_our_folder_by_path_and_reward_function_scores_pairs(published, tmp_path, tokenizer):
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel

    policy_dir = tmp_path / "policy"
    policy_tokenizer = type(tokenizer).from_pretrained(helpers.minilm_path())
    policy_tokenizer.eos_token, policy_tokenizer.bos_token = "[SEP]", "[CLS]"  # generation needs an EOS
    GPT2LMHeadModel(GPT2Config(vocab_size=helpers.BERT_VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                               eos_token_id=policy_tokenizer.eos_token_id, bos_token_id=policy_tokenizer.bos_token_id,
                               pad_token_id=policy_tokenizer.pad_token_id)).save_pretrained(policy_dir)
    policy_tokenizer.save_pretrained(policy_dir)
    scorer_function = reward_function(str(published))
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), trust_remote_code=True, bf16=False, max_steps=1,
                          per_device_train_batch_size=2, num_generations=2, max_completion_length=4,
                          report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=1)
    trainer = trl.GRPOTrainer(model=str(policy_dir), reward_funcs=[str(published), scorer_function], args=args,
                              train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS[:2]]))
    assert type(trainer.reward_funcs[0]).__module__.startswith("transformers_modules")  # our remote code, by path

    expected = RewardScorer(str(published)).score(PROMPTS, COMPLETIONS)
    inputs = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    rewards = trainer._calculate_rewards(inputs, PROMPTS, COMPLETIONS, [[0]] * len(PROMPTS))
    assert rewards[:, 1].tolist() == pytest.approx(expected, abs=1e-5)  # rewardkit's reward function: right
    # GRPO's own path scores `prompt + completion` without [CLS]/[SEP]: not what an encoder pair
    # model was trained on (README: use reward_function for encoder backbones).
    assert max(abs(a - b) for a, b in zip(rewards[:, 0].tolist(), expected)) > 1e-3
    trainer.train()  # and a real GRPO step runs with both reward sources
    assert trainer.state.global_step == 1


def test_reward_function_renders_conversations_like_rewardkit_training_data(published):
    scorer = RewardScorer(str(published))
    function = reward_function(scorer, name="rm")
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    completion = [{"role": "assistant", "content": "4"}]
    assert as_pair(prompt, completion) == ("System: Be brief.\nUser: What is 2+2?\nAssistant:", "4")
    assert as_pair("plain prompt", "plain answer") == ("plain prompt", "plain answer")
    assert function.__name__ == "rm"
    assert function([prompt], [completion]) == pytest.approx(scorer.score(*map(list, zip(as_pair(prompt, completion)))))
    json.dumps(function(PROMPTS, COMPLETIONS))  # plain floats, as TRL expects


def test_reward_function_refuses_scorer_options_beside_a_ready_scorer(published):
    """`reward_function(scorer, normalize=True)` scored without normalizing: the options were dropped."""
    with pytest.raises(TypeError, match=r"\['normalize'\].*RewardScorer\(\.\.\.\)"):
        reward_function(RewardScorer(str(published)), normalize=True)


def _word_tokenizer(bos_in_template: bool):
    """A fast word-level tokenizer: GPT-2 / Qwen style (no special tokens added) or Llama / Mistral /
    OPT style (a BOS added by the post-processor; Llama's pair template is `<bos> $A <bos> $B`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = "<pad> <bos> <eos> what is two plus four five of course name a colour blue ? ,".split()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos_in_template:
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


@pytest.mark.parametrize("bos_in_template", [False, True], ids=["gpt2-like", "llama-like"])
def test_grpo_model_path_matches_decoder_rewards_only_when_the_tokenizer_adds_no_special_tokens(
        tmp_path, bos_in_template):
    """README: the model path in `reward_funcs` is right for decoders whose tokenizer adds nothing to a
    pair (GPT-2, Qwen); a BOS-adding tokenizer (Llama, Mistral, OPT) trained on `<bos> prompt <bos>
    response` but GRPO tokenizes `prompt + completion` with add_special_tokens=False: use
    reward_function there too."""
    from transformers import GPT2Config

    from modeling_reward import RewardConfig, RewardModel

    tokenizer = _word_tokenizer(bos_in_template)
    torch.manual_seed(0)
    model = RewardModel(RewardConfig(backbone_config=GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, pad_token_id=0))).eval()
    assert model.config.pooling == "last"
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    prompts = ["what is two plus two ?", "name a colour", "what is two plus two ?"]
    completions = [" four , of course", " blue", " five"]
    expected = RewardScorer(str(tmp_path / "rm")).score(prompts, completions)

    # trl/trainer/grpo_trainer.py, GRPOTrainer._calculate_rewards (TRL 1.16), for a model reward:
    texts = [p + c for p, c in zip(prompts, completions)]
    inputs = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        grpo = model(**inputs).logits[:, 0].tolist()

    assert reward_function(str(tmp_path / "rm"))(prompts, completions) == pytest.approx(expected, abs=1e-5)
    if bos_in_template:
        assert max(abs(a - b) for a, b in zip(grpo, expected)) > 1e-3
    else:
        assert grpo == pytest.approx(expected, abs=1e-5)


def test_preference_collator_pads_for_a_tokenizer_without_a_pad_token():
    """GPT-2 / Llama tokenizers have no pad token, so the README's `PreferenceCollator(tokenizer.pad_token_id)`
    gets None (TRL sets a pad token only later, in RewardTrainer.__init__): the first batch failed in
    torch with "'NoneType' object cannot be interpreted as an integer". The mask hides the padding."""
    from transformers import GPT2Config

    from modeling_reward import RewardConfig, RewardModel

    examples = [{"chosen_ids": [5, 6, 7, 8], "rejected_ids": [5, 9]}, {"chosen_ids": [3], "rejected_ids": [3, 4, 2]}]
    batch = PreferenceCollator(pad_token_id=None)(examples)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    torch.manual_seed(0)
    model = RewardModel(RewardConfig(backbone_config=GPT2Config(vocab_size=16, n_embd=32, n_layer=2, n_head=2,
                                                                n_positions=16))).eval()
    alone = [ids for side in ("chosen_ids", "rejected_ids") for ids in (e[side] for e in examples)]
    with torch.no_grad():
        padded = model(**batch).logits[:, 0].tolist()
        unpadded = [model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in alone]
    assert padded == pytest.approx(unpadded, abs=1e-5)
