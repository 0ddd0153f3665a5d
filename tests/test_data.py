"""rewardkit.data: every layout, every file format, every kind of invalid row, streaming."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardkit.data import (
    OBJECTIVES,
    RewardData,
    RewardDataError,
    SkipReport,
    iter_reward_rows,
    load_reward_data,
    parse_column_map,
)
from rewardkit.data_formats import render_conversation, split_transcripts

HH_1 = "\n\nHuman: hi\n\nAssistant: hello there"
HH_2 = "\n\nHuman: hi\n\nAssistant: go away"
PAIR = {"prompt": "p", "chosen": "good", "rejected": "bad"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list], bom: bool = False) -> Path:
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def load_rows(tmp_path: Path, rows: list, **kwargs) -> RewardData:
    return load_reward_data(write_jsonl(tmp_path / "data.jsonl", rows), **kwargs)


# ---- layouts --------------------------------------------------------------------------------

def test_pairwise_explicit_with_margin(tmp_path):
    data = load_rows(tmp_path, [{**PAIR, "margin": 2}, {**PAIR, "margin": "0.5"}, {**PAIR, "margin": None}])
    assert data.objective == "pairwise" and len(data) == 3
    assert data.rows[0] == {"prompt": "p", "chosen": "good", "rejected": "bad", "margin": 2.0}
    assert [row["margin"] for row in data.rows] == [2.0, 0.5, None]
    assert data.detected_layout.startswith("pairwise (prompt/chosen/rejected")
    assert data.sources == [str(tmp_path / "data.jsonl")]
    assert data.skipped.total == 0


def test_pairwise_implicit_hh_transcripts(tmp_path):
    multi_a = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:  d is best"
    multi_b = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d is worst"
    data = load_rows(tmp_path, [{"chosen": HH_1, "rejected": HH_2}, {"chosen": multi_a, "rejected": multi_b}])
    assert data.detected_layout == "pairwise (implicit prompt, HH-RLHF transcripts)"
    assert data.rows[0] == {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "hello there",
                            "rejected": "go away", "margin": None}
    assert data.rows[1]["prompt"] == "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"
    assert (data.rows[1]["chosen"], data.rows[1]["rejected"]) == ("d is best", "d is worst")


def test_implicit_prompt_without_markers_splits_at_whitespace():
    assert split_transcripts("The answer is yes", "The answer is no") == ("The answer is ", "yes", "no")
    assert split_transcripts("Theorem one", "Theory two") == ("", "Theorem one", "Theory two")
    assert split_transcripts("abc", "xyz") == ("", "abc", "xyz")


@pytest.mark.parametrize("name", ["query", "input", "context", "Prompt"])
def test_implicit_prompt_refuses_a_prompt_in_a_column_it_does_not_read(tmp_path, name):
    """Without this, {"query": ..., "chosen", "rejected"} trained every pair with prompt ''."""
    row = {name: "What is 1+1?", "chosen": "It is 2.", "rejected": "Probably 3."}
    with pytest.raises(RewardDataError) as info:
        load_rows(tmp_path, [row])
    assert (info.value.row, info.value.column, info.value.reason) == (1, name, "no prompt")
    assert f"--columns prompt={name}" in str(info.value)
    data = load_rows(tmp_path, [row, row], columns=f"prompt={name}")
    assert data.rows[0]["prompt"] == "What is 1+1?"


def test_implicit_prompt_with_metadata_columns_loads_and_warns_once(tmp_path, caplog):
    rows = [{"id": f"r{i}", "source": "web", "chosen": HH_1, "rejected": HH_2} for i in range(3)]
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        data = load_rows(tmp_path, rows)
    assert len(data) == 3 and data.rows[0]["prompt"] == "\n\nHuman: hi\n\nAssistant:"
    warnings = [r.getMessage() for r in caplog.records if "no prompt column" in r.getMessage()]
    assert len(warnings) == 1 and "'id', 'source'" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        load_rows(tmp_path, [{"chosen": HH_1, "rejected": HH_2}])  # nothing unread: no warning
    assert not caplog.records


def test_prompt_less_pairs_with_ids_or_tags_still_load(tmp_path):
    """Pairs without any prompt exist; an id, tag or source beside them is not a prompt under
    another name (a value of several words, or a usual prompt name, would be)."""
    rows = [{"id": f"r{i}", "source": "hh-rlhf", "chosen": f"A fine answer {i}.", "rejected": "Bad one."}
            for i in range(2)]
    data = load_rows(tmp_path, rows)
    assert [row["prompt"] for row in data.rows] == ["", ""]
    worded = [{"note": "what is the capital of France", "chosen": "Paris.", "rejected": "Lyon."}]
    with pytest.raises(RewardDataError) as info:
        load_rows(tmp_path, worded)
    assert info.value.column == "note" and info.value.reason == "no prompt"


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "csv"])
@pytest.mark.parametrize("objective", [None, "pairwise"])
def test_a_null_first_prompt_is_a_missing_value_not_implicit_prompts(tmp_path, suffix, objective):
    """A null prompt in row 1 once switched the whole file to prefix splitting (prompt '')."""
    rows = [{"prompt": None, "chosen": "I like it", "rejected": "I hate it"}, PAIR]
    path = tmp_path / f"d.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, rows)
    elif suffix == "csv":
        write_csv(path, list(PAIR), [["", "I like it", "I hate it"], list(PAIR.values())])
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RewardDataError) as info:
        load_reward_data(path, objective=objective)
    assert (info.value.row, info.value.column) == (1, "prompt")
    assert "the value is empty or null" in str(info.value) and info.value.reason == "empty field"
    data = load_reward_data(path, objective=objective, skip_invalid=True)
    assert data.rows == [{**PAIR, "margin": None}] and data.skipped.total == 1
    assert "implicit" not in data.detected_layout


def test_conversational_with_prompt_column(tmp_path):
    row = {"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}],
           "chosen": [{"role": "assistant", "content": "hello"}],
           "rejected": [{"role": "assistant", "content": "bye"}]}
    data = load_rows(tmp_path, [row])
    assert data.rows[0] == {"prompt": "System: be kind\nUser: hi\nAssistant:", "chosen": "hello",
                            "rejected": "bye", "margin": None}
    assert "conversational" in data.detected_layout


def test_conversational_implicit_prompt(tmp_path):
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
             {"role": "user", "content": "how?"}]
    row = {"chosen": turns + [{"role": "assistant", "content": "well"}],
           "rejected": turns + [{"role": "assistant", "content": "badly"}]}
    data = load_rows(tmp_path, [row])
    assert data.rows[0]["prompt"] == "User: hi\nAssistant: yo\nUser: how?\nAssistant:"
    assert (data.rows[0]["chosen"], data.rows[0]["rejected"]) == ("well", "badly")
    assert data.detected_layout == "pairwise (implicit prompt, conversational messages)"
    assert render_conversation(()) == ""


@pytest.mark.parametrize("prompt, expected", [
    ("hi", "User: hi\nAssistant:"),  # HuggingFaceH4/ultrafeedback_binarized
    ([{"role": "user", "content": "hi"}], "User: hi\nAssistant:"),
    ("be brief", "User: be brief\nUser: hi\nAssistant:"),  # a prompt the conversation lacks stays
])
def test_a_prompt_repeated_in_full_conversations_is_read_once(tmp_path, prompt, expected):
    """UltraFeedback rows give the user's message as `prompt` text and as the first message of
    full chosen/rejected conversations: the prompt read "User: hi\nUser: hi\nAssistant:"."""
    def conversation(reply):
        return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]
    row = {"prompt": prompt, "prompt_id": "0f3a", "chosen": conversation("hello"), "rejected": conversation("bye"),
           "score_chosen": 8.0, "score_rejected": 3.0}
    assert load_rows(tmp_path, [row]).rows[0]["prompt"] == expected
    mse = {"prompt": prompt, "completion": conversation("hello"), "reward": 1}
    assert load_rows(tmp_path, [mse]).rows[0]["prompt"] == expected


@pytest.mark.parametrize("chosen, rejected, fragment", [
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
     [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}], "differ before"),
    ([{"role": "user", "content": "a"}], [{"role": "assistant", "content": "y"}], "must be the assistant"),
    ([{"role": "assistant"}], [{"role": "assistant", "content": "y"}], "'role' and 'content'"),
])
def test_conversational_errors(tmp_path, chosen, rejected, fragment):
    with pytest.raises(RewardDataError, match=fragment):
        load_rows(tmp_path, [{"chosen": chosen, "rejected": rejected}])


def test_aira_and_stackexchange_aliases(tmp_path):
    aira = load_rows(tmp_path, [{"instruction": "q", "chosen_response": "a", "rejected_response": "b"}])
    assert aira.rows == [{"prompt": "q", "chosen": "a", "rejected": "b", "margin": None}]
    assert "Aira" in aira.detected_layout
    stack = load_rows(tmp_path, [{"qid": 1, "question": "q", "response_j": "good", "response_k": "bad"}])
    assert stack.rows == [{"prompt": "q", "chosen": "good", "rejected": "bad", "margin": None}]
    assert "StackExchange" in stack.detected_layout


@pytest.mark.parametrize("response_col, reward_col", [("completion", "reward"), ("response", "score")])
def test_scalar_layouts(tmp_path, response_col, reward_col):
    data = load_rows(tmp_path, [{"prompt": "p", response_col: "r", reward_col: 0.25},
                                {"prompt": "p", response_col: "s", reward_col: -3}])
    assert data.objective == "mse"
    assert data.rows == [{"prompt": "p", "response": "r", "reward": 0.25},
                         {"prompt": "p", "response": "s", "reward": -3.0}]
    assert data.detected_layout == f"mse (prompt/{response_col}/{reward_col})"


def test_ranked_layouts(tmp_path):
    rows = [{"prompt": "p", "responses": ["a", "b", "c"]},
            {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [3, 1, 2]},
            {"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.1, 0.9, 0.2]}]
    data = load_rows(tmp_path, rows)
    assert data.objective == "ranking"
    assert [row["responses"] for row in data.rows] == [["a", "b", "c"], ["b", "c", "a"], ["b", "c", "a"]]


def test_ranked_data_ordered_by_different_columns_says_so(tmp_path):
    """The layout (training summary, model card) named the first row's order alone: a file of rows
    ranked by scores or by list order read "ranking (prompt/responses + ranks)"."""
    rows = [{"prompt": "p", "responses": ["a", "b"], "ranks": [2, 1]},
            {"prompt": "p", "responses": ["a", "b"], "scores": [0.1, 0.9]},
            {"prompt": "p", "responses": ["a", "b"]}]
    assert load_rows(tmp_path, rows).detected_layout == ("ranking (prompt/responses; order from ranks, scores or "
                                                         "the list order (best first), by row)")
    assert load_rows(tmp_path, rows[:2]).detected_layout == "ranking (prompt/responses; order from ranks or scores, by row)"
    assert load_rows(tmp_path, [rows[1], rows[1]]).detected_layout == "ranking (prompt/responses + scores)"


def test_ranks_and_scores_that_agree_are_read_by_the_ranks(tmp_path):
    """Both columns in one row: the ranks order it, and scores may tie where the ranks do not."""
    rows = [{"prompt": "p", "responses": ["a", "b", "c"], "ranks": [3, 1, 2], "scores": [0.1, 0.9, 0.1]}]
    assert load_rows(tmp_path, rows).rows == [{"prompt": "p", "responses": ["b", "c", "a"]}]
    with pytest.raises(RewardDataError, match=r"'ranks' put response 2 above response 3 but 'scores' put it below"):
        load_rows(tmp_path, [{**rows[0], "scores": [0.1, 0.5, 0.9]}])


def test_score_mode(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "response": "r"},
                                              {"prompt": "p", "completion": "c", "reward": 1}])
    data = load_reward_data(path, objective="score")
    assert data.objective == "score"
    assert data.rows == [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": "c"}]
    with pytest.raises(RewardDataError, match="objective='score'") as info:
        load_reward_data(path)  # no reward: not trainable, and the message says how to score
    assert "use `rewardkit score --data FILE --output OUT.jsonl`" in str(info.value)  # evaluate has no objective='score'
    with pytest.raises(RewardDataError, match="rewardkit evaluate"):
        load_rows(tmp_path, [PAIR], objective="score")


# ---- formats ------------------------------------------------------------------------------

def test_json_shapes(tmp_path):
    rows = [PAIR, {**PAIR, "chosen": "fine"}]
    for name, document in [("array.json", rows), ("wrapped.json", {"data": rows}),
                           ("columns.json", {key: [r[key] for r in rows] for key in PAIR})]:
        path = tmp_path / name
        path.write_text(json.dumps(document))
        data = load_reward_data(path)
        assert [row["chosen"] for row in data.rows] == ["good", "fine"], name
    (tmp_path / "bad.json").write_text(json.dumps([PAIR, {**PAIR, "chosen": ""}]))
    with pytest.raises(RewardDataError) as info:
        load_reward_data(tmp_path / "bad.json")
    assert (info.value.row, info.value.column) == (2, "chosen") and "element 2" in str(info.value)


@pytest.mark.parametrize("orient", ["columns", "split"])
def test_json_written_by_pandas_to_json(tmp_path, orient):
    """`df.to_json(path)` (orient "columns", pandas' default: every column an object keyed by the
    index) was refused as an unsupported shape; orient "split" read its "data" array of lists as
    rows that are not objects."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([PAIR, {**PAIR, "chosen": "fine", "margin": 1.5}], index=[10, 2])
    frame.to_json(tmp_path / "frame.json", orient=orient)
    data = load_reward_data(tmp_path / "frame.json")
    assert [(row["chosen"], row["margin"]) for row in data.rows] == [("good", None), ("fine", 1.5)]


