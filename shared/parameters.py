"""How a searched parameter reaches a repository's code, and applying chosen values to a copy of it.

A parameter arrives as a command-line flag (`--lr 0.01`, `--lr=0.01`, a `--no-cuda` switch), a key of a
YAML/JSON/TOML config file, a module-level constant of a Python file, or an environment variable; with
none of these it is read from the params file, which is not this module's business. Everything here is
pure: files come in through `read` and leave as new texts plus a `git apply`-able patch.

Edits replace only the text of the old value, so comments, order, quotes, indentation and line endings
of everything else stay byte for byte; each edited file is parsed again and must read back the value.

Formatting: a value is written as its own type says (5 stays an int, 5.0 a float), floats with `repr`.
Flags: bools are `True`/`False` (what `type=str2bool`-style parsers read), lists space-separated (nargs).
Environment: bools are `1`/`0`, lists space-separated. YAML floats always carry a dot (`1.0e-05`) so
that PyYAML, which reads `1e-05` as a string, gets a float too.
"""

from __future__ import annotations

import ast
import difflib
import json
import keyword
import math
import re
import shlex
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items
from pydantic import BaseModel, ConfigDict, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

FLAG_NAME = re.compile(r"-{1,2}[A-Za-z][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.+@-]+")  # no spaces or quotes: the patch headers stay unquoted
CONFIG_KEY = re.compile(r"[^.\n]+(\.[^.\n]+)*")
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml", ".py": "python"}
INTERPRETER_ENV = {"PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_PRELOAD", "LD_LIBRARY_PATH", "HOME"}
MAX_LISTED_KEYS = 20


class ParameterApplyError(ValueError):
    """A value cannot be applied the way its card says; the message names the file, key or line."""


