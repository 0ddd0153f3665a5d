"""Row layouts of reward data: recognise what one row is and turn it into the normal form.

Everything here works on one already-parsed row (a dict of column -> value) and does no I/O,
so the rules can be read and tested on their own. Problems are raised as :class:`RowError`
(column + reason, no file or row number); :mod:`rewardkit.data` knows where the row came from
and turns it into a :class:`~rewardkit.data_errors.RewardDataError`.

Accepted layouts (column names after ``--columns`` renaming; the first name of each group wins
when a row has several):

* pairwise: prompt | instruction | question; chosen | chosen_response | response_j;
  rejected | rejected_response | response_k; optional margin. Without a prompt column,
  chosen/rejected are full transcripts sharing the prompt (HH-RLHF / TRL "implicit prompt").
  Any of prompt/chosen/rejected may be TRL conversational lists of {"role", "content"}.
  A prompt that the conversations already hold (UltraFeedback) is read once.
* mse: prompt; completion | response; reward | score.
* ranking: prompt; responses (best first), or responses + ranks (1 = best),
  or responses + scores (higher = better). ranks win over scores when both are given; they
  must not contradict each other.
* score (for ``rewardkit score``, not training): prompt; completion | response; reward ignored.

Conversations are rendered as text, one "Role: content" line per message ("System:",
"User:", "Assistant:", other roles capitalised), followed by a final "Assistant:" line, so
that a prompt always ends where the scored response begins, as HH-RLHF transcripts do.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PROMPT_COLUMNS = ("prompt", "instruction", "question")
CHOSEN_COLUMNS = ("chosen", "chosen_response", "response_j")
REJECTED_COLUMNS = ("rejected", "rejected_response", "response_k")
RESPONSE_COLUMNS = ("completion", "response")
REWARD_COLUMNS = ("reward", "score")
COLUMN_ALIASES = (PROMPT_COLUMNS, CHOSEN_COLUMNS, REJECTED_COLUMNS, RESPONSE_COLUMNS, REWARD_COLUMNS)
KNOWN_COLUMNS = frozenset(
    PROMPT_COLUMNS + CHOSEN_COLUMNS + REJECTED_COLUMNS + RESPONSE_COLUMNS + REWARD_COLUMNS
    + ("margin", "responses", "ranks", "scores")
)
COLUMNS_NEEDED = {
    "pairwise": "prompt, chosen, rejected, or chosen/rejected transcripts sharing the prompt",
    "mse": "prompt, completion or response, reward or score",
    "ranking": "prompt, responses, optionally ranks or scores",
    "score": "prompt, completion or response",
}
ACCEPTED_LAYOUTS = (
    "pairwise: prompt, chosen, rejected (optional margin), or chosen/rejected transcripts "
    "without a prompt column, or instruction/chosen_response/rejected_response, or "
    "question/response_j/response_k; mse: prompt, completion or response, reward or score; "
    "ranking: prompt, responses (best first), optionally with ranks or scores"
)

# The last line-initial "Assistant:" of an HH-style transcript ends the shared prompt.
_ASSISTANT_MARKER = re.compile(r"(?:^|\n)Assistant:")
_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# Rewards and margins enter the loss (squared error; margin inside the sigmoid) in float32, whose
# largest value is about 3.4e38 and whose square overflows far earlier; beyond this they train NaN.
MAX_TARGET = 1e15

Turns = tuple[tuple[str, str], ...]


class RowError(ValueError):
    """One row is invalid. ``reason`` is a short category used to count skipped rows."""

    def __init__(self, message: str, column: str | None, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class Layout:
    """What a row is: the objective it trains (or "score") and, for pairwise, where the prompt is."""

    objective: str
    implicit_prompt: bool = False


def detect_layout(row: dict) -> Layout | None:
    """Guess a row's layout from the columns it fills (null values count as absent).

    The characteristic columns decide, so a row that is merely incomplete (say, chosen without
    rejected) is still recognised and later reported as missing a column. Whether pairs carry
    their prompt is decided by the prompt column's *presence*: a null prompt is a missing value
    to report, not a sign of transcripts sharing their prompt (which would switch a whole file
    to prefix splitting because its first prompt is null).
    """
    present = {key for key, value in row.items() if value is not None}
    if present & set(CHOSEN_COLUMNS + REJECTED_COLUMNS):
        return Layout("pairwise", implicit_prompt=not has_prompt_column(row))
    if "responses" in present:
        return Layout("ranking")
    if present & set(REWARD_COLUMNS) or (row.keys() & set(REWARD_COLUMNS) and present & set(RESPONSE_COLUMNS)):
        return Layout("mse")  # a response with a null reward is an mse row missing its reward
    if present & set(RESPONSE_COLUMNS):
        return Layout("score")
    return None


def compatible(expected: str, found: str) -> bool:
    """mse and score rows differ only in the reward, so each may stand in for the other."""
    return expected == found or {expected, found} <= {"mse", "score"}


def layout_for_objective(objective: str, row: dict) -> Layout:
    """The layout to validate a row against when the caller named the objective."""
    return Layout(objective, implicit_prompt=objective == "pairwise" and not has_prompt_column(row))


def has_prompt_column(row: dict) -> bool:
    """The row has a prompt column, filled or not (null, or a blank CSV cell)."""
    return any(name in row for name in PROMPT_COLUMNS)


def describe_layout(row: dict, layout: Layout) -> str:
    """A human-readable name for the layout of ``row``, for logs and ``RewardData``."""
    prompt = _first_name(row, PROMPT_COLUMNS)
    if layout.objective == "pairwise":
        chosen, rejected = _first_name(row, CHOSEN_COLUMNS), _first_name(row, REJECTED_COLUMNS)
        conversational = isinstance(row.get(chosen), list)
        if layout.implicit_prompt:
            if conversational:
                return "pairwise (implicit prompt, conversational messages)"
            text = row.get(chosen)
            if isinstance(text, str) and "Human:" in text and "Assistant:" in text:
                return "pairwise (implicit prompt, HH-RLHF transcripts)"
            return "pairwise (implicit prompt, shared prefix of chosen/rejected)"
        if conversational:
            return f"pairwise (conversational messages, {prompt}/{chosen}/{rejected})"
        names = f"{prompt}/{chosen}/{rejected}" + ("+margin" if "margin" in row else "")
        if chosen == "chosen_response":
            return f"pairwise (Aira columns {names})"
        if chosen == "response_j":
            return f"pairwise (StackExchange columns {names}, response_j preferred)"
        return f"pairwise ({names})"
    if layout.objective == "ranking":
        order = ranking_order(row)
        return f"ranking ({prompt}/responses, {order})" if order == BEST_FIRST else f"ranking ({prompt}/responses + {order})"
    response = _first_name(row, RESPONSE_COLUMNS)
    if layout.objective == "mse":
        return f"mse ({prompt}/{response}/{_first_name(row, REWARD_COLUMNS)})"
    return f"score ({prompt}/{response})"


BEST_FIRST = "best first"


def ranking_order(row: dict) -> str:
    """Where a ranked row's order comes from: "ranks", "scores" or "best first" (the list order)."""
    return "ranks" if row.get("ranks") is not None else "scores" if row.get("scores") is not None else BEST_FIRST