def test_score_output_read_as_mse_data_is_warned_about_once(tmp_path, caplog):
    """`evaluate` on a `score --data` output took the model's own scores as mse targets without a
    word. It is warned about, not refused: a 'score' column of annotated rewards is legitimate."""
    def warnings_for(rows, **kwargs):
        caplog.clear()
        with caplog.at_level("WARNING", logger="rewardkit.data"):
            data = load_rows(tmp_path, rows, **kwargs)
        assert data.objective == "mse" and len(data.rows) == len(rows)
        return [r.getMessage() for r in caplog.records if "rewardkit score --data" in r.getMessage()]

    scored = [{"row": i, "prompt": "p", "response": f"r{i}", "score": 0.5 * i, "raw_reward": 0.25 * i} for i in (1, 2)]
    assert len(warnings_for(scored)) == 1
    assert len(warnings_for([{k: v for k, v in r.items() if k != "raw_reward"} for r in scored])) == 1  # older output
    assert len(warnings_for([{"file": "a.jsonl", **r} for r in scored])) == 1  # a scored folder
    assert len(warnings_for([{**r, "response_cut": True} for r in scored])) == 1  # lines of cut texts
    assert warnings_for([{"prompt": "p", "response": "r", "score": 3.0}]) == []  # annotated scores, no row id
    assert warnings_for([{"row": 1, "prompt": "p", "response": "r", "score": 3.0, "annotator": "x"}]) == []
    assert warnings_for([{**r, "reward": 1.0} for r in scored]) == []
    assert warnings_for(scored, columns="reward=score") == []  # scores meant as targets, said so