class Application(BaseModel):
    """How one parameter reaches the code; nothing set means the params file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: str | None = None
    switch: bool = False
    file: str | None = None
    key: str | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_consistent_way(self) -> Application:
        if sum(way is not None for way in (self.flag, self.file, self.env)) > 1:
            raise ValueError("set at most one of flag, file and env")
        if self.flag is not None and not FLAG_NAME.fullmatch(self.flag):
            raise ValueError(f"flag {self.flag!r} is not an option name like --lr or -l")
        if self.switch and self.flag is None:
            raise ValueError("switch needs a flag")
        if self.key is not None and self.file is None:
            raise ValueError("key needs a file")
        if self.env is not None and not ENV_NAME.fullmatch(self.env):
            raise ValueError(f"env {self.env!r} is not an environment variable name")
        if self.file is not None:
            segments = self.file.split("/")
            if any(segment in ("", ".", "..") or not PATH_SEGMENT.fullmatch(segment) for segment in segments):
                raise ValueError(f"file {self.file!r} must be a relative path inside the repository, without '..'")
            if self.key is None:
                raise ValueError(f"file {self.file} needs a key: a dotted path such as optim.lr, or a constant's name")
            if _suffix(self.file) == ".py" and not (self.key.isidentifier() and not keyword.iskeyword(self.key)):
                raise ValueError(f"key {self.key!r} of {self.file} must be a Python identifier")
            elif not CONFIG_KEY.fullmatch(self.key):
                raise ValueError(f"key {self.key!r} must be a dotted path such as optim.lr or layers.0.units")
        return self

    @property
    def is_params_file(self) -> bool:
        return self.flag is None and self.file is None and self.env is None

    def describe(self) -> str:
        if self.flag is not None:
            return f"flag {self.flag}" + (" (switch)" if self.switch else "")
        if self.file is not None:
            return f"{self.file}: {self.key}"
        if self.env is not None:
            return f"${self.env}"
        return "the params file"


@dataclass(frozen=True)
class Applied:
    command: str
    env: dict[str, str]
    files: dict[str, str]
    patch: str
    lines: list[str]


def apply_parameters(read: Callable[[str], str | bytes], command: str, values: dict[str, Any], applications: dict[str, Application]) -> Applied:
    """The command, environment and file edits that give each parameter its value, in name order.

    `read` must return a file's text without newline translation (or its bytes), so CRLF survives.
    """
    originals: dict[str, str] = {}
    texts: dict[str, str] = {}
    env: dict[str, str] = {}
    lines: list[str] = []
    for name in sorted(values):
        application = applications.get(name)
        if application is None or application.is_params_file:
            continue
        value = _plain(name, values[name])
        if application.flag is not None:
            command = _apply_flag(command, application.flag, application.switch, name, value)
        elif application.env is not None:
            env[application.env] = _env_text(name, value)
        else:
            path, key = application.file, application.key
            assert path is not None and key is not None  # the validator pairs them
            if path not in texts:
                originals[path] = texts[path] = _read_text(read, path)
            texts[path] = _edit_file(path, texts[path], key, value)
        lines.append(f"{name}={value!r} via {application.describe()}")
    files = {path: texts[path] for path in sorted(texts) if texts[path] != originals[path]}
    patch = "".join(_git_diff(path, originals[path], text) for path, text in files.items())
    return Applied(command=command, env=env, files=files, patch=patch, lines=lines)


def validate_application(name: str, application: Application, files: Collection[str], protected: Callable[[str], bool]) -> str | None:
    """At card time: what is wrong with how this parameter is applied, or None."""
    where = f"search_space.{name}.apply"
    if application.env in INTERPRETER_ENV:
        return f"{where}: ${application.env} steers the interpreter itself; a parameter must not set it"
    if application.file is None:
        return None
    path = application.file
    if _suffix(path) not in SUFFIXES:
        return f"{where}: {path} is not a kind of file parameters can be written to (supported: {', '.join(sorted(SUFFIXES))})"
    if path not in files:
        return f"{where}: {path} is not a file of the repository"
    if protected(path):
        return f"{where}: {path} is protected (part of the evaluation protocol); a parameter must not edit it"
    return None


# ---------------------------------------------------------------- values


def _plain(name: str, value: Any) -> Any:
    """Plain Python scalars or a list of them; numpy scalars would print as `np.float64(0.1)`."""
    if hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ParameterApplyError(f"{name}=nan cannot be applied")
        return float(value)
    if isinstance(value, list | tuple) and all(item is None or isinstance(item, bool | int | float | str) for item in value):
        return [_plain(name, item) for item in value]
    raise ParameterApplyError(f"{name}={value!r}: expected a number, string, bool, null or a flat list of them")


def _word(name: str, value: Any) -> str:
    if value is None:
        raise ParameterApplyError(f"{name}=None has no command-line or environment form")
    if isinstance(value, bool):
        return str(value)
    return repr(value) if isinstance(value, float) else str(value)


def _env_text(name: str, value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_env_text(name, item) for item in value)
    return ("1" if value else "0") if isinstance(value, bool) else _word(name, value)


def _same(written: Any, value: Any) -> bool:
    if isinstance(written, list | tuple) and isinstance(value, list):
        return len(written) == len(value) and all(map(_same, written, value))
    return type(written) is type(value) and written == value


def _read_text(read: Callable[[str], str | bytes], path: str) -> str:
    try:
        content = read(path)
        return content.decode("utf-8") if isinstance(content, bytes) else content
    except UnicodeDecodeError as error:
        raise ParameterApplyError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); cannot edit it") from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, KeyError):
        raise ParameterApplyError(f"{path} does not exist in the repository") from None


# ---------------------------------------------------------------- flags


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    text: str
    operator: bool

    @property
    def word(self) -> str:
        return shlex.split(self.text)[0] if self.text else ""


_OPERATOR_CHARS = ";&|()<>"


def _tokens(command: str) -> list[_Token]:
    """Words and operators with their spans, so an edit leaves the rest of the command as written."""
    tokens: list[_Token] = []
    index = 0
    while index < len(command):
        char = command[index]
        if char in " \t":
            index += 1
        elif char == "#":  # a comment runs to the end of the line
            newline = command.find("\n", index)
            index = newline if newline >= 0 else len(command)
        elif char == "\n" or char in _OPERATOR_CHARS:
            end = index + 1
            while char != "\n" and end < len(command) and command[end] in _OPERATOR_CHARS:
                end += 1
            tokens.append(_Token(index, end, command[index:end], operator=True))
            index = end
        else:
            end = _word_end(command, index)
            tokens.append(_Token(index, end, command[index:end], operator=False))
            index = end
    return tokens


def _word_end(command: str, index: int) -> int:
    while index < len(command) and command[index] not in " \t\n" + _OPERATOR_CHARS:
        char = command[index]
        if char == "'":
            index = command.find("'", index + 1)
        elif char == '"':
            index += 1
            while index < len(command) and command[index] != '"':
                index += 2 if command[index] == "\\" else 1
        elif char == "\\":
            index += 1
        elif command.startswith("$(", index):  # a command substitution is one word here
            depth, index = 1, index + 2
            while index < len(command) and depth:
                depth += {"(": 1, ")": -1}.get(command[index], 0)
                index += 1
            index = index - 1 if not depth else len(command)
        if index < 0 or index >= len(command):
            raise ParameterApplyError(f"the command has an unterminated quote or substitution: {command!r}")
        index += 1
    return index


def _simple_commands(command: str) -> list[list[_Token]]:
    """The argument words of each simple command; redirections (`> log`, `2>&1`) are not arguments."""
    commands: list[list[_Token]] = [[]]
    tokens = _tokens(command)
    for position, token in enumerate(tokens):
        if token.operator:
            if not _is_redirection(token):
                commands.append([])
            continue
        previous = tokens[position - 1] if position else None
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        is_target = previous is not None and _is_redirection(previous)
        is_descriptor = following is not None and _is_redirection(following) and following.start == token.end and token.text.isdigit()
        if not (is_target or is_descriptor):
            commands[-1].append(token)
    return [words for words in commands if words]


def _program_of_last_pipeline(command: str) -> list[_Token]:
    """Where an absent flag goes: the first command of the last pipeline, so that in
    `cd src && python train.py | tee log` it reaches `python train.py`, not `tee`."""
    arguments = {token.start for words in _simple_commands(command) for token in words}  # not redirections
    pipelines: list[list[list[_Token]]] = [[[]]]
    for token in _tokens(command):
        if token.operator and not _is_redirection(token):
            if token.text == "|":
                pipelines[-1].append([])
            else:
                pipelines.append([[]])
        elif token.start in arguments:
            pipelines[-1][-1].append(token)
    last = next(pipeline for pipeline in reversed(pipelines) if any(pipeline))
    return next(words for words in last if words)


def _is_redirection(token: _Token) -> bool:
    return token.operator and (token.text[0] in "<>" or token.text.startswith("&>"))


def _is_value_word(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return word == "-" or not word.startswith("-")


def _apply_flag(command: str, flag: str, switch: bool, name: str, value: Any) -> str:
    """Replace the flag's value wherever it appears; if it is nowhere, append it to the last simple command."""
    if switch and not isinstance(value, bool):
        raise ParameterApplyError(f"{name}={value!r}: switch {flag} takes True (present) or False (absent)")
    if isinstance(value, list) and not value:
        raise ParameterApplyError(f"{name}=[] cannot be passed as {flag}: it needs at least one value")
    words = [] if switch else [shlex.quote(_word(name, item)) for item in (value if isinstance(value, list) else [value])]
    commands = _simple_commands(command)
    if not commands:
        raise ParameterApplyError(f"cannot pass {flag}: the command is empty")
    edits: list[tuple[int, int, str]] = []
    found = False
    for tokens in commands:
        for position, token in enumerate(tokens):
            word = token.word
            if word != flag and not word.startswith(flag + "="):
                continue
            found = True
            if switch:
                if word != flag:
                    raise ParameterApplyError(f"switch {flag} is given a value in the command: {token.text}")
                if not value:
                    start = len(command[: token.start].rstrip(" \t"))
                    edits.append((start, token.end, ""))
                continue
            following = tokens[position + 1 :]
            if word != flag and not isinstance(value, list):
                edits.append((token.start, token.end, f"{flag}={words[0]}"))
                continue
            taken = _value_words(following, many=isinstance(value, list))
            if word == flag and not taken:
                after = following[0].text if following else "nothing"
                raise ParameterApplyError(f"{flag} in the command is followed by {after}, not by a value")
            end = taken[-1].end if taken else token.end
            edits.append((token.start, end, " ".join([flag, *words])))
    if not found and (value or not switch):
        end = _program_of_last_pipeline(command)[-1].end
        edits.append((end, end, " " + " ".join([flag, *words])))
    for start, end, replacement in sorted(edits, reverse=True):
        command = command[:start] + replacement + command[end:]
    return command


