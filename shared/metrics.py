"""Metrics read from where an evaluation leaves them: a JSON line, lines matched by patterns, or a
results file in the workspace. Owns the task card's description of that place (`MetricSource`)
and the one function that turns an output and a workspace into named numbers (`extract_metrics`).

Rules chosen for ambiguous cases:
- No source (or one with neither patterns nor a file): the last output line that is a JSON object
  wins, as always; only when there is none, the last line that is a Python dict literal with string
  keys (HuggingFace Trainer prints `{'eval_accuracy': 0.912}`) is read the same way.
- A pattern's last match wins (the final epoch, the last seed). A pattern without groups is a label:
  the number must follow it on the same line, separated only by spaces, `:`, `=`, quotes or `|`;
  the last occurrence of the label that a number follows wins.
- A number written with `%` stays as printed (81.0% -> 81.0); only `scale` converts units, and
  `scale = "fraction"` refuses a number printed with `%`.
- Commas inside numbers (`1,234`, `0,81`) are refused: thousands separator and decimal comma
  cannot be told apart.
- A name may come from a pattern or from the file, never both; a clash is an error.
- CSV: each column's value is taken from the last row where it is non-empty, so sparse logs
  (one row for training, another for validation) still give every column's final value.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.@-]{0,63}$")]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Scale = Literal["as_printed", "percent", "fraction"]

FILE_FORMATS = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".log")
TAIL_LINES, TAIL_WIDTH = 15, 200
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_SEPARATOR = re.compile(r"[ \t:=|│'\"]*")
_NUMBER = re.compile(
    r"(?:(?P<wrap>tensor|np\.float\d+|numpy\.float\d+)\(\s*)?"
    r"(?P<number>[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|(?:nan|inf(?:inity)?)(?![A-Za-z0-9_])))"
    r"(?(wrap)(?:\s*,[^)]*)?\))"
    r"(?P<percent>\s*%)?",
    re.IGNORECASE,
)
_COMMA_IN_NUMBER = re.compile(r",\d")
_PERCENT_AFTER = re.compile(r"[ \t]*%")
_DIGITS_AFTER = re.compile(r"\.?\d")
_TEXT_ENTRY = re.compile(r"^\s*(?P<key>[^=:]+?)\s*[=:]\s*(?P<value>.*?)\s*$")
_NUMBER_CALLS = frozenset({"tensor", "torch.tensor", "np.float32", "np.float64", "numpy.float32", "numpy.float64"})


# A group that holds a quantifier and is itself quantified: `(\d+)+`, `(a*)*`, `(?:x+){2,}`.
_NESTED_QUANTIFIER = re.compile(r"\((?:\?[:P<>=!\w]*)?[^()]*(?:[+*]|\{\d*,?\d*\})\)(?:[+*]|\{\d*,?\d*\})")


class MetricsError(ValueError):
    pass


class MetricSource(BaseModel):
    """Where the evaluation leaves its metrics: the task card's `[objective.metrics]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patterns: dict[MetricName, Pattern] = Field(default_factory=dict, max_length=100, description="metric -> regular expression over the output")
    file: str | None = Field(default=None, min_length=1, max_length=1000, description="results file, relative to the workspace")
    keys: dict[MetricName, Key] = Field(default_factory=dict, max_length=100, description="metric -> dotted JSON key, CSV column or text key")
    scale: Scale = Field(default="as_printed", description="percent: printed in percent, reported as fractions; fraction: the reverse")

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            try:
                regex = _compiled(pattern)
            except re.error as error:
                raise ValueError(f"the pattern for {name!r} is not a regular expression: {error}") from None
            if regex.groups > 1 and "value" not in regex.groupindex:
                raise ValueError(f"the pattern for {name!r} has {regex.groups} groups; mark the number with (?P<value>...) or make the others (?:...)")
            if regex.fullmatch(""):
                raise ValueError(f"the pattern for {name!r} matches the empty string")
            if _NESTED_QUANTIFIER.search(pattern):
                raise ValueError(f"the pattern for {name!r} repeats a repeated group, which can take exponential time on a hostile line; write it without the nesting")
        return patterns

    @field_validator("file")
    @classmethod
    def _file_inside_workspace(cls, file: str | None) -> str | None:
        if file is None:
            return None
        if file.startswith(("/", "\\", "~")) or PureWindowsPath(file).drive or ".." in re.split(r"[\\/]", file):
            raise ValueError(f"the results file must be a path inside the workspace, not {file!r}")
        if "\0" in file or any(len(part) > 255 for part in re.split(r"[\\/]", file)):
            raise ValueError("the results file's name holds a NUL byte or a part longer than 255 characters")
        if PurePosixPath(file).suffix.lower() not in FILE_FORMATS:
            raise ValueError(f"the results file {file!r} must end in one of {', '.join(FILE_FORMATS)}")
        return file

    @model_validator(mode="after")
    def _keys_need_a_file(self) -> MetricSource:
        if self.keys and self.file is None:
            raise ValueError("keys name values in a results file; give the file too")
        if clash := sorted(set(self.patterns) & set(self.keys)):
            raise ValueError(f"metrics {', '.join(clash)} come from both a pattern and the file; choose one")
        return self

    @property
    def is_default(self) -> bool:
        return not self.patterns and self.file is None

    def describe(self) -> str:
        parts = []
        if self.patterns:
            parts.append(f"patterns for {', '.join(self.patterns)} over the output")
        if self.file is not None:
            parts.append(f"{self.file} keys {', '.join(self.keys.values())}" if self.keys else f"every number at the top of {self.file}")
        text = " and ".join(parts) or "the last JSON line of the output"
        if self.scale != "as_printed":
            text += "; percentages divided by 100" if self.scale == "percent" else "; fractions multiplied by 100"
        return text