def test_split_picks_a_key_of_a_json_document(tmp_path, caplog):
    """--split test read the "train" array and only warned that --split is ignored."""
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": [PAIR], "test": [{**PAIR, "prompt": "t1"}, {**PAIR, "prompt": "t2"}]}))
    assert [row["prompt"] for row in load_reward_data(path, split="test").rows] == ["t1", "t2"]
    assert [row["prompt"] for _, row in iter_reward_rows(path, split="test")] == ["t1", "t2"]
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        assert len(load_reward_data(path)) == 1  # no split: "train", and it says so (it could be eval data)
    messages = [r.getMessage() for r in caplog.records]
    assert any("also holds the arrays 'test'; read the 'train' array" in m for m in messages)
    assert not any("is ignored for local data" in m for m in messages)


def test_a_split_a_json_document_lacks_is_refused_not_read_as_train(tmp_path, caplog):
    """`evaluate --split validation` on {"train": [...], "test": [...]} evaluated on the training
    rows with a log warning, where a folder of split files and a DatasetDict refuse the split."""
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": [PAIR], "test": [{**PAIR, "prompt": "t1"}]}))
    with pytest.raises(RewardDataError, match="holds the arrays 'train', 'test', not 'validation'; pick one"):
        load_reward_data(path, split="validation")
    (tmp_path / "train_only.json").write_text(json.dumps({"train": [PAIR]}))
    with pytest.raises(RewardDataError, match="holds the arrays 'train', not 'test'"):
        load_reward_data(tmp_path / "train_only.json", split="test")
    (tmp_path / "rows.json").write_text(json.dumps({"data": [PAIR]}))  # no splits: read, and said
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        assert len(load_reward_data(tmp_path / "rows.json", split="test")) == 1
    assert "has no 'test' array; read the 'data' array instead" in caplog.text


