"""`rewardkit train --config FILE`: a YAML file of flag values, read as the parser's defaults, so
that flags given on the command line override it. YAML passes values through as they are (a
nested mapping, a float for an int flag, `no` read as false), which argparse checks only for
text: each such value is checked here and refused by key."""

from __future__ import annotations

import argparse

from rewardkit.errors import CliError


def peek_option(argv: list[str], name: str) -> str | None:
    for i, token in enumerate(argv):
        if token == name and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def read_yaml_config(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except OSError as error:
        raise CliError(f"Cannot read --config {path}: {error.strerror or error}.") from error
    except yaml.YAMLError as error:
        raise CliError(f"--config {path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise CliError(f"--config {path} must hold a mapping of argument names to values.")
    return {key.replace("-", "_"): value for key, value in values.items()}


def yaml_defaults(values: dict, parser: argparse.ArgumentParser, path: str) -> dict:
    """YAML keys as parser defaults. `no_X: true` (the README's `--no-X` flags written as keys) means
    `X: false`; a key no flag knows is refused by name (argparse would drop it without a word, and
    a misspelt `learning_rat` would train at the default)."""
    import difflib

    actions = {action.dest: action for action in parser._actions}
    field_types = _annotations(getattr(parser, "dataclass_types", ()))
    known = set(actions)
    defaults, unknown = {}, []
    for key, value in values.items():
        if key == "config":  # a known flag, so it would be taken and then never read
            raise CliError(f"--config {path}: a 'config' key (another YAML file) is not read; configs do not "
                           "nest. Put its keys in this file, or pass them as flags.")
        if key in known:
            defaults[key] = _yaml_off_switch(value, actions[key])
            _check_yaml_choice(key, defaults[key], actions[key], path)
            _check_yaml_shape(key, value, field_types.get(key, ""), path)
            defaults[key] = _yaml_number(key, defaults[key], actions[key], path)
        elif key.startswith("no_") and key[3:] in known and isinstance(value, bool):
            defaults[key[3:]] = not value
        else:
            close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.75)
            unknown.append(f"{key}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    if unknown:
        raise CliError(f"--config {path}: unknown keys: {', '.join(unknown)}. Keys are flag names "
                       "(learning_rate, max_length, ...; all flags: rewardkit train --help).")
    return defaults


def _annotations(classes) -> dict[str, str]:
    """Field name -> its declared type, as text ('dict | str | None'), read from the classes'
    annotations: HfArgumentParser rewrites the fields' own `type` (a dict-or-str field becomes str)."""
    declared: dict[str, str] = {}
    for kind in classes:
        for klass in reversed(kind.__mro__):
            declared.update({name: str(value) for name, value in vars(klass).get("__annotations__", {}).items()})
    return declared


def _check_yaml_shape(key: str, value, field_type: str, path: str) -> None:
    """A nested mapping or a list under a key whose flag takes one value is refused by name: argparse
    passes YAML values through as they are, so `skip_invalid: {on: true}` turned skipping on (a
    non-empty dict is true) and `max_length: {value: 64}` failed with a bare TypeError."""
    for shape, name, allowed in ((dict, "a nested mapping", "dict"), (list, "a list", "list")):
        if isinstance(value, shape) and allowed not in field_type:
            raise CliError(f"--config {path}: {key} holds {name}, but --{key} takes a single value. Keys are flat "
                           "(flag names at the top level; all flags: rewardkit train --help).")


def _yaml_number(key: str, value, action: argparse.Action, path: str):
    """A YAML number for a numeric flag, checked as the flag's own parser would: argparse converts
    text defaults only, so `max_length: 40.5` trained with a fractional length (then failed in the
    tokenizer, or saved a config that refuses to load), `per_device_train_batch_size: 4.5` failed
    deep in torch's DataLoader, and `alpha: true` passed as 1. A whole float (64.0) is taken."""
    if action.type not in (int, float) or value is None or isinstance(value, (str, list)):
        return value
    wanted = "a whole number" if action.type is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            action.type is int and isinstance(value, float) and not value.is_integer()):
        raise CliError(f"--config {path}: {key}: {value!r} is not {wanted}.")
    return int(value) if action.type is int else value


def _check_yaml_choice(key: str, value, action: argparse.Action, path: str) -> None:
    """A YAML value of a flag with choices must be one of them: argparse checks the choices of
    command-line values only, not of defaults, so `pooling: firts` got as far as building the model,
    after the data was read."""
    if not action.choices or value is None:
        return
    choices = [str(getattr(choice, "value", choice)) for choice in action.choices]
    for item in value if isinstance(value, list) else [value]:
        if str(getattr(item, "value", item)) not in choices:
            raise CliError(f"--config {path}: {key}: {item!r} is not one of {', '.join(choices)}.")


def _yaml_off_switch(value, action: argparse.Action):
    """YAML 1.1 reads an unquoted `no` as false, so `eval_strategy: no` arrives as False, which
    transformers refuses ("False is not a valid IntervalStrategy"): for a flag whose choices
    include "no", false means "no"."""
    choices = [str(getattr(choice, "value", choice)) for choice in (action.choices or ())]
    return "no" if value is False and "no" in choices else value