def extract_metrics(output: str, source: MetricSource | None, read: Callable[[str], bytes | None]) -> dict[str, float]:
    """The evaluation's metrics, in the paper's unit; `read(path)` gives a workspace file's bytes or None.
    Whatever the output or the file holds, the only error is MetricsError."""
    try:
        return _extract(output, source or MetricSource(), read)
    except MetricsError:
        raise
    except (ValueError, OverflowError, RecursionError, MemoryError, OSError, RuntimeError) as error:
        # a 5000-digit number, JSON nested 100000 deep, a results file that is a symlink loop
        raise MetricsError(f"the metrics could not be read: {type(error).__name__}: {str(error)[:300]}") from None


def _extract(output: str, source: MetricSource, read: Callable[[str], bytes | None]) -> dict[str, float]:
    if source.is_default:
        return {name: _converted(name, value, False, source.scale) for name, value in _json_line_metrics(output).items()}
    metrics: dict[str, float] = {}
    text = _matchable(output)
    for name, pattern in source.patterns.items():
        metrics[name] = _converted(name, *_pattern_reading(name, pattern, text, output), source.scale)
    if source.file is not None:
        for name, (value, percent) in _file_readings(source, read).items():
            if name in metrics:
                raise MetricsError(f"metric {name!r} comes from both a pattern and {source.file}; name the file's keys")
            metrics[name] = _converted(name, value, percent, source.scale)
    return metrics


# ---------------------------------------------------------------- the default: one line of JSON


def _json_line_metrics(output: str) -> dict[str, float]:
    candidates = [line.strip() for line in output.splitlines()]
    candidates = [line for line in candidates if line.startswith("{") and line.endswith("}")]
    decoded = next((found for line in reversed(candidates) if isinstance(found := _json_object(line), dict)), None)
    if decoded is None:
        decoded = next((found for line in reversed(candidates) if (found := _python_dict(line)) is not None), None)
    if decoded is None:
        raise MetricsError(f"the evaluation printed no JSON object of metrics on a line of its own; {_last_lines(output)}")
    metrics: dict[str, float] = {}
    for name, value in decoded.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MetricsError(f"metric {name!r} is not a number: {value!r}")
        if not math.isfinite(value):
            raise MetricsError(f"metric {name!r} is not finite: {value!r}")
        metrics[name] = float(value)
    return metrics