def test_split_in_a_folder_of_json_documents_is_used_without_an_ignored_warning(tmp_path, caplog):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"train": [PAIR], "test": [{**PAIR, "prompt": "t1"}]}))
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        assert [row["prompt"] for row in load_reward_data(folder, split="test").rows] == ["t1"]
    assert "is ignored" not in caplog.text
    (folder / "a.json").unlink()  # JSONL only: then --split has nothing to pick
    write_jsonl(folder / "b.jsonl", [PAIR])
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        load_reward_data(folder, split="test")
    assert "--split test is ignored for local data" in caplog.text


def test_a_column_named_twice_is_refused_not_read_as_the_last(tmp_path):
    """json kept the last of two equal keys silently; so did a Parquet file with two fields."""
    twice = '{"prompt": "p", "chosen": "a", "chosen": "z", "rejected": "b"}'
    for name, text, where in [("d.jsonl", f"{json.dumps(PAIR)}\n{twice}\n", "line 2"),
                              ("d.json", f"[{json.dumps(PAIR)}, {twice}]", "element 2")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(RewardDataError, match="more than once") as info:
            load_reward_data(tmp_path / name)
        assert (info.value.row, info.value.column, info.value.reason) == (2, "chosen", "duplicate column")
        assert where in str(info.value)
        assert load_reward_data(tmp_path / name, skip_invalid=True).skipped.counts == {"duplicate column": 1}
    (tmp_path / "cols.json").write_text('{"prompt": ["p"], "chosen": ["a"], "chosen": ["z"], "rejected": ["b"]}')
    with pytest.raises(RewardDataError, match="more than once") as info:
        load_reward_data(tmp_path / "cols.json")
    assert info.value.column == "chosen"
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays([pa.array(["p"]), pa.array(["a"]), pa.array(["z"]), pa.array(["b"])],
                                 names=["prompt", "chosen", "chosen", "rejected"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(RewardDataError, match="more than one column") as info:
        load_reward_data(tmp_path / "d.parquet", skip_invalid=True)
    assert info.value.column == "chosen"


def test_csv_with_bom_and_quoted_newline(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["prompt", "chosen", "rejected", "margin"],
                     [["p", "line one\nline two", "bad", "0.5"], ["q", "ok", "", ""]], bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with pytest.raises(RewardDataError) as info:
        load_reward_data(path)
    err = info.value
    assert (err.source, err.row, err.column) == (str(path), 2, "rejected")
    assert "data row 2 (line 4)" in str(err)  # header is line 1; row 1 spans lines 2-3
    data = load_reward_data(path, skip_invalid=True)
    assert data.rows == [{"prompt": "p", "chosen": "line one\nline two", "rejected": "bad", "margin": 0.5}]


def test_a_quote_left_open_to_the_end_of_a_csv_file_is_refused_not_read_as_one_field(tmp_path):
    """A missing closing quote in the last column swallowed every later line into that field:
    three data rows loaded as one, whose 'rejected' held the other two, without a word (a quote
    left open in another column was caught only because the field count came out wrong)."""
    path = tmp_path / "open.csv"
    path.write_text('prompt,chosen,rejected\np1,a,"b\np2,a,b\np3,a,b\n', encoding="utf-8")
    with pytest.raises(RewardDataError, match="closing quote .* is missing.*lines 2-4") as info:
        load_reward_data(path)
    assert (info.value.row, info.value.where) == (1, "data row 1 (line 2)")
    with pytest.raises(RewardDataError, match="no valid rows"):
        load_reward_data(path, skip_invalid=True)
    path.write_text('prompt,chosen,rejected\np1,a,b\np2,a,"b\n', encoding="utf-8")  # on the last line
    data = load_reward_data(path, skip_invalid=True)
    assert len(data) == 1 and data.skipped.counts == {"unclosed quote": 1}
    path.write_text('prompt,chosen,"rejected\np1,a,b\n', encoding="utf-8")
    with pytest.raises(RewardDataError, match="header .*closing quote"):
        load_reward_data(path)


def test_csv_cells_holding_message_lists_are_read_as_messages_or_refused(tmp_path):
    """DataFrame.to_csv of conversational pairs (UltraFeedback) writes each message list as a
    Python repr, "[{'content': 'q', 'role': 'user'}, ...]": it trained as that text, brackets and
    all, without a word. Written as JSON, a cell is read as messages, as ranked lists are."""
    def turns(reply: str) -> list[dict]:
        return [{"content": "q", "role": "user"}, {"content": reply, "role": "assistant"}]

    path = write_csv(tmp_path / "repr.csv", ["prompt", "chosen", "rejected"], [["q", str(turns("good")), str(turns("bad"))]])
    with pytest.raises(RewardDataError, match="Python list .*to_csv.*JSONL or Parquet") as info:
        load_reward_data(path)
    assert (info.value.row, info.value.column) == (1, "chosen")
    path = write_csv(tmp_path / "json.csv", ["prompt", "chosen", "rejected"],
                     [["q", json.dumps(turns("good")), json.dumps(turns("bad"))]])
    assert load_reward_data(path).rows == [{"prompt": "User: q\nAssistant:", "chosen": "good", "rejected": "bad",
                                            "margin": None}]


def test_csv_numbers_lists_and_big_fields(tmp_path):
    big = "x" * 300_000  # over csv's default 128 KiB field limit
    path = write_csv(tmp_path / "r.csv", ["prompt", "responses", "scores"],
                     [[big, json.dumps(["a", "b"]), "[1, 2]"]])
    assert load_reward_data(path).rows == [{"prompt": big, "responses": ["b", "a"]}]
    path = write_csv(tmp_path / "m.csv", ["prompt", "completion", "reward"], [["p", "c", "0.5"]])
    assert load_reward_data(path).rows[0]["reward"] == 0.5
    (tmp_path / "cr.csv").write_bytes(b"prompt,completion,reward\rp,c,1\rq,d,2\r")  # old Mac line ends
    assert [row["reward"] for row in load_reward_data(tmp_path / "cr.csv").rows] == [1.0, 2.0]


BLANK_CELLS = [  # CSV rows with a blank alias or optional cell, and the same rows with nulls
    (["prompt", "responses", "ranks", "scores"], ["p", '["a", "b"]', "", "[0.1, 0.9]"],
     {"prompt": "p", "responses": ["a", "b"], "ranks": None, "scores": [0.1, 0.9]}),
    (["prompt", "completion", "response", "reward"], ["p", "", "resp", "1"],
     {"prompt": "p", "completion": None, "response": "resp", "reward": 1}),
    (["prompt", "chosen", "rejected", "response_j", "response_k"], ["p", "", " ", "a", "b"],
     {"prompt": "p", "chosen": None, "rejected": None, "response_j": "a", "response_k": "b"}),
]


@pytest.mark.parametrize("header, cells, row", BLANK_CELLS, ids=["ranks", "completion", "chosen"])
def test_blank_csv_cells_read_like_nulls(tmp_path, header, cells, row):
    """A blank `ranks` beside filled `scores` was 'must be a list, got text'; a blank
    `completion` beside `response` was 'the value is empty'; JSONL with nulls loaded both."""
    from_csv = load_reward_data(write_csv(tmp_path / "d.csv", header, [cells]))
    assert from_csv.rows == load_rows(tmp_path, [row]).rows


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_an_empty_reward_in_the_first_row_is_named_as_such(tmp_path, suffix):
    """It was 'cannot tell what kind of reward data this is ... add a reward column'."""
    rows = [{"prompt": "p", "completion": "c", "reward": None}, {"prompt": "p", "completion": "d", "reward": 1}]
    if suffix == "csv":
        path = write_csv(tmp_path / "d.csv", list(rows[0]), [["p", "c", ""], ["p", "d", "1"]])
    else:
        path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(RewardDataError, match="the value is empty or null") as info:
        load_reward_data(path)
    assert (info.value.row, info.value.column, info.value.reason) == (1, "reward", "empty field")
    data = load_reward_data(path, skip_invalid=True)
    assert data.objective == "mse" and len(data) == 1 and data.skipped.counts == {"empty field": 1}


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["p", "q"], "responses": [["a", "b"], ["c"]]}), path)
    with pytest.raises(RewardDataError) as info:
        load_reward_data(path)
    assert (info.value.row, info.value.column) == (2, "responses") and "row 2" in str(info.value)
    assert load_reward_data(path, skip_invalid=True).rows == [{"prompt": "p", "responses": ["a", "b"]}]


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(PAIR).encode() + b"\n"))
    assert len(load_reward_data(path)) == 1
    (tmp_path / "broken.jsonl.gz").write_bytes(gzip.compress(b"{}" * 100)[:20])
    with pytest.raises(RewardDataError, match="cannot read"):
        load_reward_data(tmp_path / "broken.jsonl.gz")


