"""Where a seat's model is called: an OpenAI-compatible server's URL, the variable that holds its key, and
how long and how often to try.

    teacher: {model: openai/qwen2.5-7b, api_base: http://gpu-box:8000/v1, api_key_env: VLLM_API_KEY,
              timeout: 60, retries: 1}

A scenario names the environment variable, never the key: the client reads the variable when it is made
(`client_options`), and the value is then masked wherever text leaves teachback (`remember_secret`).

    api_base_problem("http://gpu-box:8000/v1")  ->  None
    api_base_problem("gpu-box:8000")            ->  "not an http(s) URL ..."
    key_env_problem("VLLM_API_KEY")             ->  None
    key_env_problem("sk-proj-...")              ->  "looks like an API key itself ..."

Imports nothing heavy: the scenario schema and the command line use it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from teachback.errors import ModelError, TeachbackError, remember_secret

DEFAULT_TIMEOUT = 120.0  # seconds per attempt
DEFAULT_RETRIES = 2  # attempts after the first
MAX_TIMEOUT = 3600.0
MAX_RETRIES = 10

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# How keys of common providers begin: OpenAI/Anthropic/DeepSeek sk-, Hugging Face hf_, Groq gsk_,
# xAI xai-, GitHub ghp_/github_pat_, GitLab glpat-, Google AIza, AWS AKIA, Replicate r8_, Perplexity pplx-,
# NVIDIA nvapi-.
KEY_PREFIXES = (
    "sk-",
    "sk_",
    "hf_",
    "gsk_",
    "xai-",
    "ghp_",
    "gho_",
    "github_pat_",
    "glpat-",
    "AIza",
    "AKIA",
    "r8_",
    "pplx-",
    "nvapi-",
)
LOCAL_PREFIXES = ("local/", "local:")
ENDPOINT_FIELDS = ("api_base", "api_key_env", "timeout", "retries")  # a seat's settings that say where


def api_base_problem(url: str) -> str | None:
    """Why `url` is not a usable base URL of an OpenAI-compatible API, or None. A URL that carries
    credentials is refused without being repeated."""
    from urllib.parse import urlsplit

    if not url.strip():
        return "empty; give the server's base URL, as in http://127.0.0.1:8000/v1"
    if any(c.isspace() for c in url):
        return f"contains spaces: '{url.strip()}'"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"not an http(s) URL: '{url}'; write it as http://host:port/v1"
    if "@" in parts.netloc:
        return (
            "carries credentials (user:key@host); put the key in an environment variable and name it in "
            "api_key_env"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return f"the port is not a number from 1 to 65535: '{url}'"
    if not parts.hostname:
        return f"names no host: '{url}'; write it as http://host:port/v1"
    if parts.query or parts.fragment:
        return f"a base URL has no ?query or #fragment: '{url}'"
    return None


def key_env_problem(name: str) -> str | None:
    """Why `name` is not the name of an environment variable holding a key, or None. A value that looks
    like a key itself is refused without being repeated."""
    if name.startswith(KEY_PREFIXES) or _looks_random(name):
        return (
            "looks like an API key itself; give the NAME of the environment variable that holds the key "
            "(api_key_env: VLLM_API_KEY, after export VLLM_API_KEY=...) and remove the key from this file"
        )
    if not ENV_NAME.fullmatch(name):
        return (
            "not an environment variable name (letters, digits and _, not starting with a digit, at most "
            "128); give the NAME of the variable that holds the key, as in VLLM_API_KEY"
        )
    return None


def _looks_random(name: str) -> bool:
    """A long mix of lower case, upper case and digits: how keys look, and variable names never do."""
    return (
        len(name) >= 24
        and any(c.islower() for c in name)
        and any(c.isupper() for c in name)
        and any(c.isdigit() for c in name)
    )


def is_local(model: str) -> bool:
    """Whether a model string names a local GGUF (local/... or local:...), which teachback serves itself."""
    return model.strip().startswith(LOCAL_PREFIXES)


def read_api_key(env: str, seat: str) -> str:
    """The key in environment variable `env`, remembered as a secret to mask; a one-line ModelError naming
    the seat and the variable when it is not set."""
    value = os.environ.get(env, "").strip()
    if not value:
        said = "is empty" if env in os.environ else "is not set"
        raise ModelError(
            f"{seat}: api_key_env: the environment variable {env} {said}; export {env}=<the key> "
            "(keys are read from the environment only)"
        )
    remember_secret(value)
    return value


def check_served_elsewhere(settings: Any, model: str, seat: str) -> None:
    """A ModelError when a local model has an api_base: teachback serves local models itself. A scenario
    says so when it loads; this catches `--teacher local/...` with an api_base from elsewhere."""
    api_base = getattr(settings, "api_base", None)
    if api_base and is_local(model):
        raise ModelError(
            f"{seat}: api_base {api_base} is for a model served elsewhere, but {model} runs on teachback's "
            "own llama.cpp server; name the served model (openai/<name>) or drop the api_base"
        )


def client_options(settings: Any, model: str, seat: str) -> dict[str, Any]:
    """The LiteLLMChatClient keywords a seat's settings give: api_base, api_key (read from the environment
    now), timeout and num_retries; only those that are set (see `check_served_elsewhere` for the error)."""
    check_served_elsewhere(settings, model, seat)
    api_base = getattr(settings, "api_base", None)
    key_env = getattr(settings, "api_key_env", None)
    options: dict[str, Any] = {}
    if api_base:
        options["api_base"] = api_base
    if key_env:
        options["api_key"] = read_api_key(key_env, seat)
    if getattr(settings, "timeout", None) is not None:
        options["timeout"] = float(settings.timeout)
    if getattr(settings, "retries", None) is not None:
        options["num_retries"] = int(settings.retries)
    return options


def endpoint_record(settings: Any) -> dict[str, Any]:
    """What a transcript header says of a seat's endpoint: the fields that are set (the key's variable by
    name; never its value)."""
    record = {name: getattr(settings, name, None) for name in ENDPOINT_FIELDS}
    return {name: value for name, value in record.items() if value is not None}


def where_called(model: str, settings: Any, *, in_process: bool) -> str:
    """Where a seat's calls go, in words: in-process, a managed server, its api_base or litellm's default."""
    if is_local(model):
        if in_process:
            return "in-process (llama.cpp, this process)"
        return "a managed llama.cpp server (teachback starts it on 127.0.0.1, a free port, per run)"
    api_base = getattr(settings, "api_base", None)
    if api_base:
        return f"{api_base} (an OpenAI-compatible server)"
    provider = model.split("/", 1)[0] if "/" in model else "the provider litellm infers"
    return f"litellm's default endpoint for {provider}"


def limits(model: str, settings: Any, *, in_process: bool) -> str:
    """`timeout 120 s per attempt, 2 retries`, or `none (in-process)`."""
    if in_process and is_local(model):
        return "none (in-process)"
    timeout = getattr(settings, "timeout", None) or DEFAULT_TIMEOUT
    retries = getattr(settings, "retries", None)
    retries = DEFAULT_RETRIES if retries is None else retries
    return f"timeout {timeout:g} s per attempt, {retries} retr{'y' if retries == 1 else 'ies'}"


def key_source(model: str, settings: Any) -> str:
    """Where the seat's key comes from, by variable name only: `$VLLM_API_KEY (set)`, ..."""
    env = getattr(settings, "api_key_env", None)
    if env:
        state = "set, value hidden" if os.environ.get(env, "").strip() else "NOT SET"
        return f"${env} ({state})"
    if is_local(model):
        return "none (local)"
    if getattr(settings, "api_base", None):
        return "none (a keyless server; set api_key_env if it wants one)"
    return "the provider's usual variable (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...)"


def given_api_bases(given: dict[str, str | None]) -> dict[str, str]:
    """The `--teacher-base URL`, ... of a command line (role -> URL, None when not given), checked; a
    one-line TeachbackError for a malformed one (a URL with credentials is not repeated)."""
    bases = {}
    for role, url in given.items():
        if url is None:
            continue
        problem = api_base_problem(url)
        if problem:
            raise TeachbackError(f"--{role}-base: {problem}")
        bases[role] = url
    return bases