def _json_object(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _python_dict(line: str) -> dict[str, Any] | None:
    """A dict display with string keys, its values read as literals (numbers, nan, tensor(0.8))."""
    try:
        tree = ast.parse(line, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree, ast.Dict) or not all(isinstance(key, ast.Constant) and isinstance(key.value, str) for key in tree.keys):
        return None
    return {key.value: _python_value(value) for key, value in zip(tree.keys, tree.values, strict=True)}  # type: ignore[union-attr]


def _python_value(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _python_value(node.operand)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Name) and node.id in ("nan", "inf"):
        return float(node.id)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in _NUMBER_CALLS and len(node.args) == 1:
        return _python_value(node.args[0])
    return ast.unparse(node)


# ---------------------------------------------------------------- patterns over the output


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE)


def _matchable(output: str) -> str:
    """The output without colour codes, each carriage return a line break (every tqdm state a line)."""
    return _ANSI.sub("", output).replace("\r\n", "\n").replace("\r", "\n")


def _pattern_reading(name: str, pattern: str, text: str, output: str) -> tuple[float, bool]:
    regex = _compiled(pattern)
    matches = list(regex.finditer(text))
    if not matches:
        raise MetricsError(f"no output line matches the pattern for {name!r} ({pattern!r}); {_last_lines(output)}")
    if regex.groups == 0:
        for match in reversed(matches):
            start = _SEPARATOR.match(text, match.end()).end()  # type: ignore[union-attr]
            if _NUMBER.match(text, start):
                return _number(text[start:], name, _line_at(text, start), whole=False)
        raise MetricsError(f"the pattern for {name!r} ({pattern!r}) matches, but no number follows it on the line {_line_at(text, matches[-1].start())!r}")
    match = matches[-1]
    group: str | int = "value" if "value" in regex.groupindex else 1
    captured = match.group(group)
    line = _line_at(text, match.start())
    if captured is None:
        raise MetricsError(f"the pattern for {name!r} ({pattern!r}) matches the line {line!r}, but its group captured nothing")
    if _DIGITS_AFTER.match(text, match.end(group)):
        raise MetricsError(f"the pattern for {name!r} ({pattern!r}) captures {captured!r}, only part of the number on the line {line!r}")
    value, percent = _number(captured, name, line, whole=True)
    return value, percent or _PERCENT_AFTER.match(text, match.end(group)) is not None


def _line_at(text: str, position: int) -> str:
    end = text.find("\n", position)
    return text[text.rfind("\n", 0, position) + 1 : end if end >= 0 else len(text)].strip()[:TAIL_WIDTH]


def _last_lines(output: str) -> str:
    screen = [_last_state(line) for line in _ANSI.sub("", output).replace("\r\n", "\n").split("\n")]
    lines = [line for line in screen if line][-TAIL_LINES:]
    if not lines:
        return "the command printed nothing"
    return "the last lines printed were:\n" + "\n".join(f"  {line[:TAIL_WIDTH]}" for line in lines)


def _last_state(line: str) -> str:
    """What a terminal shows for a line a progress bar rewrote with carriage returns."""
    states = [state.rstrip() for state in line.split("\r") if state.strip()]
    return states[-1] if states else ""


# ---------------------------------------------------------------- numbers and units


def _number(text: str, name: str, where: str, *, whole: bool) -> tuple[float, bool]:
    """The number at the start of `text` (all of it when `whole`), and whether a % sign followed it."""
    stripped = text.strip() if whole else text
    match = _NUMBER.match(stripped)
    if match and _COMMA_IN_NUMBER.match(stripped, match.end("number")):
        raise MetricsError(f"metric {name!r}: a comma inside the number ({where!r}) could be a thousands separator or a decimal comma; print it without one")
    if match is None or (whole and match.end() != len(stripped)):
        raise MetricsError(f"metric {name!r}: {text[:TAIL_WIDTH]!r} is not a number ({where!r})")
    value = float(match["number"])
    if not math.isfinite(value):
        raise MetricsError(f"metric {name!r} is not finite ({match['number']}) on the line {where!r}")
    return value, match["percent"] is not None


def _converted(name: str, value: float, percent: bool, scale: Scale) -> float:
    if scale == "percent":
        return value / 100
    if scale == "fraction":
        if percent:
            raise MetricsError(f"metric {name!r} was printed with a % sign, but the card's scale says the code prints fractions")
        return value * 100
    return value


# ---------------------------------------------------------------- results files


