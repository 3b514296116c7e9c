"""Load a scenario file: parse, validate, read its knowledge, and report every problem with its line.

    load_scenario("s.yaml")  ->  LoadedScenario(scenario, path, sha256, knowledge_text, knowledge_files)
    or raises ScenarioError([
        "s.yaml:7: judge.threshold: must be between 0 and 1, got 1.5",
        "s.yaml:12: quiz[2].keywords[0]: not a valid regular expression (...): '(Korrin'",
    ])

Lines come from the composed YAML node tree (`yaml.compose`), so each problem points at the offending key,
or at the nearest enclosing mapping when a field is missing.

Input is bounded, so a hostile or mistaken file fails in a moment with one line instead of eating memory:
a YAML file is at most MAX_YAML_BYTES, expands to at most MAX_YAML_NODES nodes through its aliases (an
"alias bomb" of nested `&a [*b, *b, ...]` would expand to billions), nests at most MAX_YAML_DEPTH deep;
a knowledge file is at most MAX_KNOWLEDGE_BYTES of UTF-8 text without NUL bytes.

`load_scenario(path, check_files=True)` (what `teachback validate` does) also checks what a run would
only find out later: each adapter file exists and is a GGUF LoRA adapter, memory.url is http(s)://host:port,
and each variable an `api_key_env` names is set (its value is never shown).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from teachback.errors import ScenarioError
from teachback.scenarios.schema import Scenario

BUNDLED_DIR = Path(__file__).resolve().parent

Loc = tuple[str | int, ...]

# Limits no real scenario comes near (the bundled ones are about 3 KB, their knowledge about 2 KB).
MAX_YAML_BYTES = 2 * 1024 * 1024  # a scenario or quiz file
MAX_YAML_NODES = 100_000  # scalars, lists and mappings, with every alias expanded
MAX_YAML_DEPTH = 100  # lists and mappings inside one another
MAX_KNOWLEDGE_BYTES = 4 * 1024 * 1024  # one knowledge file
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with its resolved file, content hash and knowledge text."""

    scenario: Scenario
    path: Path  # resolved
    sha256: str  # of the scenario file's bytes
    knowledge_text: str  # inline text, then each file's text, joined by blank lines
    knowledge_files: list[Path] = field(default_factory=list)  # resolved
    # sentences of the knowledge addressed to a model ("ignore all previous instructions ..."): left out of
    # knowledge_text, so no prompt ever holds them (agents/instructions.py)
    left_out: list[str] = field(default_factory=list)


def bundled_scenarios() -> list[Path]:
    """The scenario scripts that ship with teachback."""
    return sorted(BUNDLED_DIR.glob("*.yaml"))