def test_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [{**PAIR, "chosen": "second"}])
    write_csv(folder / "a.csv", ["prompt", "chosen", "rejected"], [["p", "first", "bad"]])
    (folder / "README.md").write_text("not data")
    data = load_reward_data(folder)
    assert [row["chosen"] for row in data.rows] == ["first", "second"]
    assert data.sources == [str(folder / "a.csv"), str(folder / "b.jsonl")]
    write_jsonl(folder / "c.jsonl", [{"prompt": "p", "completion": "c", "reward": 1}])
    with pytest.raises(RewardDataError, match="rows before it are pairwise") as info:
        load_reward_data(folder)
    assert info.value.source == str(folder / "c.jsonl") and info.value.row == 1


def test_a_folder_of_split_named_files_reads_one_split(tmp_path, caplog):
    """A Hub dataset's data/ folder (train-00000-of-00001.parquet beside test-...) was read whole:
    the test split trained on, and --split ignored with a warning that it does nothing locally."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train-00000-of-00002.jsonl", [{**PAIR, "chosen": "t1"}])
    write_jsonl(folder / "train-00001-of-00002.jsonl", [{**PAIR, "chosen": "t2"}])
    write_jsonl(folder / "test.jsonl", [{**PAIR, "chosen": "held out"}])
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        assert [row["chosen"] for row in load_reward_data(folder).rows] == ["t1", "t2"]
    assert "reading the 2 file(s) of 'train' (left out: test.jsonl)" in caplog.text
    assert [row["chosen"] for row in load_reward_data(folder, split="test").rows] == ["held out"]
    with pytest.raises(RewardDataError, match="splits 'test', 'train'.*none of split 'dev'"):
        load_reward_data(folder, split="dev")
    (folder / "test.jsonl").unlink()  # one split's files alone are just a folder of files
    assert len(load_reward_data(folder)) == 2


def test_sharded_files_are_split_files_whatever_the_split_name(tmp_path, caplog):
    """Shard names were split files only for a few split names and without the hash suffix the Hub's
    Parquet conversion adds: UltraFeedback's data/ (train_prefs-00000-of-00001.parquet beside
    test_prefs-..., train_sft-...) was read whole, its test splits trained on, and --split
    train_prefs ignored; so were train-/test-00000-of-00001-<hash>.parquet, without a word."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train_prefs", "test_prefs", "train_sft"):
        write_jsonl(folder / f"{split}-00000-of-00001.jsonl", [{**PAIR, "chosen": split}])
    assert [row["chosen"] for row in load_reward_data(folder, split="test_prefs").rows] == ["test_prefs"]
    with pytest.raises(RewardDataError, match="splits 'test_prefs', 'train_prefs', 'train_sft' .by their names.; pick one"):
        load_reward_data(folder)  # no "train" among them: said, not all read as one
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    write_jsonl(hashed / "test-00000-of-00001-4746b2ea8a2a1d6d.jsonl", [{**PAIR, "chosen": "held out"}])
    write_jsonl(hashed / "train-00000-of-00001-0f4b3c27a8e1d9b2.jsonl", [{**PAIR, "chosen": "t"}])
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        assert [row["chosen"] for row in load_reward_data(hashed).rows] == ["t"]
    assert "left out: test-00000-of-00001-4746b2ea8a2a1d6d.jsonl" in caplog.text


