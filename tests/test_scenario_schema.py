"""Scenario files: bundled scripts load and carry their quiz facts; malformed files give exact problems."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from teachback.errors import ScenarioError
from teachback.scenarios.loader import bundled_scenarios, find_scenario, load_scenario
from teachback.scenarios.schema import Scenario

BUNDLED = ["invented-domain", "skill-procedure"]  # one teacher, one student, all SmolLM2
SEATED = ["bidirectional", "classroom", "teacher-panel"]  # several seats or models: tests/test_<kind>.py


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value.problems


# --- the bundled scenarios ----------------------------------------------------------------------------


def test_bundled_scenarios_are_listed() -> None:
    assert [p.stem for p in bundled_scenarios()] == sorted(BUNDLED + SEATED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_scenario_loads_and_grounds_its_quiz(name: str) -> None:
    loaded = load_scenario(find_scenario(name))
    s = loaded.scenario
    assert s.name == name
    assert 4 <= len(s.objectives) <= 6
    assert 6 <= len(s.quiz) <= 12
    assert s.turns == 4
    assert (s.teacher.model, s.student.model, s.judge.model) == (
        "local/qwen2.5-0.5b",
        "local/smollm2-135m",
        "local/qwen2.5-1.5b",
    )  # the bundled cast
    assert "only the notes" in " ".join((s.teacher.system_prompt or "").split())
    words = len(loaded.knowledge_text.split())
    assert 250 <= words <= 450, words
    assert loaded.knowledge_files and all(p.is_file() for p in loaded.knowledge_files)
    for item in s.quiz:
        assert item.keywords, item.question
        for keyword in item.keywords:
            assert re.search(keyword, loaded.knowledge_text, re.IGNORECASE), (item.question, keyword)
            assert re.search(keyword, item.answer, re.IGNORECASE), (item.answer, keyword)
        # held out: the question is not a sentence copied from the notes
        assert item.question.rstrip("?").lower() not in loaded.knowledge_text.lower()


@pytest.mark.parametrize("name", BUNDLED + SEATED)
def test_bundled_prompts_carry_no_facts(name: str) -> None:
    """The runtime injects the knowledge; no prompt may hold a quiz fact itself."""
    s = load_scenario(find_scenario(name)).scenario
    roles = [s.teacher, s.student, s.judge, *(s.teachers or []), *(s.students or [])]
    prompts = [r.system_prompt or "" for r in roles] + [s.description]
    for item in s.quiz:
        for keyword in item.keywords:
            assert not any(re.search(keyword, p, re.IGNORECASE) for p in prompts), keyword


# --- a valid file -------------------------------------------------------------------------------------


def test_load_reads_knowledge_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("# Heading\n\nKorrin is the capital.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("The Ossary is a river.", encoding="utf-8")
    path = write(
        tmp_path,
        "name: t\nknowledge:\n  text: Vellmar is an island.\n  files: [notes/a.md, b.txt]\nobjectives: [a]\n",
    )
    monkeypatch.chdir(tmp_path / "notes")  # relative to the scenario file, not the working directory
    loaded = load_scenario(path)
    assert loaded.path == path.resolve()
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.knowledge_text == (
        "Vellmar is an island.\n\n# Heading\n\nKorrin is the capital.\n\nThe Ossary is a river."
    )
    assert loaded.knowledge_files == [(tmp_path / "notes" / "a.md").resolve(), (tmp_path / "b.txt").resolve()]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.sha256 = "x"  # type: ignore[misc]


def test_role_defaults_differ_per_seat(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, "name: t\nobjectives: [a]\n")).scenario
    assert (s.teacher.temperature, s.teacher.max_tokens) == (0.2, 160)
    assert (s.student.temperature, s.student.max_tokens, s.student.adapter) == (0.7, 64, None)
    assert (s.judge.temperature, s.judge.max_tokens, s.judge.threshold) == (0.0, 96, 0.6)
    assert (s.turns, s.answer_retries, s.question_retries, s.teachback, s.seed) == (4, 1, 2, True, 0)
    assert s.knowledge is None and s.quiz == []
    # a seat given in part keeps its own defaults for the rest
    s = load_scenario(write(tmp_path, "name: t\nobjectives: [a]\nstudent: {adapter: latest}\n")).scenario
    assert (s.student.temperature, s.student.max_tokens, s.student.adapter) == (0.7, 64, "latest")


def test_every_field_has_a_description() -> None:
    from teachback.scenarios import schema

    for model in (schema.Scenario, schema.Knowledge, schema.Role, schema.StudentRole, schema.JudgeRole):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


# --- malformed files: exact field, line and message ---------------------------------------------------

OK = "name: t\nobjectives: [a]\n"

# (id, file text, FIELD, LINE, message fragment)
CASES = [
    ("missing-name", "# c\nknowledge:\n  text: x\nobjectives: [a]\n", "name", 2, "required field is missing"),
    ("missing-objectives", "name: t\nknowledge:\n  text: x\n", "objectives", 1, "required field is missing"),
    ("empty-objectives", "name: t\nobjectives: []\n", "objectives", 2, "at least 1 item, got an empty list"),
    ("blank-objective", "name: t\nobjectives:\n  - a\n  - '  '\n", "objectives[1]", 4, "must not be empty"),
    (
        "duplicate-objective",
        "name: t\nobjectives:\n  - the capital\n  - the river\n  - The  Capital\n",
        "objectives[2]",
        5,
        "duplicate of objectives[0]",
    ),
    (
        "unknown-top-level",
        OK + "colour: blue\n",
        "colour",
        3,
        "unknown field; expected one of name, description",
    ),
    (
        "unknown-in-teacher",
        OK + "teacher:\n  model: local/smollm2-135m\n  temprature: 0.5\n",
        "teacher.temprature",
        5,
        "did you mean temperature?",
    ),
    (
        "temperature-range",
        OK + "student:\n  temperature: 2.5\n",
        "student.temperature",
        4,
        "between 0 and 2, got 2.5",
    ),
    (
        "max-tokens-zero",
        OK + "teacher:\n  max_tokens: 0\n",
        "teacher.max_tokens",
        4,
        "between 1 and 4096, got 0",
    ),
    (
        "threshold-range",
        OK + "judge:\n  threshold: 1.5\n",
        "judge.threshold",
        4,
        "must be between 0 and 1, got 1.5",
    ),
    (
        "threshold-word",
        OK + "judge:\n  threshold: high\n",
        "judge.threshold",
        4,
        "expected a number, got 'high'",
    ),
    (
        "threshold-quoted",
        OK + "judge:\n  threshold: '0.7'\n",
        "judge.threshold",
        4,
        "expected a number, got '0.7'",
    ),
    ("turns-zero", OK + "turns: 0\n", "turns", 3, "must be at least 1, got 0"),
    ("turns-word", OK + "turns: many\n", "turns", 3, "expected a whole number, got 'many'"),
    ("turns-float", OK + "turns: 2.5\n", "turns", 3, "expected a whole number, got 2.5"),
    ("retries-range", OK + "answer_retries: 6\n", "answer_retries", 3, "between 0 and 5, got 6"),
    ("teachback-not-bool", OK + "teachback: sometimes\n", "teachback", 3, "expected true or false"),
    ("role-null", OK + "teacher:\n", "teacher", 3, "expected a mapping of fields, got nothing"),
    (
        "quiz-no-answer",
        OK + "quiz:\n  - question: q1\n    answer: a1\n  - question: q2\n    keywords: [x]\n",
        "quiz[1].answer",
        6,
        "required field is missing",
    ),
    (
        "quiz-bad-regex",
        OK + "quiz:\n  - question: q\n    answer: a\n    keywords:\n      - ok\n      - '(Korrin'\n",
        "quiz[0].keywords[1]",
        8,
        "not a valid regular expression",
    ),
    (
        "quiz-empty-regex",
        OK + "quiz:\n  - question: q\n    answer: a\n    keywords: ['']\n",
        "quiz[0].keywords[0]",
        6,
        "matches everything",
    ),
    (
        "quiz-duplicate-question",
        OK + "quiz:\n  - question: Where?\n    answer: a\n  - question: where?\n    answer: b\n",
        "quiz[1].question",
        6,
        "the same question as quiz[0]",
    ),
    (
        "knowledge-file-missing",
        "name: t\nknowledge:\n  files:\n    - k.md\n    - gone.md\nobjectives: [a]\n",
        "knowledge.files[1]",
        5,
        "no such file: ",
    ),
    (
        "knowledge-empty",
        "name: t\nknowledge:\n  text: ''\nobjectives: [a]\n",
        "knowledge",
        2,
        "needs `text` or `files`",
    ),
    (
        "unknown-local-model",
        OK + "judge:\n  model: local/nope\n",
        "judge.model",
        4,
        "unknown local model 'local/nope'",
    ),
    ("model-no-provider", OK + "teacher:\n  model: mystery\n", "teacher.model", 4, "names no provider"),
    (
        "yaml-syntax",
        "name: t\nobjectives: [a]\nturns: 3: 4\n",
        "(yaml)",
        3,
        "mapping values are not allowed here",
    ),
    ("yaml-indent", "name: t\nobjectives: [a]\n  turns: 3\n", "(yaml)", 3, "check the indentation"),
    ("yaml-tab", "name: t\nobjectives:\n\t- a\n", "(yaml)", 3, "indent with spaces, not tabs"),
    ("yaml-unclosed", "name: t\nobjectives: [a, b\n", "(yaml)", 3, "expected ',' or ']'"),
    ("top-level-list", "- name: t\n- objectives: [a]\n", "(top level)", 1, "expected a mapping of fields"),
    ("top-level-text", "\n\njust words\n", "(top level)", 3, "got text 'just words'"),
    (
        "duplicate-key",
        "name: t\nobjectives: [a]\nname: u\n",
        "name",
        3,
        "duplicate key; first given on line 1",
    ),
    (
        "teacher-and-teachers",
        OK + "teacher:\n  model: local/smollm2-135m\nteachers:\n  - {name: ada}\n",
        "teachers",
        5,
        "give either `teacher:` (one) or `teachers:` (a list), not both",
    ),
    (
        "student-and-students",
        OK + "students:\n  - {name: ana}\nstudent: {max_tokens: 9}\n",
        "students",
        3,
        "give either `student:` (one) or `students:` (a list), not both",
    ),
    (
        "duplicate-teacher-name",
        OK + "teachers:\n  - {name: ada}\n  - {name: bo}\n  - {name: Ada}\n",
        "teachers[2].name",
        6,
        "the same name as teachers[0]",
    ),
    (
        "name-clashes-with-default",
        OK + "students:\n  - {model: local/smollm2-135m}\n  - {name: student-1}\n",
        "students[1].name",
        5,
        "the same name as students[0]",
    ),
    ("bad-seat-name", OK + "teachers:\n  - name: a b\n", "teachers[0].name", 4, "a seat name is 1 to 40"),
    ("reserved-seat-name", OK + "students:\n  - name: judge\n", "students[0].name", 4, "is reserved"),
    ("empty-panel", OK + "teachers: []\n", "teachers", 3, "at least 1 item"),
    (
        "finetune-needs-local",
        OK + "student:\n  model: openai/gpt-4o-mini\n  learning: finetune\n",
        "student.learning",
        5,
        "finetune needs a local GGUF student",
    ),
    (
        "learning-word",
        OK + "student:\n  learning: osmosis\n",
        "student.learning",
        4,
        "expected 'finetune' or",
    ),
    ("panel-select", OK + "panel:\n  select: vote\n", "panel.select", 4, "expected 'best' or 'consensus'"),
    (
        "teacher-adapter-hosted",
        OK + "teacher:\n  model: openai/gpt-4o-mini\n  adapter: a.gguf\n",
        "teacher.adapter",
        5,
        "an adapter needs a local model",
    ),
    ("empty-file", "", "(file)", 1, "the file is empty"),
    ("comments-only", "# nothing here\n", "(file)", 1, "the file is empty"),
]


@pytest.mark.parametrize(
    ("text", "field", "line", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_scenario(tmp_path: Path, text: str, field: str, line: int, fragment: str) -> None:
    (tmp_path / "k.md").write_text("Korrin is the capital.", encoding="utf-8")
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 1, problems
    prefix = f"{path}:{line}: {field}: "
    assert problems[0].startswith(prefix), (problems[0], prefix)
    assert fragment in problems[0][len(prefix) :], problems[0]
    assert "https://" not in problems[0] and "Input should" not in problems[0]
    assert "\n" not in problems[0]


def test_missing_knowledge_file_names_the_resolved_path(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nknowledge:\n  files: [sub/gone.md]\nobjectives: [a]\n")
    assert problems_of(path) == [
        f"{path}:3: knowledge.files[0]: no such file: {tmp_path.resolve() / 'sub/gone.md'}"
    ]


def test_unreadable_knowledge_files(tmp_path: Path) -> None:
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "blank.md").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    path = write(tmp_path, "name: t\nknowledge:\n  files: [latin1.md, blank.md, folder]\nobjectives: [a]\n")
    problems = problems_of(path)
    assert [p.split(": ")[1] for p in problems] == [
        "knowledge.files[0]",
        "knowledge.files[1]",
        "knowledge.files[2]",
    ]
    assert "not UTF-8 text" in problems[0] and "is empty" in problems[1] and "is a folder" in problems[2]


def test_nonexistent_scenario_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems_of(missing) == [f"{missing}: no such scenario file"]
    assert problems_of(str(tmp_path)) == [f"{tmp_path}: not a file; expected a YAML scenario file"]


def test_scenario_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    assert problems_of(path) == [f"{path}: not UTF-8 text; expected a YAML scenario file"]


def test_file_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: t\nobjectives: [a]\nturns: 0\n")
    monkeypatch.chdir(tmp_path)
    assert problems_of("s.yaml") == ["s.yaml:3: turns: must be at least 1, got 0"]


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: t\nobjectives: [a]\njudge:\n  threshold: 1.5\nturns: many\nteacher:\n  max_tokens: 0\n",
    )
    assert problems_of(path) == [
        f"{path}:4: judge.threshold: must be between 0 and 1, got 1.5",
        f"{path}:5: turns: expected a whole number, got 'many'",
        f"{path}:7: teacher.max_tokens: must be between 1 and 4096, got 0",
    ]


def test_schema_and_file_problems_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "objectives: [a, a]\nknowledge:\n  files: [gone.md]\ncolour: red\nseed: 1\nseed: 2\n",
    )
    fields = [p.split(": ")[1] for p in problems_of(path)]
    assert fields == ["name", "objectives[1]", "knowledge.files[0]", "colour", "seed"]


# --- finding scenarios --------------------------------------------------------------------------------


def test_find_scenario_by_name_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = find_scenario("invented-domain")
    assert bundled.name == "invented-domain.yaml" and bundled.is_file()
    assert find_scenario("skill-procedure.yaml").name == "skill-procedure.yaml"
    write(tmp_path, OK, name="invented-domain")  # an existing path wins over a bundled name
    monkeypatch.chdir(tmp_path)
    assert find_scenario("invented-domain") == Path("invented-domain")


def test_find_scenario_unknown_lists_bundled() -> None:
    with pytest.raises(ScenarioError) as info:
        find_scenario("no-such-scenario")
    assert info.value.problems == [
        "no-such-scenario: no such scenario file or bundled scenario"
        " (bundled: bidirectional, classroom, invented-domain, skill-procedure, teacher-panel)"
    ]


def test_schema_forbids_unknown_fields_directly() -> None:
    with pytest.raises(ValueError):
        Scenario.model_validate({"name": "t", "objectives": ["a"], "judge": {"treshold": 0.5}})


def test_package_import_is_light() -> None:
    code = "import sys, teachback.scenarios; print(sorted({'yaml', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