def _value_words(tokens: list[_Token], many: bool) -> list[_Token]:
    taken: list[_Token] = []
    for token in tokens:
        if not _is_value_word(token.word) or (taken and not many):
            break
        taken.append(token)
    return taken


# ---------------------------------------------------------------- config files


def _suffix(path: str) -> str:
    return PurePosixPath(path).suffix.lower()


def _edit_file(path: str, text: str, key: str, value: Any) -> str:
    kind = SUFFIXES.get(_suffix(path))
    if kind is None:
        raise ParameterApplyError(f"{path}: cannot write parameters to this kind of file (supported: {', '.join(sorted(SUFFIXES))})")
    if kind == "python":
        return _set_python_constant(path, text, key, value)
    return {"yaml": _set_yaml, "json": _set_json, "toml": _set_toml}[kind](path, text, key, value)


def _walk(path: str, key: str, root: Any, children: Callable[[Any], dict[str, Any] | list[Any] | None]) -> tuple[Any, str | int, Any]:
    """The container, the step into it and the node at a dotted key; the error lists what is there instead."""
    segments = key.split(".")
    parent, step, node = None, "", root
    for depth, segment in enumerate(segments):
        inside, here = children(node), ".".join(segments[:depth])
        if isinstance(inside, dict):
            if segment not in inside:
                found = [f"{here}.{name}" if here else str(name) for name in inside][:MAX_LISTED_KEYS]
                raise ParameterApplyError(f"{path} has no key {key} (found: {', '.join(found) or 'nothing'})")
            step = segment
        elif isinstance(inside, list):
            if not (segment.isdigit() and int(segment) < len(inside)):
                raise ParameterApplyError(f"{path} has no key {key}: {here} is a list of {len(inside)} items, indexed 0 to {len(inside) - 1}")
            step = int(segment)
        else:
            raise ParameterApplyError(f"{path} has no key {key}: {here} is a single value, not a mapping or a list")
        parent, node = node, inside[step]  # type: ignore[index]
    return parent, step, node