def test_an_empty_part_file_beside_full_ones_is_skipped_with_a_warning(tmp_path, caplog):
    """Spark and other writers leave 0-byte part files; one used to stop the whole folder."""
    folder = tmp_path / "parts"
    folder.mkdir()
    write_jsonl(folder / "part-000.jsonl", [PAIR])
    (folder / "part-001.jsonl").write_text("")
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        assert len(load_reward_data(folder)) == 1
    assert "1 of 2 files hold no rows and were skipped: part-001.jsonl" in caplog.text
    (folder / "part-000.jsonl").write_text("")
    with pytest.raises(RewardDataError, match="none of its files holds a row"):
        load_reward_data(folder)


def test_a_datasets_save_to_disk_folder_loads(tmp_path):
    """A `datasets` save_to_disk folder used to fail as 'dataset_info.json: unsupported shape'."""
    import datasets

    rows = [PAIR, {**PAIR, "chosen": "another good answer"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    assert [row["chosen"] for row in load_reward_data(tmp_path / "one").rows] == [r["chosen"] for r in rows]
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                                   "test": datasets.Dataset.from_list(rows[:1])})
    splits.save_to_disk(str(tmp_path / "dict"))
    assert len(load_reward_data(tmp_path / "dict")) == 2  # "train" by default
    assert len(load_reward_data(tmp_path / "dict", split="test")) == 1
    with pytest.raises(RewardDataError, match="splits 'train', 'test', not 'dev'; pick one with --split"):
        load_reward_data(tmp_path / "dict", split="dev")


@pytest.mark.parametrize("name, content, fragment", [
    ("d.txt", "x", "unsupported file type '.txt'"),
    ("d.jsonl", "", "no rows"),
    ("d.jsonl", "\n\n", "no rows"),
    ("d.json", "[]", "no rows"),
    ("d.csv", "prompt,chosen,rejected\n", "no rows"),
    ("d.json", '"text"', "unsupported shape"),
    ("d.parquet", "not parquet", "Parquet"),
])
def test_file_level_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_text(content)
    with pytest.raises(RewardDataError, match=fragment) as info:
        load_reward_data(tmp_path / name)
    assert info.value.source == str(tmp_path / name)


def test_missing_path_empty_folder_and_hub_offline(tmp_path):
    with pytest.raises(RewardDataError, match="no such file"):
        load_reward_data(tmp_path / "nope.jsonl")
    with pytest.raises(RewardDataError, match="no data files"):
        load_reward_data(tmp_path)
    with pytest.raises(RewardDataError, match="couldn't be loaded") as info:
        load_reward_data("rewardkit-tests/no-such-dataset", split="test")
    assert info.value.source == "rewardkit-tests/no-such-dataset" and "\n" not in str(info.value)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(PAIR).encode() + b"\n" + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(RewardDataError, match="not UTF-8") as info:
        load_reward_data(path)
    assert "line 2" in str(info.value)


# ---- columns, detection, objectives -------------------------------------------------------

def test_parse_column_map():
    assert parse_column_map("prompt=question, chosen=best") == {"question": "prompt", "best": "chosen"}
    assert parse_column_map(None) == {} == parse_column_map("")
    for bad in ("prompt", "=x", "prompt=a,prompt=b", "chosen=a,rejected=a", "promt=question"):
        with pytest.raises(RewardDataError, match="column mapping"):
            parse_column_map(bad)


def test_columns_remapping(tmp_path):
    rows = [{"q": "p", "good": "a", "bad": "b"}]
    for columns in ("prompt=q,chosen=good,rejected=bad", {"q": "prompt", "good": "chosen", "bad": "rejected"}):
        assert load_rows(tmp_path, rows, columns=columns).rows[0]["chosen"] == "a"
    with pytest.raises(RewardDataError) as info:
        load_rows(tmp_path, [{"q": "p", "good": " ", "bad": "b"}], columns="prompt=q,chosen=good,rejected=bad")
    assert info.value.column == "good" and "renamed to 'chosen'" in str(info.value)


def test_a_columns_entry_naming_no_column_is_refused(tmp_path):
    """`--columns prompt=contxt` (a typo) on HH transcripts renamed nothing, and the pairs were read
    as implicit-prompt transcripts without a word; `margin=mrgn` left the margins out alike."""
    with pytest.raises(RewardDataError, match="renames 'contxt' to 'prompt', but no row has a column 'contxt'"):
        load_rows(tmp_path, [{"chosen": HH_1, "rejected": HH_2}], columns="prompt=contxt")
    with pytest.raises(RewardDataError, match="'mrgn'") as info:
        load_rows(tmp_path, [PAIR, PAIR], columns="margin=mrgn", limit=1)
    assert info.value.source == str(tmp_path / "data.jsonl")
    # the same --columns for --data and an --eval-data that already uses our names is fine
    assert len(load_rows(tmp_path, [PAIR], columns="prompt=query")) == 1
    rows = [{**PAIR, "diff": 1}, PAIR]  # a column some rows leave out is still a column of the data
    assert [row["margin"] for row in load_rows(tmp_path, rows, columns="margin=diff").rows] == [1.0, None]