def find_scenario(name_or_path: str) -> Path:
    """An existing file path as given, else a bundled scenario by name (`invented-domain`)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    stem = name_or_path[: -len(".yaml")] if name_or_path.endswith(".yaml") else name_or_path
    for bundled in bundled_scenarios():
        if bundled.stem == stem:
            return bundled
    names = ", ".join(p.stem for p in bundled_scenarios()) or "none"
    raise ScenarioError([f"{name_or_path}: no such scenario file or bundled scenario (bundled: {names})"])


def load_scenario(path: str | Path, *, check_files: bool = False) -> LoadedScenario:
    """Parse and validate a scenario file; raises ScenarioError listing every problem found.

    With `check_files`, also check the adapter files and the memory URL it names (see the module docstring).
    """
    shown = str(path)
    file = Path(path).expanduser()
    raw, root, data = _read_yaml(shown, file)

    lines, problems = map_lines(root)  # problems: (line, "field: message")
    scenario = _validate(data, lines, problems)
    texts, files = _read_knowledge(data.get("knowledge"), file.resolve().parent, lines, problems)
    if check_files and scenario is not None:
        _check_adapters(scenario, file.resolve().parent, lines, problems)
        _check_memory_url(scenario, lines, problems)
        _check_key_variables(scenario, lines, problems)

    if problems or scenario is None:
        problems.sort(key=lambda p: p[0])  # stable: same-line problems keep their order
        raise ScenarioError([f"{shown}:{line}: {what}" for line, what in problems])
    if scenario.knowledge and scenario.knowledge.text.strip():
        texts.insert(0, scenario.knowledge.text.strip())
    from teachback.agents.instructions import without_instructions

    knowledge_text, left_out = without_instructions("\n\n".join(texts))
    return LoadedScenario(
        scenario=scenario,
        path=file.resolve(),
        sha256=hashlib.sha256(raw).hexdigest(),
        knowledge_text=knowledge_text,
        knowledge_files=files,
        left_out=left_out,
    )


def read_yaml(
    shown: str, file: Path, kind: str = "scenario file", formats: str = "YAML"
) -> tuple[bytes, yaml.Node | None, Any]:
    """A YAML (or JSON) file's bytes, composed node tree (None when empty) and data.

    Each way it can fail is a one-problem ScenarioError naming `shown` and what the file should be.
    """
    expected = f"a {formats} {kind}"
    if not file.exists():
        raise ScenarioError([f"{shown}: no such {kind}"])
    if not file.is_file():
        raise ScenarioError([f"{shown}: not a file; expected {expected}"])
    try:
        size = file.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ScenarioError(
                [
                    f"{shown}: too large ({_size(size)}); a {kind} may be at most {_size(MAX_YAML_BYTES)} "
                    "(MAX_YAML_BYTES): put long reference text in knowledge files"
                ]
            )
        with file.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # the file may have grown since stat
        if len(raw) > MAX_YAML_BYTES:
            raise ScenarioError([f"{shown}: too large; a {kind} may be at most {_size(MAX_YAML_BYTES)}"])
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ScenarioError([f"{shown}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ScenarioError([f"{shown}: not UTF-8 text; expected {expected}"]) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ScenarioError(
            [f"{shown}:{line}: (file): contains NUL bytes (a binary file?); expected {expected}"]
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_size(shown, root)  # before anything expands the aliases
        data = yaml.safe_load(text) if root is not None else None
    except yaml.YAMLError as exc:
        raise ScenarioError([_yaml_problem(shown, exc)]) from None
    except RecursionError:
        raise ScenarioError(
            [f"{shown}: (yaml): nested too deeply; at most {MAX_YAML_DEPTH} levels (MAX_YAML_DEPTH)"]
        ) from None
    return raw, root, data


def _check_size(shown: str, root: yaml.Node) -> None:
    """Refuse a node tree that expands (through aliases) to more than MAX_YAML_NODES nodes, nests deeper
    than MAX_YAML_DEPTH, or holds itself (an alias inside its own anchor). Stops at the first limit, so an
    alias bomb costs no more than MAX_YAML_NODES steps."""
    count = 0
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, True)]  # (node, depth, entering?)
    while stack:
        node, depth, entering = stack.pop()
        if not entering:
            on_path.discard(id(node))
            continue
        line = node.start_mark.line + 1
        count += 1
        if count > MAX_YAML_NODES:
            raise ScenarioError(
                [
                    f"{shown}:{line}: (yaml): expands to more than {MAX_YAML_NODES} values through its "
                    f"aliases (*name) (MAX_YAML_NODES = {MAX_YAML_NODES}; an alias bomb?): "
                    "write the values out, or use fewer aliases"
                ]
            )
        if depth > MAX_YAML_DEPTH:
            raise ScenarioError(
                [f"{shown}:{line}: (yaml): nested more than {MAX_YAML_DEPTH} levels deep (MAX_YAML_DEPTH)"]
            )
        if isinstance(node, yaml.ScalarNode):
            continue
        if id(node) in on_path:
            raise ScenarioError(
                [f"{shown}:{line}: (yaml): an alias refers to a value that contains it; remove the alias"]
            )
        on_path.add(id(node))
        stack.append((node, depth, False))
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = list(node.value)
        stack.extend((child, depth + 1, True) for child in reversed(children))


def _size(n: int) -> str:
    """2097152 -> '2 MiB', 1536 -> '1.5 KiB'."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _read_yaml(shown: str, file: Path) -> tuple[bytes, yaml.MappingNode, dict[str, Any]]:
    """A scenario file's bytes, node tree and data; a one-problem ScenarioError when it is not a mapping."""
    raw, root, data = read_yaml(shown, file)
    if root is None:
        raise ScenarioError(
            [f"{shown}:1: (file): the file is empty; expected a mapping with name and objectives"]
        )
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        line = root.start_mark.line + 1
        expected = "expected a mapping of fields (name:, objectives:, ...)"
        raise ScenarioError([f"{shown}:{line}: (top level): {expected}, got {_kind(data)}"])
    return raw, root, data


def record_errors(
    exc: ValidationError,
    lines: dict[Loc, int],
    problems: list[tuple[int, str]],
    place: Callable[[Loc], Loc] = lambda loc: loc,
) -> None:
    """Each validation error as a `(line, "field: message")` problem; `place` maps a schema location to
    where it sits in the file (a quiz file's items are a scenario's `quiz:` list)."""
    for error in exc.errors():
        # a list-level check (duplicates) names the offending item in ctx["at"]
        loc = tuple(error["loc"]) + tuple((error.get("ctx") or {}).get("at", ()))
        here = place(loc)
        problems.append((_line(lines, here), f"{_dotted(here) or '(top level)'}: {_message(error, loc)}"))


