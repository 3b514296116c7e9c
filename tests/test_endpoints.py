"""Any OpenAI-compatible server, per seat: api_base, api_key_env (a variable's name, never a key), timeout
and retries; the --ROLE-base overrides; `teachback models SCENARIO`; and a teacher on a server teachback
did not start."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from teachback.agents.cast import make_client
from teachback.agents.endpoints import api_base_problem, key_env_problem
from teachback.agents.models import resolve
from teachback.errors import ModelError, ScenarioError, StreamMask, mask_secrets
from teachback.scenarios.loader import load_scenario
from teachback.scenarios.schema import JudgeRole, TeacherRole
from tests.conftest import REPO, judge

TEACHBACK = [sys.executable, "-m", "teachback.cli"]
# A key in a variable whose name does not end like a secret's (_KEY, _TOKEN, ...): only the scenario's
# api_key_env says it is one.
KEY_VAR = "OUTSIDE_TEACHER_CREDENTIAL"
KEY = "planted-credential-7f3a9c2e1b"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, **(env or {})}
    return subprocess.run([*TEACHBACK, *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=300)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ---- the schema and validate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seat", "problem"),
    [
        (
            {"teacher": {"model": "openai/x", "api_base": "127.0.0.1:8000/v1"}},
            "teacher.api_base: not an http",
        ),
        ({"teacher": {"model": "openai/x", "api_base": "ftp://host/v1"}}, "teacher.api_base: not an http"),
        ({"teacher": {"model": "openai/x", "api_base": "http://host:99999/v1"}}, "port is not a number"),
        ({"teacher": {"model": "openai/x", "api_base": "http://h/v1?key=1"}}, "no ?query or #fragment"),
        ({"judge": {"model": "openai/x", "api_base": "http:///v1"}}, "judge.api_base: "),
        ({"judge": {"model": "openai/x", "api_key_env": "MY-KEY"}}, "not an environment variable name"),
        ({"judge": {"model": "openai/x", "timeout": 0}}, "judge.timeout: must be between 0 and 3600"),
        ({"judge": {"model": "openai/x", "retries": 11}}, "judge.retries: must be between 0 and 10"),
        ({"student": {"api_base": "http://h:1/v1"}}, "student.api_base: api_base is for a model served"),
        (
            {"teachers": [{"model": "openai/x"}, {"model": "local/smollm2-135m", "api_key_env": "K"}]},
            "teachers[1].api_key_env: api_key_env is for a model served elsewhere",
        ),
        (
            {
                "students": [
                    {"name": "ana"},
                    {"name": "ben", "model": "local:/m.gguf", "api_base": "http://h/v1"},
                ]
            },
            "students[1].api_base: api_base is for a model served elsewhere",
        ),
    ],
)
def test_bad_endpoints_are_one_line_problems(scenario_file, seat: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario_file(**seat))
    assert len(caught.value.problems) == 1 and problem in caught.value.problems[0], caught.value.problems


@pytest.mark.parametrize(
    "value",
    [
        "sk-proj-4bYw9TqLm2XcVd7Ke1Rf0Hs3",
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "gsk_Q2w3E4r5T6y7U8i9O0p1",
        "AbCdEf0123456789GhIjKlMnOp",  # no known prefix, but as random as a key
    ],
)
def test_a_key_in_api_key_env_is_refused_without_repeating_it(scenario_file, value: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario_file(teacher={"model": "openai/x", "api_key_env": value}))
    (problem,) = caught.value.problems
    assert "teacher.api_key_env: looks like an API key itself" in problem and value not in problem


def test_credentials_in_a_url_are_refused_without_repeating_them() -> None:
    problem = api_base_problem("http://user:s3cret-pass@gpu-box:8000/v1")
    assert problem is not None and "carries credentials" in problem and "s3cret" not in problem
    assert api_base_problem("https://gpu-box.lan:8000/v1") is None
    assert key_env_problem("VLLM_API_KEY") is None and key_env_problem("team_openai_key_2") is None


def test_validate_names_a_key_variable_that_is_not_set(scenario_file, tmp_path: Path) -> None:
    path = scenario_file(
        teacher={"model": "openai/x", "api_base": "http://127.0.0.1:9/v1", "api_key_env": KEY_VAR}
    )
    line = one_line_error(cli("validate", str(path), cwd=tmp_path, env={KEY_VAR: ""}))
    assert f"{path}:" in line and f"teacher.api_key_env: the environment variable {KEY_VAR} is empty" in line
    result = cli("validate", str(path), cwd=tmp_path, env={KEY_VAR: KEY})
    assert result.returncode == 0 and ": ok" in result.stdout and KEY not in result.stdout + result.stderr


# ---- the client a seat gets ----------------------------------------------------------------------------


def test_make_client_reads_the_key_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, KEY)
    settings = TeacherRole(
        model="openai/served", api_base="http://127.0.0.1:9/v1", api_key_env=KEY_VAR, timeout=7, retries=1
    )
    client = make_client("teacher", resolve("openai/served"), settings, pool=None, seed=0, seat="teacher ada")
    assert (client.api_base, client.timeout, client.num_retries) == ("http://127.0.0.1:9/v1", 7.0, 1)
    assert client._call_args([], None, {}, stream=False)["api_key"] == KEY  # type: ignore[attr-defined]
    assert KEY not in repr(client) and KEY not in repr(vars(client).get("api_base"))
    assert mask_secrets(f"the server said {KEY}") == "the server said ***"  # masked from now on


def test_a_missing_key_variable_is_one_line_naming_seat_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    settings = JudgeRole(model="openai/served", api_base="http://127.0.0.1:9/v1", api_key_env=KEY_VAR)
    with pytest.raises(ModelError) as caught:
        make_client("judge", resolve("openai/served"), settings, pool=None, seed=0)
    assert str(caught.value) == (
        f"judge: api_key_env: the environment variable {KEY_VAR} is not set; export {KEY_VAR}=<the key> "
        "(keys are read from the environment only)"
    )


def test_a_key_split_over_chunks_is_masked_as_it_streams() -> None:
    text = f"Korrin. You sent {KEY}, and {KEY[:9]} is not it."
    for size in (1, 3, 7, len(text)):
        mask = StreamMask([KEY])
        shown = [mask.feed(text[i : i + size]) for i in range(0, len(text), size)] + [mask.flush()]
        assert "".join(shown) == f"Korrin. You sent ***, and {KEY[:9]} is not it."
        assert not any(KEY[:10] in piece for piece in shown)


class RecordingServer:
    """An OpenAI-style /v1/chat/completions that records each request's Authorization header and answers
    (whole, or streamed seven characters a chunk) with a sentence that carelessly quotes the key it was
    sent."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                auth = self.headers.get("authorization", "")
                server.authorizations.append(auth)
                text = f"Korrin is the capital of Vellmar. (You sent {auth.removeprefix('Bearer ')}.)"
                if body.get("stream"):
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "x"}
                    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]  # the key split over chunks
                    events = [
                        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}}]}
                        for piece in pieces
                    ]
                    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                    data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                    kind = "text/event-stream"
                else:
                    message = {"role": "assistant", "content": text}
                    reply = {"id": "c1", "object": "chat.completion", "created": 1, "model": "x"}
                    reply["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
                    data, kind = json.dumps(reply), "application/json"
                raw = data.encode()
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.api_base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_key_goes_to_the_server_and_nowhere_else(
    scenario_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from teachback.agents.scripted import ScriptedChatClient
    from teachback.scenarios.run import RunRequest, run_scenario
    from teachback.transcripts.events import MessageDone
    from teachback.transcripts.reader import read_transcript

    monkeypatch.setenv(KEY_VAR, KEY)
    server = RecordingServer()
    try:
        teacher = {
            "model": "openai/served",
            "api_base": server.api_base,
            "api_key_env": KEY_VAR,
            "retries": 0,
        }
        path = scenario_file(turns=1, teacher=teacher)
        console = Console(record=True, width=120)
        student = ScriptedChatClient(["What is the capital of Vellmar?", "I learned: Korrin."] * 4)
        request = RunRequest(scenario=str(path), out=tmp_path / "run", plain=True, no_memory=True)
        run_dir = run_scenario(request, console, clients={"student": student, "judge": judge(9)})
    finally:
        server.close()
    assert server.authorizations and set(server.authorizations) == {f"Bearer {KEY}"}
    events = read_transcript(run_dir / "transcript.jsonl")
    header = events[0]
    assert header.seats[0]["api_key_env"] == KEY_VAR and header.seats[0]["api_base"] == server.api_base
    answers = [e for e in events if isinstance(e, MessageDone) and e.role == "teacher"]
    assert answers and "Korrin" in answers[0].text and "You sent ***" in answers[0].text
    pieces = {KEY[i : i + 7] for i in range(len(KEY) - 6)}  # no part of it either, as a token stream has
    for file in run_dir.rglob("*"):
        if file.is_file():
            text = file.read_text(encoding="utf-8", errors="replace")
            assert not any(piece in text for piece in pieces), file
    assert KEY not in console.export_text()


def test_a_base_override_points_the_role_elsewhere_and_is_recorded(
    scenario_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from teachback.agents.scripted import ScriptedChatClient
    from teachback.scenarios.rounds import recorded_endpoint
    from teachback.scenarios.run import RunRequest, read_run, run_scenario

    monkeypatch.setenv(KEY_VAR, KEY)
    server = RecordingServer()
    try:
        teacher = {"model": "openai/served", "api_base": "http://127.0.0.1:9/v1", "api_key_env": KEY_VAR}
        request = RunRequest(
            scenario=str(scenario_file(turns=1, teacher=teacher)),
            out=tmp_path / "run",
            plain=True,
            no_memory=True,
            api_bases={"teacher": server.api_base},  # --teacher-base
        )
        student = ScriptedChatClient(["What is the capital of Vellmar?", "I learned: Korrin."] * 4)
        run_scenario(request, Console(record=True), clients={"student": student, "judge": judge(9)})
    finally:
        server.close()
    assert server.authorizations  # the override, not the scenario's dead port, was called
    header, finished = read_run(tmp_path / "run")
    assert finished is not None and finished.status == "completed"
    assert header.options["api_bases"] == {"teacher": server.api_base}  # a resume keeps it
    assert recorded_endpoint(header, "teacher") == {"api_base": server.api_base, "api_key_env": KEY_VAR}
    assert recorded_endpoint(header, "judge") == {}


# ---- the command line ----------------------------------------------------------------------------------


def test_models_says_where_each_seat_is_called_and_never_the_key(scenario_file, tmp_path: Path) -> None:
    path = scenario_file(
        teachers=[
            {
                "name": "ada",
                "model": "openai/qwen",
                "api_base": "http://gpu-a:8000/v1",
                "api_key_env": KEY_VAR,
            },
            {"name": "bo", "model": "openai/gpt-4o-mini", "timeout": 30, "retries": 1},
        ],
        judge={"model": "openai/judge"},
    )
    result = cli(
        "models", str(path), "--judge-base", "http://gpu-b:1234/v1", cwd=tmp_path, env={KEY_VAR: KEY}
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert KEY not in out + result.stderr
    blocks = out.split("\n", 1)[1].replace("\n    ", " | ").splitlines()
    assert blocks[0] == (
        "teacher ada: openai/qwen | called at  http://gpu-a:8000/v1 (an OpenAI-compatible server) | "
        f"limits     timeout 120 s per attempt, 2 retries | key        ${KEY_VAR} (set, value hidden)"
    )
    assert "teacher bo: openai/gpt-4o-mini | called at  litellm's default endpoint for openai" in blocks[1]
    assert "timeout 30 s per attempt, 1 retry" in blocks[1]
    assert blocks[2].startswith("student: local/smollm2-135m | called at  in-process")
    assert blocks[3].startswith("judge: openai/judge | called at  http://gpu-b:1234/v1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher-base", "gpu-box:8000"], "teachback: --teacher-base: not an http(s) URL: 'gpu-box:8000'"),
        (["--judge-base", "http://u:pw-secret@h/v1"], "teachback: --judge-base: carries credentials"),
        (
            ["--teacher-base", "http://127.0.0.1:9/v1"],
            "teachback: teacher: api_base http://127.0.0.1:9/v1 is for",
        ),
    ],
)
def test_run_base_overrides_are_checked_before_anything_is_written(
    scenario_file, tmp_path: Path, args: list[str], message: str
) -> None:
    line = one_line_error(cli("run", str(scenario_file()), *args, "--no-memory", cwd=tmp_path))
    assert line.startswith(message) and "pw-secret" not in line
    assert not (tmp_path / "transcripts").exists()


def test_a_run_needs_its_key_variable_before_anything_is_written(scenario_file, tmp_path: Path) -> None:
    teacher = {"model": "openai/x", "api_base": "http://127.0.0.1:9/v1", "api_key_env": KEY_VAR}
    result = cli("run", str(scenario_file(teacher=teacher)), "--no-memory", cwd=tmp_path, env={KEY_VAR: ""})
    assert one_line_error(result).startswith(
        f"teachback: teacher: api_key_env: the environment variable {KEY_VAR}"
    )
    assert not (tmp_path / "transcripts").exists()


def test_help_stays_light() -> None:
    code = (
        "import sys; from teachback.cli import build_parser; build_parser()\n"
        "print(sorted({'litellm', 'llama_cpp', 'rich', 'pydantic', 'yaml'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the real thing: a teacher on a server teachback did not start ------------------------------------


@contextlib.contextmanager
def llama_cpp_server(log: Path, *args: str, key: str | None = None) -> Iterator[str]:
    """`python -m llama_cpp.server ARGS` on a free loopback port, as anyone would start it; yields its
    api_base once it answers, and stops it (this process only) afterwards."""
    from teachback.agents.llama_server import free_port

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", *args, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", "1024", "--n_threads", "2"] + (["--api_key", key] if key else [])
    api_base = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, log.read_text(errors="replace")[-2000:]
                assert time.monotonic() < deadline, "the server did not answer in 90 s"
                request = urllib.request.Request(f"{api_base}/models")
                if key:
                    request.add_header("Authorization", f"Bearer {key}")
                try:
                    with urllib.request.urlopen(request, timeout=2):
                        break
                except OSError:
                    time.sleep(0.5)
            yield api_base
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.real
def test_a_teacher_on_an_outside_llama_cpp_server(tmp_path: Path) -> None:
    """A bundled scenario whose teacher is `openai/outside-teacher` at a server started by hand (it wants a
    key): the run completes, the teacher's messages came from that server, and the key is nowhere."""
    import shutil

    import yaml

    from teachback.transcripts.events import MessageDone
    from teachback.transcripts.reader import read_transcript

    smollm2 = resolve("local/smollm2-135m").local_path
    assert smollm2 is not None
    shutil.copytree(REPO / "scenarios" / "knowledge", tmp_path / "knowledge")
    scenario = yaml.safe_load((REPO / "scenarios" / "invented-domain.yaml").read_text(encoding="utf-8"))
    log = tmp_path / "outside-server.log"
    with llama_cpp_server(
        log, "--model", str(smollm2), "--model_alias", "outside-teacher", key=KEY
    ) as api_base:
        scenario["teacher"] = {
            "model": "openai/outside-teacher",
            "api_base": api_base,
            "api_key_env": KEY_VAR,
            "max_tokens": 48,
            "timeout": 120,
            "retries": 0,
        }
        scenario["judge"] = {"model": "local/smollm2-135m", "max_tokens": 64}  # the smallest judge there is
        path = tmp_path / "outside.yaml"
        path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
        env = {KEY_VAR: KEY}
        models = cli("models", str(path), cwd=tmp_path, env=env)
        assert f"called at  {api_base} (an OpenAI-compatible server)" in models.stdout
        result = cli(
            "run", str(path), "--turns", "1", "--plain", "--no-quiz", "--no-memory", "--out", "run",
            cwd=tmp_path, env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_transcript(tmp_path / "run" / "transcript.jsonl")
    assert events[-1].status == "completed"  # type: ignore[attr-defined]
    taught = [e for e in events if isinstance(e, MessageDone) and e.role == "teacher"]
    assert taught and all(e.model == "openai/outside-teacher" and e.text.strip() for e in taught)
    served = log.read_text(errors="replace").count('POST /v1/chat/completions HTTP/1.1" 200')
    assert served >= len(taught), log.read_text(errors="replace")[-2000:]
    for file in [*(tmp_path / "run").rglob("*")]:
        if file.is_file():
            assert KEY not in file.read_text(encoding="utf-8", errors="replace"), file
    assert KEY not in result.stdout + result.stderr + models.stdout