@pytest.mark.parametrize("separator, word", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_separated_by_semicolons_or_tabs_is_named_as_such(tmp_path, separator, word):
    """Excel writes "CSV" with ';' in locales with a decimal comma: the error named one column
    'prompt;chosen;rejected' and advised --columns, which cannot help."""
    path = tmp_path / "excel.csv"
    path.write_text(separator.join(["prompt", "chosen", "rejected"]) + "\r\nq;a;b\r\n", encoding="utf-8-sig")
    with pytest.raises(RewardDataError, match=f"separated by {word}.*comma-separated") as info:
        load_reward_data(path)
    assert info.value.where == "line 1" and "--columns" not in str(info.value)


def test_unrecognised_columns_listed(tmp_path):
    with pytest.raises(RewardDataError, match="cannot tell") as info:
        load_rows(tmp_path, [{"text": "x", "label": 1}])
    assert "'text', 'label'" in str(info.value) and "pairwise:" in str(info.value)


def test_pairs_given_to_score_are_refused_without_naming_an_objective_nobody_gave(tmp_path):
    """`rewardkit score --data pairs.jsonl` said "asked for objective 'score'": score has no
    --objective, and 'score' is none of the objectives the README lists."""
    with pytest.raises(RewardDataError, match="scoring reads \\(prompt, response\\) rows but the data looks like pairwise") as info:
        load_rows(tmp_path, [PAIR], objective="score")
    assert "objective 'score'" not in str(info.value) and "rewardkit evaluate" in str(info.value)


def test_objective_contradiction(tmp_path):
    with pytest.raises(RewardDataError, match="asked for objective 'mse'.*pairwise"):
        load_rows(tmp_path, [PAIR], objective="mse")
    assert load_rows(tmp_path, [PAIR], objective="pairwise").objective == "pairwise"
    with pytest.raises(RewardDataError, match="asked for objective 'pairwise'.*give pairwise data"):
        load_rows(tmp_path, [{"prompt": "p", "response": "r"}], objective="pairwise")
    with pytest.raises(RewardDataError, match="column 'reward'"):  # mse asked, reward missing
        load_rows(tmp_path, [{"prompt": "p", "response": "r"}], objective="mse")
    with pytest.raises(RewardDataError, match="unknown objective"):
        load_rows(tmp_path, [PAIR], objective="dpo")
    assert OBJECTIVES == ("pairwise", "mse", "ranking")


def test_mixed_layouts_in_one_file(tmp_path):
    rows = [PAIR, PAIR, {"prompt": "p", "completion": "c", "reward": 1.0}]
    with pytest.raises(RewardDataError, match="looks like mse") as info:
        load_rows(tmp_path, rows)
    assert info.value.row == 3 and "line 3" in str(info.value) and "line 1" in str(info.value)
    with pytest.raises(RewardDataError, match="looks like pairwise"):  # prompt after implicit rows
        load_rows(tmp_path, [{"chosen": HH_1, "rejected": HH_2}, PAIR])


# ---- invalid rows ---------------------------------------------------------------------------

INVALID = [
    ("empty field", {**PAIR, "chosen": "  \n"}, "chosen", "empty field"),
    ("missing column", {"prompt": "p", "chosen": "a"}, "rejected", "missing column"),
    ("null field", {**PAIR, "prompt": None}, "prompt", "empty field"),
    ("identical", {**PAIR, "rejected": "good"}, "rejected", "identical chosen/rejected"),
    ("number as text", {**PAIR, "chosen": 5}, "chosen", "not text"),
    ("bad margin", {**PAIR, "margin": "big"}, "margin", "not a number"),
    ("inf margin", {**PAIR, "margin": float("inf")}, "margin", "not finite"),
    ("non-numeric reward", {"prompt": "p", "completion": "c", "reward": "high"}, "reward", "not a number"),
    ("NaN reward", {"prompt": "p", "completion": "c", "reward": float("nan")}, "reward", "not finite"),
    ("bool reward", {"prompt": "p", "completion": "c", "reward": True}, "reward", "not a number"),
    ("reward beyond float32", {"prompt": "p", "completion": "c", "reward": 1e39}, "reward", "too large"),
    ("huge margin", {**PAIR, "margin": -1e300}, "margin", "too large"),
    ("one response", {"prompt": "p", "responses": ["a"]}, "responses", "too few responses"),
    ("ranks mismatch", {"prompt": "p", "responses": ["a", "b"], "ranks": [1]}, "ranks", "length mismatch"),
    ("tied ranks", {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 2, 2]}, "ranks", "tied ranks"),
    ("tied scores", {"prompt": "p", "responses": ["a", "b"], "scores": [0.5, 0.5]}, "scores", "tied ranks"),
    # a null order was read as "best first": the file order, an order nobody annotated
    ("null scores", {"prompt": "p", "responses": ["a", "b"], "scores": None}, "scores", "empty field"),
    ("null ranks and scores", {"prompt": "p", "responses": ["a", "b"], "ranks": None, "scores": None}, "ranks", "empty field"),
    ("non-string response", {"prompt": "p", "responses": ["a", 2]}, "responses", "not text"),
    # ranks win over scores, so scores read the wrong way round were dropped without a word
    ("ranks and scores disagree", {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 2, 3],
                                   "scores": [0.1, 0.2, 0.3]}, "scores", "ranks and scores disagree"),
    ("ranks short beside scores", {"prompt": "p", "responses": ["a", "b"], "ranks": [1, 2], "scores": [0.9]},
     "scores", "length mismatch"),
]
VALID_FIRST = {"pairwise": PAIR, "mse": {"prompt": "p", "completion": "c", "reward": 0},
               "ranking": {"prompt": "p", "responses": ["x", "y"]}}


@pytest.mark.parametrize("used, other", [("response", "completion"), ("completion", "response")])
def test_a_missing_column_is_named_as_the_data_names_it(tmp_path, used, other):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", used: "r"}, {"prompt": "p"}])
    with pytest.raises(RewardDataError) as info:
        load_reward_data(path, objective="score")
    assert info.value.column == used and f"column '{used}'" in str(info.value)
    assert f"also accepted: '{other}'" in str(info.value)