def map_lines(root: yaml.Node) -> tuple[dict[Loc, int], list[tuple[int, str]]]:
    """The line of every key and item under `root`, and the problems found on the way (duplicate keys)."""
    lines: dict[Loc, int] = {}
    problems: list[tuple[int, str]] = []
    _map_lines(root, (), lines, problems)
    return lines, problems


def _validate(
    data: dict[str, Any], lines: dict[Loc, int], problems: list[tuple[int, str]]
) -> Scenario | None:
    """The validated Scenario, or None after recording each validation error as a problem."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        record_errors(exc, lines, problems)
        return None


def _read_knowledge(
    knowledge: Any, base: Path, lines: dict[Loc, int], problems: list[tuple[int, str]]
) -> tuple[list[str], list[Path]]:
    """Read each knowledge file that the data names; record a problem for each one that cannot be read."""
    names = knowledge.get("files") if isinstance(knowledge, dict) else None
    if not isinstance(names, list):
        return [], []
    texts: list[str] = []
    files: list[Path] = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            continue  # the schema reports it
        loc: Loc = ("knowledge", "files", i)
        where = f"{_dotted(loc)}: "
        path = (base / Path(name).expanduser()).resolve()
        try:
            size = path.stat().st_size
            if path.is_file() and size > MAX_KNOWLEDGE_BYTES:
                problems.append(
                    (
                        _line(lines, loc),
                        where + f"too large ({_size(size)}); a knowledge file may be at most "
                        f"{_size(MAX_KNOWLEDGE_BYTES)} (MAX_KNOWLEDGE_BYTES): keep the text the "
                        f"student should learn: {path}",
                    )
                )
                continue
            data = path.read_bytes()
            if b"\0" in data:
                problems.append(
                    (_line(lines, loc), where + f"not a text file (it holds NUL bytes; binary?): {path}")
                )
                continue
            content = data.decode("utf-8").strip()
        except FileNotFoundError:
            problems.append((_line(lines, loc), where + f"no such file: {path}"))
            continue
        except IsADirectoryError:
            problems.append((_line(lines, loc), where + f"is a folder, expected a text file: {path}"))
            continue
        except OSError as exc:
            problems.append((_line(lines, loc), where + f"cannot read {path}: {exc.strerror}"))
            continue
        except UnicodeDecodeError:
            problems.append((_line(lines, loc), where + f"not UTF-8 text: {path}"))
            continue
        if not content:
            problems.append((_line(lines, loc), where + f"the file is empty: {path}"))
            continue
        texts.append(content)
        files.append(path)
    return texts, files


def _seats(scenario: Scenario) -> list[tuple[Loc, Any]]:
    """Every teacher and student seat with where it sits in the file: ("teacher",), ("students", 1), ..."""
    seats: list[tuple[Loc, Any]] = []
    for single, several in (("teacher", "teachers"), ("student", "students")):
        group = getattr(scenario, several)
        if group is None:
            seats.append(((single,), getattr(scenario, single)))
        else:
            seats.extend(((several, i), seat) for i, seat in enumerate(group))
    return seats


def _check_adapters(
    scenario: Scenario, base: Path, lines: dict[Loc, int], problems: list[tuple[int, str]]
) -> None:
    """Each seat's adapter (but "latest", found at run time) is a GGUF file whose general.type is adapter."""
    for loc, seat in _seats(scenario):
        adapter = getattr(seat, "adapter", None)
        if not adapter or adapter == "latest":
            continue
        here = loc + ("adapter",)
        problem = adapter_problem((base / adapter).expanduser())
        if problem:
            problems.append((_line(lines, here), f"{_dotted(here)}: {problem}"))