def _file_readings(source: MetricSource, read: Callable[[str], bytes | None]) -> dict[str, tuple[float, bool]]:
    path = source.file or ""
    data = read(path)
    if data is None:
        raise MetricsError(f"the results file {path!r} is not in the workspace; the evaluation did not write it")
    text = data.decode("utf-8-sig", errors="replace")
    suffix = PurePosixPath(path).suffix.lower()
    document = _json_document(text, path, suffix) if suffix in (".json", ".jsonl") else _flat_document(text, path, suffix)
    if not source.keys:
        if not isinstance(document, dict):
            raise MetricsError(f"{path} holds a {type(document).__name__}, not an object; name the metrics' keys")
        found = {key: _file_number(value, key, f"{path}, key {key!r}") for key, value in document.items() if _numeric(value)}
        if not found:
            raise MetricsError(f"{path} holds no number at its top level; keys found: {_listed(document)}")
        return found
    nested = suffix in (".json", ".jsonl")
    return {name: _file_number(_nested_value(document, key, path) if nested else _flat_value(document, key, path), name, f"{path}, key {key!r}") for name, key in source.keys.items()}


def _json_document(text: str, path: str, suffix: str) -> Any:
    if suffix == ".jsonl":
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise MetricsError(f"{path} is empty")
        text = lines[-1]
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise MetricsError(f"{path} is not valid JSON: {error}") from None


def _flat_document(text: str, path: str, suffix: str) -> dict[str, str]:
    """Each CSV column's last non-empty cell, or each text key's last value."""
    latest: dict[str, str] = {}
    if suffix in (".csv", ".tsv"):
        try:
            rows = [row for row in csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",") if any(cell.strip() for cell in row)]
        except csv.Error as error:
            raise MetricsError(f"{path} is not a readable table: {error}") from None
        if len(rows) < 2:
            raise MetricsError(f"{path} has no row of values under its header")
        header = [column.strip() for column in rows[0]]
        latest = dict.fromkeys(header, "")
        for row in rows[1:]:
            latest.update((column, cell.strip()) for column, cell in zip(header, row, strict=False) if cell.strip())
        return latest
    for line in _matchable(text).split("\n"):
        if entry := _TEXT_ENTRY.match(line):
            latest[entry["key"]] = entry["value"]
    return latest


def _nested_value(document: Any, key: str, path: str) -> Any:
    """The value at a dotted key; a dict's own key may contain dots (the longest one present wins)."""
    node, parts = document, key.split(".")
    while parts:
        if isinstance(node, dict):
            heads = (".".join(parts[:size]) for size in range(len(parts), 0, -1))
            head = next((head for head in heads if head in node), None)
            if head is None:
                raise MetricsError(f"{path} has no key {key!r}: at {parts[0]!r} the keys found were {_listed(node)}")
            node, parts = node[head], parts[len(head.split(".")) :]
        elif isinstance(node, list):
            try:
                node, parts = node[int(parts[0])], parts[1:]
            except (ValueError, IndexError):
                raise MetricsError(f"{path} has no key {key!r}: {parts[0]!r} does not index a list of {len(node)} items") from None
        else:
            raise MetricsError(f"{path} has no key {key!r}: the value before {parts[0]!r} is {node!r}")
    return node


def _flat_value(document: dict[str, str], key: str, path: str) -> str:
    if key not in document:
        raise MetricsError(f"{path} has no key {key!r}; keys found: {_listed(document)}")
    if not document[key]:
        raise MetricsError(f"{path}: {key!r} has no value in any row")
    return document[key]


def _numeric(value: Any) -> bool:
    if isinstance(value, str):
        match = _NUMBER.match(value.strip())
        return match is not None and match.end() == len(value.strip())
    return isinstance(value, int | float) and not isinstance(value, bool)


def _file_number(value: Any, name: str, where: str) -> tuple[float, bool]:
    if isinstance(value, str):
        return _number(value, name, where, whole=True)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(f"metric {name!r} is not a number: {where} holds {str(value)[:TAIL_WIDTH]!r}")
    if not math.isfinite(value):
        raise MetricsError(f"metric {name!r} is not finite ({value}) in {where}")
    return float(value), False


def _listed(mapping: dict[str, Any]) -> str:
    names = list(mapping)
    return (", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")) or "none"