def describe_ranking_orders(row: dict, orders: list[str]) -> str:
    """The layout of ranked data whose rows take their order from different places: describing
    it by its first row alone said "+ ranks" of a file ordered mostly by scores or by list order.
    (No counts: they would be of the rows read, not of those trained after a held-out split.)"""
    names = ["the list order (best first)" if order == BEST_FIRST else order for order in orders]
    listed = f"{', '.join(names[:-1])} or {names[-1]}"
    return f"ranking ({_first_name(row, PROMPT_COLUMNS)}/responses; order from {listed}, by row)"


def normalise_row(row: dict, layout: Layout, *, text_lists: bool = False) -> dict:
    """Validate ``row`` against ``layout`` and return it in normal form (see rewardkit.data).

    ``text_lists``: list columns may arrive as JSON text (CSV has no lists).
    """
    if layout.objective == "pairwise":
        return _pairwise(row, layout.implicit_prompt)
    if layout.objective == "ranking":
        return _ranking(row, text_lists)
    return _single(row, with_reward=layout.objective == "mse")


def split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two transcripts that share their prompt into (prompt, chosen reply, rejected reply).

    The prompt runs up to and including the last line-initial "Assistant:" inside the common
    prefix (HH-RLHF). Without such a marker it is the common prefix cut back to a whitespace
    boundary, so that no word is split between prompt and reply; nothing shared gives "".
    """
    common = os.path.commonprefix([chosen, rejected])
    last = None
    for last in _ASSISTANT_MARKER.finditer(common):  # noqa: B007 - we want the final match
        pass
    if last is not None:
        cut = last.end()
    else:
        cut = len(common)
        while cut and not common[cut - 1].isspace():
            cut -= 1
    return chosen[:cut], chosen[cut:].lstrip(), rejected[cut:].lstrip()


def render_conversation(turns: Turns) -> str:
    """Messages as "Role: content" lines ending in "Assistant:"; no messages gives ""."""
    if not turns:
        return ""
    lines = [f"{_ROLE_LABELS.get(role, role.capitalize())}: {content}" for role, content in turns]
    return "\n".join(lines) + "\nAssistant:"


# ---- the three objectives (+ score) ---------------------------------------------------------

def _pairwise(row: dict, implicit: bool) -> dict:
    chosen_col, chosen = _pick(row, CHOSEN_COLUMNS)
    rejected_col, rejected = _pick(row, REJECTED_COLUMNS)
    margin = _target(_number(row.get("margin"), "margin", optional=True), "margin")
    if implicit and isinstance(chosen, str) and isinstance(rejected, str):
        _text(chosen, chosen_col)
        _text(rejected, rejected_col)
        if chosen == rejected:
            raise _identical(rejected_col, chosen_col)
        prompt, chosen_reply, rejected_reply = split_transcripts(chosen, rejected)
        _reply_left(chosen_reply, chosen_col)
        _reply_left(rejected_reply, rejected_col)
        prefix: Turns = ()
    else:
        prompt = None if implicit else _prompt_value(*_pick(row, PROMPT_COLUMNS))
        prefix, chosen_reply = _turns(chosen, chosen_col)
        rejected_prefix, rejected_reply = _turns(rejected, rejected_col)
        if implicit and isinstance(chosen, str) != isinstance(rejected, str):
            raise RowError(f"'{chosen_col}' and '{rejected_col}' must both be transcripts (text) "
                           "or both be message lists", rejected_col, "bad messages")
        if prefix != rejected_prefix:
            raise RowError(f"the '{chosen_col}' and '{rejected_col}' conversations differ before "
                           "their final assistant message", rejected_col, "bad messages")
    if chosen_reply.strip() == rejected_reply.strip():
        raise _identical(rejected_col, chosen_col)
    full_prompt = _full_prompt(prompt, prefix)
    if implicit and not full_prompt:
        _refuse_prompt_elsewhere(row, chosen_col, rejected_col)
    return {"prompt": full_prompt, "chosen": chosen_reply, "rejected": rejected_reply, "margin": margin}


_TEXT_COLUMNS = PROMPT_COLUMNS + CHOSEN_COLUMNS + REJECTED_COLUMNS + RESPONSE_COLUMNS
_MESSAGE_LIST_TEXT = re.compile(r"""\s*\[\s*\{\s*['"](?:role|content)['"]\s*:""")


def message_lists_from_text(row: dict) -> dict:
    """``row`` with its text columns that hold a message list written as text (a CSV cell, which
    has no lists) read as that list. Written as JSON it is read, as a ranked ``responses`` list is;
    written as a Python list, as pandas' ``to_csv`` writes one, it is refused: read as text it
    trained on "[{'content': ..., 'role': 'user'}, ...]", brackets and all."""
    found = [name for name in _TEXT_COLUMNS if isinstance(row.get(name), str) and _MESSAGE_LIST_TEXT.match(row[name])]
    if not found:
        return row
    row = dict(row)
    for name in found:
        try:
            row[name] = json.loads(row[name])
        except (ValueError, RecursionError):
            raise RowError("the value is a list of messages written as a Python list (as pandas' to_csv "
                           "writes one), not as JSON, so it cannot be read as messages; save the data as "
                           "JSONL or Parquet (DataFrame.to_json(path, orient='records', lines=True))",
                           name, "bad messages") from None
    return row


def unread_text_columns(row: dict) -> list[str]:
    """Columns holding non-blank text that no layout reads (names as after ``--columns``).

    Where a prompt filed under a name rewardkit does not know (``query``, ``input``,
    ``context``, ``Prompt``) would be; metadata such as ``id`` or ``source`` shows up too.
    """
    return [str(key) for key, value in row.items()
            if key not in KNOWN_COLUMNS and isinstance(value, str) and value.strip()]


# Column names under which datasets keep the prompt (compared lowercased), beside the ones read.
_PROMPT_LIKE_NAMES = frozenset({
    "prompt", "prompts", "query", "input", "inputs", "context", "instruction", "instructions", "question",
    "history", "conversation", "dialogue", "dialog", "request", "human", "user", "task", "post", "source_text",
})
_PROMPT_LIKE_WORDS = 4  # an unread value of this many words or more reads like text, not an id or a tag


def _looks_like_a_prompt(name: str, value: str) -> bool:
    """An unread column that is probably the prompt: a usual prompt name, or a value of several
    words. Ids, tags and sources (`id: "r17"`, `source: "hh-rlhf"`) are neither."""
    return name.lower().strip() in _PROMPT_LIKE_NAMES or len(value.split()) >= _PROMPT_LIKE_WORDS


def _refuse_prompt_elsewhere(row: dict, chosen_col: str, rejected_col: str) -> None:
    """Implicit-prompt transcripts sharing nothing would train with an empty prompt. Pairs
    without a prompt exist (and may carry ids or tags), but when the row also holds text that
    looks like a prompt under another name, refuse the row rather than silently drop the prompt."""
    unread = [name for name in unread_text_columns(row) if _looks_like_a_prompt(name, str(row[name]))]
    if unread:
        raise RowError(f"there is no prompt column and '{chosen_col}'/'{rejected_col}' share no "
                       f"prompt at their start, but this column holds text rewardkit does not "
                       f"read; if it is the prompt, pass --columns prompt={unread[0]}",
                       unread[0], "no prompt")


def _ranking(row: dict, text_lists: bool) -> dict:
    prompt = _prompt_value(*_pick(row, PROMPT_COLUMNS))
    responses = _list(_pick(row, ("responses",))[1], "responses", text_lists)
    if len(responses) < 2:
        raise RowError(f"'responses' needs at least 2 responses to rank, got {len(responses)}",
                       "responses", "too few responses")
    texts = [_text(value, "responses", item=i) for i, value in enumerate(responses, 1)]
    order_columns = [key for key in ("ranks", "scores") if key in row]
    if order_columns and all(row[key] is None for key in order_columns):
        # A row that has the order column but no order: "best first" would train the file order,
        # an order nobody gave. (Rows without the column are best first, as documented.)
        raise RowError("the value is empty or null, so the order of the responses is unknown",
                       order_columns[0], "empty field")
    orders = {key: _order_keys(row[key], key, len(texts), text_lists)
              for key in ("ranks", "scores") if row.get(key) is not None}
    if "ranks" in orders and "scores" in orders:
        _refuse_disagreement(orders["ranks"], orders["scores"])
    for key, descending in (("ranks", False), ("scores", True)):
        if key in orders:
            keys = orders[key]
            _refuse_ties(keys, key)  # scores beside ranks may tie: the ranks order them
            order = sorted(range(len(texts)), key=lambda i: -keys[i] if descending else keys[i])
            texts = [texts[i] for i in order]
            break
    seen: dict[str, int] = {}
    for i, text in enumerate(texts, 1):
        if text.strip() in seen:
            raise RowError(f"'responses' holds the same response twice (after ordering: "
                           f"{seen[text.strip()]} and {i})", "responses", "duplicate responses")
        seen[text.strip()] = i
    return {"prompt": prompt if isinstance(prompt, str) else render_conversation(prompt),
            "responses": texts}


def _order_keys(value: Any, key: str, count: int, text_lists: bool) -> list[float]:
    """The numbers of a ``ranks`` or ``scores`` list, one per response."""
    values = _list(value, key, text_lists)
    if len(values) != count:
        raise RowError(f"'{key}' has {len(values)} values but 'responses' has {count}", key, "length mismatch")
    return [_number(item, key, item=i) for i, item in enumerate(values, 1)]


def _refuse_disagreement(ranks: list[float], scores: list[float]) -> None:
    """ranks win over scores, but a row whose scores put two responses the other way round from
    its ranks holds two contradicting orders (often one read in the wrong direction: rank 1 is
    best, a higher score is better); training on the ranks alone would be a silent guess."""
    for i, j in itertools.combinations(range(len(ranks)), 2):
        if (ranks[i] - ranks[j]) * (scores[i] - scores[j]) > 0:  # lower rank but lower score, or the reverse
            better, worse = (i, j) if ranks[i] < ranks[j] else (j, i)
            raise RowError(f"'ranks' put response {better + 1} above response {worse + 1} but 'scores' put it "
                           f"below ({scores[better]:g} < {scores[worse]:g}); rank 1 is the best and a higher score "
                           "is better: give one order (drop one column) or make them agree",
                           "scores", "ranks and scores disagree")


def _refuse_ties(keys: list[float], column: str) -> None:
    """The ranking loss and metrics compare every pair of a group as better/worse; a tie would be
    trained and scored as an order the annotators never gave (file order). Refused, not guessed."""
    first_seen: dict[float, int] = {}
    for i, value in enumerate(keys, 1):
        if value in first_seen:
            raise RowError(f"values {first_seen[value]} and {i} tie ({value:g}); ranking needs a strict order "
                           "(ties are not supported: give distinct values, or turn the row into chosen/rejected "
                           "pairs of the responses that do differ)", column, "tied ranks")
        first_seen[value] = i


def _single(row: dict, *, with_reward: bool) -> dict:
    prompt = _prompt_value(*_pick(row, PROMPT_COLUMNS))
    response_col, value = _pick(row, RESPONSE_COLUMNS)
    prefix, response = _turns(value, response_col)
    normal: dict[str, Any] = {"prompt": _full_prompt(prompt, prefix), "response": response}
    if with_reward:
        reward_col, reward = _pick(row, REWARD_COLUMNS)
        normal["reward"] = _target(_number(reward, reward_col), reward_col)
    return normal


# ---- field helpers ----------------------------------------------------------------------------

def _pick(row: dict, names: tuple[str, ...]) -> tuple[str, Any]:
    """(column, value) of the first of ``names`` the row fills; missing or null is an error.

    A null counts as an empty field, worded for both: CSV has no null, and its blank cells
    arrive here as None (see rewardkit.data), so that an alias or optional column can fall
    through exactly as a null does in JSON or Parquet.
    """
    for name in names:
        if row.get(name) is not None:
            return name, row[name]
    for name in names:
        if name in row:
            raise RowError("the value is empty or null", name, "empty field")
    raise missing_column(names, names[0])


def missing_column(aliases: tuple[str, ...], named: str) -> RowError:
    """The error for a row without any of `aliases`, naming the column `named` and the other
    aliases as also accepted (rewardkit.data names the one the earlier rows of a file used)."""
    others = [repr(name) for name in aliases if name != named]
    also = f" (also accepted: {', '.join(others)})" if others else ""
    return RowError(f"the row has no such column{also}", named, "missing column")


def _first_name(row: dict, names: tuple[str, ...]) -> str:
    return next((name for name in names if row.get(name) is not None), names[0])


def _text(value: Any, column: str, *, item: int | None = None) -> str:
    """A non-blank string; numbers, lists etc. in a text column are errors, not converted."""
    what = f"response {item}" if item else "the value"
    if not isinstance(value, str):
        raise RowError(f"{what} must be text, got {kind_of(value)}", column, "not text")
    if not value.strip():
        raise RowError(f"{what} is empty or only whitespace", column, "empty field")
    _check_unicode(value, what, column)
    return value


def _check_unicode(value: str, what: str, column: str) -> None:
    """JSON may spell half of a UTF-16 surrogate pair ("\\ud83d" without its partner): Python
    keeps it, but it is not a character, and tokenizers fail on it with an error naming no row."""
    found = _SURROGATE.search(value)
    if found:
        raise RowError(f"{what} holds an unpaired surrogate \\u{ord(found.group()):04x} at character "
                       f"{found.start() + 1}, which is not valid Unicode text (a broken escape in "
                       "the file)", column, "not text")


def _number(value: Any, column: str, *, optional: bool = False, item: int | None = None) -> float | None:
    """A finite float. Numeric strings ("0.5", as CSV gives) convert; booleans do not."""
    what = f"value {item}" if item else "the value"
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise RowError(f"{what} is empty", column, "empty field")
    number = None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            number = math.inf
    if number is None:
        shown = _short_repr(value) if isinstance(value, str) else kind_of(value)
        raise RowError(f"{what} must be a number, got {shown}", column, "not a number")
    if not math.isfinite(number):
        raise RowError(f"{what} must be a finite number, got {number}", column, "not finite")
    return number


def _target(value: float | None, column: str) -> float | None:
    """A reward or margin small enough to train on. Ranks and scores are not checked: they only
    order a group's responses and never reach the loss."""
    if value is not None and abs(value) > MAX_TARGET:
        raise RowError(f"the value {value:g} is too large (beyond ±{MAX_TARGET:g}): rewards and margins "
                       "enter the loss (a squared error, a sigmoid) in float32, where such values overflow "
                       "and train to NaN; rescale the column (e.g. divide it by a constant)", column, "too large")
    return value


def _list(value: Any, column: str, text_lists: bool) -> list:
    """A list; with ``text_lists`` also a JSON array written as text (CSV cells)."""
    if isinstance(value, str) and text_lists and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise RowError("the value is not a valid JSON array", column, "not a list") from None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        hint = " (in CSV write it as a JSON array, e.g. [\"a\", \"b\"])" if text_lists else ""
        raise RowError(f"the value must be a list, got {kind_of(value)}{hint}", column, "not a list")
    return value


def _prompt_value(column: str, value: Any) -> str | Turns:
    """A prompt is text, or a conversation (message list) rendered later."""
    if isinstance(value, list | tuple):
        turns = _messages(value, column)
        if not turns:
            raise RowError("the value is an empty message list", column, "empty field")
        return turns
    return _text(value, column)


def _turns(value: Any, column: str) -> tuple[Turns, str]:
    """Split a response into (messages before the final assistant message, reply text)."""
    if not isinstance(value, list | tuple):
        return (), _text(value, column)
    turns = _messages(value, column)
    if not turns:
        raise RowError("the value is an empty message list", column, "empty field")
    role, content = turns[-1]
    if role != "assistant":
        raise RowError("the last message must be the assistant's, got role "
                       f"{_short_repr(role)}", column, "bad messages")
    if not content.strip():
        raise RowError("the final assistant message is empty", column, "empty field")
    return turns[:-1], content


def _messages(value: list | tuple, column: str) -> Turns:
    turns = []
    for i, message in enumerate(value, 1):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(role, str) or not role.strip() or not isinstance(content, str):
            raise RowError(f"message {i} must be an object with text 'role' and "
                           "'content'", column, "bad messages")
        _check_unicode(role, f"message {i}'s role", column)
        _check_unicode(content, f"message {i}'s content", column)
        turns.append((role.strip().lower(), content))
    return tuple(turns)


def _full_prompt(prompt: str | Turns | None, prefix: Turns) -> str:
    """Plain text prompts stay as they are; anything conversational is rendered.

    A prompt the conversation already holds is not put in front of it a second time:
    UltraFeedback (HuggingFaceH4/ultrafeedback_binarized) and Capybara-style rows give the
    user's message as ``prompt`` text *and* as the first message of full ``chosen``/``rejected``
    conversations, which read "User: q" twice.
    """
    if isinstance(prompt, str) and not prefix:
        return prompt
    head: Turns = (("user", prompt),) if isinstance(prompt, str) else prompt or ()
    if _already_holds(prefix, head):
        head = ()
    return render_conversation(head + prefix)


def _already_holds(prefix: Turns, head: Turns) -> bool:
    """The conversation ``prefix`` repeats the prompt ``head``: it starts with the prompt's
    messages, or (a text prompt) one of its user messages is that text."""
    if not head or not prefix:
        return False
    if prefix[:len(head)] == head:
        return True
    if len(head) != 1 or head[0][0] != "user":
        return False
    text = head[0][1].strip()
    return any(role == "user" and content.strip() == text for role, content in prefix)


def _reply_left(reply: str, column: str) -> None:
    if not reply.strip():
        raise RowError("nothing is left of this transcript after the prompt it shares with the "
                       "other one", column, "empty field")


def _identical(rejected_col: str, chosen_col: str) -> RowError:
    return RowError(f"'{rejected_col}' is identical to '{chosen_col}', so the pair teaches nothing",
                    rejected_col, "identical chosen/rejected")


def _short_repr(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def kind_of(value: Any) -> str:
    """Name a value's JSON-ish kind for error messages (never its content: data may be huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, numbers.Number | Decimal):
        return f"a number ({type(value).__name__})"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bytes | bytearray):
        return "binary data (bytes)"
    return f"a {type(value).__name__}"