def adapter_problem(path: Path) -> str | None:
    """Why `path` is not a LoRA adapter a local model can wear, or None when it is one."""
    hint = "give a LoRA adapter from `teachback finetune` (`teachback adapters` lists them), or latest"
    try:
        if not path.exists():
            return f"no such adapter file: {path}; {hint}"
        if not path.is_file():
            return f"is a folder, expected a GGUF adapter file: {path}"
        with path.open("rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if magic != GGUF_MAGIC:
        return f"not a GGUF file (it does not start with GGUF): {path}; {hint}"
    try:
        from teachback.agents.models import gguf_metadata

        kind = gguf_metadata(path, ("general.type",)).get("general.type")
    except Exception as exc:  # noqa: BLE001 - a cut or corrupt file raises struct and value errors
        return f"not a readable GGUF file ({' '.join(str(exc).split())[:120]}): {path}"
    if kind != "adapter":
        said = f"general.type is {kind!r}" if kind is not None else "no general.type"
        return f"not a LoRA adapter ({said}, a model file?): {path}; {hint}"
    return None


def _check_key_variables(scenario: Scenario, lines: dict[Loc, int], problems: list[tuple[int, str]]) -> None:
    """Each variable an `api_key_env` names is set in this environment (a run reads the key from it)."""
    import os

    for loc, seat in [*_seats(scenario), (("judge",), scenario.judge)]:
        name = seat.api_key_env
        if name is None or os.environ.get(name, "").strip():
            continue
        here = loc + ("api_key_env",)
        said = "is empty" if name in os.environ else "is not set"
        problems.append(
            (
                _line(lines, here),
                f"{_dotted(here)}: the environment variable {name} {said}; export {name}=<the key> before "
                "the run (the key stays out of the scenario)",
            )
        )


def _check_memory_url(scenario: Scenario, lines: dict[Loc, int], problems: list[tuple[int, str]]) -> None:
    url = scenario.memory.url
    if url is None:
        return
    from teachback.memory.store import memory_url_problem

    problem = memory_url_problem(url)
    if problem:
        problems.append((_line(lines, ("memory", "url")), f"memory.url: {problem}"))


# --- line numbers -------------------------------------------------------------------------------------


def _map_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[tuple[int, str]]) -> None:
    """Record the 1-based line of every key and list item; report keys that appear twice in one mapping."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    (line, f"{_dotted(loc + (key,))}: duplicate key; first given on line {seen[key]}")
                )
            else:
                seen[key] = line
            lines[loc + (key,)] = line  # a repeated key: the last one wins, as in the loaded data
            _map_lines(value_node, loc + (key,), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _map_lines(item, loc + (i,), lines, problems)


def _line(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of `loc`, or of its nearest parent that exists in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _dotted(loc: Loc) -> str:
    """('quiz', 2, 'keywords', 0) -> 'quiz[2].keywords[0]'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _yaml_problem(shown: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"{problem} ({context})" if context else problem
    if "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    elif "<block" in message:
        message += "; check the indentation"
    return f"{shown}:{line}: (yaml): {message}"


# --- messages -----------------------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
    "dict_type": "a mapping of fields",
}


def _message(error: Any, loc: Loc) -> str:
    """A short sentence for one pydantic error: what is wrong and what is expected."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        info = _field_info(loc)
        return "required field is missing" + (f": {info.description}" if info and info.description else "")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is None:
            return "unknown field"
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown field; {hint}expected one of {', '.join(model.model_fields)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_shown(value)}"
    if kind == "literal_error" and ctx.get("expected"):
        return f"expected {ctx['expected']}, got {_shown(value)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _bounds(loc)
        if low is not None and high is not None:
            return f"must be between {low:g} and {high:g}, got {_shown(value)}"
        if low is not None:
            return f"must be at least {low:g}, got {_shown(value)}"
        if high is not None:
            return f"must be at most {high:g}, got {_shown(value)}"
    if kind == "too_short" and ctx.get("min_length") is not None:
        least, got = ctx["min_length"], ctx.get("actual_length", 0)
        return f"must have at least {least} item{'s' if least != 1 else ''}, got {got or 'an empty list'}"
    if kind == "too_long" and ctx.get("max_length") is not None:
        return f"must have at most {ctx['max_length']} item(s)"
    message = str(error["msg"])
    return message[len("Value error, ") :] if message.startswith("Value error, ") else message


def _shown(value: Any) -> str:
    """A value as YAML would spell it, short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {_shown(value)}"
    return _shown(value)


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The schema model that validates the value at `loc` (list indexes skipped), if any."""
    model: type[BaseModel] = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return None
        inner = _model_in(info.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _field_info(loc: Loc) -> Any:
    fields = [p for p in loc if not isinstance(p, int)]
    if not fields:
        return None
    model = _model_at(tuple(fields[:-1]))
    return model.model_fields.get(fields[-1]) if model else None


def _bounds(loc: Loc) -> tuple[float | None, float | None]:
    """The (ge or gt, le or lt) limits declared on the field at `loc`."""
    info = _field_info(loc)
    low = high = None
    for meta in getattr(info, "metadata", ()):
        for name in ("ge", "gt"):
            if getattr(meta, name, None) is not None:
                low = getattr(meta, name)
        for name in ("le", "lt"):
            if getattr(meta, name, None) is not None:
                high = getattr(meta, name)
    return low, high