def _lookup(data: Any, key: str) -> Any:
    for segment in key.split("."):
        if isinstance(data, list):
            data = data[int(segment)]
        else:
            data = data[segment] if segment in data else data[int(segment)]  # YAML may hold `0:` as an int key
    return data


def _check_reads_back(path: str, key: str, written: Any, value: Any) -> None:
    if not _same(written, value):
        raise ParameterApplyError(f"{path}: {key} would read back as {written!r} instead of {value!r}; not edited")


_PLAIN_YAML = re.compile(r"[A-Za-z_][A-Za-z0-9_./+-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # YAML 1.1 and 1.2 read these as bools/null


def _yaml_text(value: Any, style: str | None = None) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_text(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, exponent = text.split("e") if "e" in text else (text, "")
        return f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text
    if style == '"' or not value.isprintable():
        return json.dumps(value, ensure_ascii=not value.isprintable())
    if style == "'" or not _PLAIN_YAML.fullmatch(value) or value.lower() in _YAML_WORDS:
        return "'" + value.replace("'", "''") + "'"
    return value


def _yaml_children(node: Any) -> dict[str, Any] | list[Any] | None:
    if isinstance(node, MappingNode):
        return {str(key.value): child for key, child in node.value}
    return list(node.value) if isinstance(node, SequenceNode) else None


def _set_yaml(path: str, text: str, key: str, value: Any) -> str:
    try:
        YAML(typ="safe", pure=True).load(text)  # duplicate keys and syntax errors, with their lines
        root = YAML(typ="rt").compose(text)
    except YAMLError as error:
        raise ParameterApplyError(f"{path} is not valid YAML: {error}") from None
    _, _, node = _walk(path, key, root, _yaml_children)
    line = node.start_mark.line + 1
    if node.anchor:
        raise ParameterApplyError(f"{path}: {key} (line {line}) is anchored as &{node.anchor} and shared by aliases; edit it where the anchor's users expect")
    replaceable = (isinstance(node, ScalarNode) and node.style not in ("|", ">")) or (isinstance(node, SequenceNode) and node.flow_style)
    if not replaceable:
        what = "a mapping" if isinstance(node, MappingNode) else "a block list" if isinstance(node, SequenceNode) else "a block text"
        raise ParameterApplyError(f"{path}: {key} (line {line}) is {what}; only a single value or a [flow, list] can be replaced")
    new = _yaml_text(value, node.style if isinstance(node, ScalarNode) else None)
    edited = text[: node.start_mark.index] + new + text[node.end_mark.index :]
    _check_reads_back(path, key, _lookup(YAML(typ="safe", pure=True).load(edited), key), value)
    return edited


@dataclass(frozen=True)
class _JsonNode:
    start: int
    end: int
    children: dict[str, _JsonNode] | list[_JsonNode] | None


_JSON_DECODER = json.JSONDecoder()


def _past_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


def _json_node(text: str, index: int) -> _JsonNode:
    """The spans of a JSON value already known to be valid; the stdlib gives values but no positions."""
    start = index = _past_space(text, index)
    if text[index] not in "{[":
        _, end = _JSON_DECODER.raw_decode(text, index)
        return _JsonNode(start, end, None)
    closer = "}" if text[index] == "{" else "]"
    members: dict[str, _JsonNode] = {}
    items: list[_JsonNode] = []
    index = _past_space(text, index + 1)
    while text[index] != closer:
        if closer == "}":
            name, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
            child = members[name] = _json_node(text, _past_space(text, index) + 1)  # past the colon
        else:
            child = _json_node(text, index)
            items.append(child)
        index = _past_space(text, child.end)
        if text[index] == ",":
            index = _past_space(text, index + 1)
    return _JsonNode(start, index + 1, members if closer == "}" else items)


def _set_json(path: str, text: str, key: str, value: Any) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ParameterApplyError(f"{path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    _, _, node = _walk(path, key, _json_node(text, 0), lambda node: node.children)
    if isinstance(node.children, dict):
        raise ParameterApplyError(f"{path}: {key} is an object; only a single value or a list can be replaced")
    try:
        new = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ParameterApplyError(f"{path}: {key}={value!r} has no JSON form") from None
    edited = text[: node.start] + new + text[node.end :]  # only the old value's span: indent and newlines stay
    _check_reads_back(path, key, _lookup(json.loads(edited), key), value)
    return edited


def _toml_children(node: Any) -> dict[str, Any] | list[Any] | None:
    if isinstance(node, dict):
        return node
    return list(node) if isinstance(node, list) else None


def _set_toml(path: str, text: str, key: str, value: Any) -> str:
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as error:
        raise ParameterApplyError(f"{path} is not valid TOML: {error}") from None
    if value is None:
        raise ParameterApplyError(f"{path}: {key}=None cannot be written, TOML has no null")
    parent, step, old = _walk(path, key, document, _toml_children)
    if isinstance(old, dict | tomlkit.items.AoT):
        raise ParameterApplyError(f"{path}: {key} is a table; only a single value or an array can be replaced")
    new = tomlkit.item(value)
    keeps_literal = isinstance(old, tomlkit.items.String) and old.type == tomlkit.items.StringType.SLL
    if keeps_literal and isinstance(value, str) and "'" not in value and value.isprintable():
        new = tomlkit.string(value, literal=True)
    parent[step] = new  # tomlkit keeps the old value's trailing comment and whitespace
    edited = document.as_string()
    _check_reads_back(path, key, _lookup(tomllib.loads(edited), key), value)
    return edited


# ---------------------------------------------------------------- Python constants


def _module_scope_statements(node: ast.AST) -> list[tuple[ast.stmt, bool]]:
    """Statements that run in the module's namespace, with whether each is at the top level."""
    found: list[tuple[ast.stmt, bool]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue  # their assignments bind local names
        if isinstance(child, ast.stmt):
            found.append((child, isinstance(node, ast.Module)))
        found.extend((statement, False) for statement, _ in _module_scope_statements(child))
    return found


def _binds(target: ast.expr, name: str) -> bool:
    if isinstance(target, ast.Tuple | ast.List):
        return any(_binds(element, name) for element in target.elts)
    if isinstance(target, ast.Starred):
        return _binds(target.value, name)
    return isinstance(target, ast.Name) and target.id == name


def _constant(path: str, source: str, name: str) -> ast.expr:
    """The value expression of the one top-level `NAME = ...` or `NAME: T = ...`."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ParameterApplyError(f"{path} is not valid Python: {error.msg} (line {error.lineno})") from None
    assignments: list[tuple[ast.stmt, bool]] = []
    for statement, top in _module_scope_statements(tree):
        if isinstance(statement, ast.Assign) and any(_binds(target, name) for target in statement.targets):
            if not any(isinstance(target, ast.Name) for target in statement.targets if _binds(target, name)):
                raise ParameterApplyError(f"{path} assigns {name} by unpacking at line {statement.lineno}; cannot replace one element of it")
            assignments.append((statement, top))
        elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and _binds(statement.target, name) and statement.value is not None:
            assignments.append((statement, top))  # a bare `NAME: int` declares without assigning
    if not assignments:
        raise ParameterApplyError(f"{path} has no module-level assignment to {name}")
    if len(assignments) > 1:
        lines = ", ".join(str(statement.lineno) for statement, _ in assignments)
        raise ParameterApplyError(f"{path} assigns {name} {len(assignments)} times at module level (lines {lines}); cannot tell which one the code uses")
    statement, top = assignments[0]
    if isinstance(statement, ast.AugAssign):
        raise ParameterApplyError(f"{path} has no module-level assignment to {name}, only an update at line {statement.lineno}")
    if not top:
        raise ParameterApplyError(f"{path} assigns {name} only inside a block (line {statement.lineno}); only a top-level assignment can be edited")
    if isinstance(statement, ast.Assign) and len(statement.targets) > 1:
        raise ParameterApplyError(f"{path} assigns {name} together with other names (line {statement.lineno}); editing it would change them too")
    assert isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None
    return statement.value


def _char_offset(source: str, line_starts: list[int], lineno: int, col_offset: int) -> int:
    start = line_starts[lineno - 1]
    line = source[start : line_starts[lineno] if lineno < len(line_starts) else len(source)]
    return start + len(line.encode("utf-8")[:col_offset].decode("utf-8"))  # ast columns count UTF-8 bytes


def _python_literal(path: str, name: str, value: Any, old: ast.expr, old_source: str) -> str:
    if isinstance(value, float) and math.isinf(value):
        raise ParameterApplyError(f"{path}: {name}={value!r} has no Python literal form")
    if isinstance(value, list):
        items = [_python_literal(path, name, item, old, "") for item in value]
        if isinstance(old, ast.Tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, str) and old_source.startswith('"') and not {'"', "'"} & set(value):
        return '"' + repr(value)[1:-1] + '"'  # keep the file's double quotes
    return repr(value)


def _set_python_constant(path: str, text: str, name: str, value: Any) -> str:
    bom = "\ufeff" if text.startswith("\ufeff") else ""  # compile() refuses a BOM inside a str
    source = text[len(bom) :]
    old = _constant(path, source, name)
    line_starts = [0, *(match.end() for match in re.finditer(r"\r\n|\r|\n", source))]
    start = _char_offset(source, line_starts, old.lineno, old.col_offset)
    end = _char_offset(source, line_starts, old.end_lineno or old.lineno, old.end_col_offset or 0)
    edited = source[:start] + _python_literal(path, name, value, old, source[start:end]) + source[end:]
    written = ast.literal_eval(_constant(path, edited, name))
    _check_reads_back(path, name, written, value)
    return bom + edited


# ---------------------------------------------------------------- the patch


def _git_lines(text: str) -> list[str]:
    """Lines as git counts them: split at LF only, so CR stays part of a CRLF line."""
    pieces = text.split("\n")
    return [piece + "\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def _git_diff(path: str, old: str, new: str) -> str:
    out = [f"diff --git a/{path} b/{path}\n"]
    for line in difflib.unified_diff(_git_lines(old), _git_lines(new), f"a/{path}", f"b/{path}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)