@pytest.mark.parametrize("label, bad, column, reason", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_rows_are_named_or_skipped(tmp_path, label, bad, column, reason):
    objective = "pairwise" if "chosen" in bad else "ranking" if "responses" in bad else "mse"
    rows = [VALID_FIRST[objective], bad, VALID_FIRST[objective]]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(RewardDataError) as info:
        load_reward_data(path)
    err = info.value
    assert (err.source, err.row, err.column, err.reason) == (str(path), 2, column, reason)
    assert str(path) in str(err) and "line 2" in str(err) and f"column '{column}'" in str(err)
    assert "\n" not in str(err)
    data = load_reward_data(path, skip_invalid=True)
    assert len(data) == 2 and data.skipped.counts == {reason: 1}
    assert data.skipped.examples[reason] == ["rows.jsonl line 2"]
    assert reason in data.skipped.summary()


def test_huge_ranking_scores_are_kept_they_only_order(tmp_path):
    data = load_rows(tmp_path, [{"prompt": "p", "responses": ["a", "b"], "scores": [1e300, -1e300]}])
    assert data.rows == [{"prompt": "p", "responses": ["a", "b"]}]
    with pytest.raises(RewardDataError, match=r"too large .*float32.*rescale"):
        load_rows(tmp_path, [{"prompt": "p", "completion": "c", "reward": 1e16}])
    assert load_rows(tmp_path, [{"prompt": "p", "completion": "c", "reward": -1e15}]).rows[0]["reward"] == -1e15


def test_broken_json_line_named_and_skippable(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(PAIR) + "\n\n" + '{"prompt": "p", "chosen": \n' + "[1, 2]\n" + json.dumps(PAIR) + "\n")
    with pytest.raises(RewardDataError, match="broken JSON") as info:
        load_reward_data(path)
    assert (info.value.source, info.value.row) == (str(path), 3) and "line 3" in str(info.value)
    data = load_reward_data(path, skip_invalid=True)
    assert len(data) == 2 and data.skipped.counts == {"broken JSON": 1, "not an object": 1}


def test_deeply_nested_json_is_a_data_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(RewardDataError) as info:
        load_reward_data(path)
    assert info.value.row == 2


def test_all_rows_skipped_is_an_error(tmp_path):
    with pytest.raises(RewardDataError, match="no valid rows.*empty field: 2"):
        load_rows(tmp_path, [{**PAIR, "chosen": ""}, {**PAIR, "rejected": " "}], skip_invalid=True)


def test_limit(tmp_path):
    assert len(load_rows(tmp_path, [PAIR] * 5, limit=2)) == 2
    with pytest.raises(RewardDataError, match="limit"):
        load_rows(tmp_path, [PAIR], limit=0)


def test_error_pickles_with_attributes():
    err = RewardDataError("bad", source="f.jsonl", row=3, column="chosen", where="line 3", reason="x")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.source, copy.row, copy.column, copy.reason, str(copy)) == \
        ("f.jsonl", 3, "chosen", "x", "f.jsonl, line 3, column 'chosen': bad")


# ---- streaming ------------------------------------------------------------------------------

@pytest.mark.parametrize("tail", [b"{broken\n", b'{"prompt": "\xff"}\n'], ids=["broken JSON", "not UTF-8"])
def test_iter_streams_before_a_later_broken_line(tmp_path, tail):
    path = tmp_path / "s.jsonl"
    path.write_bytes((json.dumps(PAIR) + "\n" + json.dumps({**PAIR, "chosen": "ok"}) + "\n").encode() + tail)
    rows = iter_reward_rows(path)
    assert next(rows) == (1, {"prompt": "p", "chosen": "good", "rejected": "bad", "margin": None})
    assert next(rows)[0] == 2
    with pytest.raises(RewardDataError, match="line 3"):
        next(rows)


def test_iter_checks_arguments_at_once_and_collects_skips(tmp_path):
    with pytest.raises(RewardDataError, match="no such file"):
        iter_reward_rows(tmp_path / "missing.jsonl")
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "", "response": "r"}])
    report = SkipReport()
    rows = list(iter_reward_rows(path, objective="score", skip_invalid=True, skipped=report))
    assert rows == [(1, {"prompt": "p", "response": "r"})] and report.counts == {"empty field": 1}


def test_iter_reads_parquet_in_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    n = 2500  # more than one record batch
    table = pa.table({"prompt": ["p"] * n, "completion": [f"c{i}" for i in range(n)], "reward": [0.5] * n})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1000)
    numbers = [number for number, _ in iter_reward_rows(tmp_path / "big.parquet", objective="mse")]
    assert numbers == list(range(1, n + 1))


# ---- robustness -----------------------------------------------------------------------------

KEYS = st.sampled_from(["prompt", "chosen", "rejected", "margin", "completion", "response", "reward",
                        "score", "responses", "ranks", "scores", "instruction", "response_j", "role",
                        "content", "x"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


def _loads_or_data_error(content: bytes, suffix: str, **kwargs) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f{suffix}"
        path.write_bytes(content)
        try:
            data = load_reward_data(path, **kwargs)
        except RewardDataError as err:
            assert str(err)
        else:
            assert len(data) >= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(JSON_VALUES, min_size=1, max_size=3), skip=st.booleans(),
       objective=st.sampled_from([None, "pairwise", "mse", "ranking", "score"]))
def test_fuzz_json_lines_load_or_raise_data_error(values, skip, objective):
    content = "".join(json.dumps(value) + "\n" for value in values).encode()
    _loads_or_data_error(content, ".jsonl", skip_invalid=skip, objective=objective)
    _loads_or_data_error(json.dumps(values).encode(), ".json", skip_invalid=skip, objective=objective)


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_fuzz_raw_bytes_load_or_raise_data_error(content, suffix):
    _loads_or_data_error(content, suffix)
