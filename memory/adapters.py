"""The adapter registry: the LoRA adapters `teachback finetune` wrote, with the metadata inside each file.

    list_adapters()                          ->  [AdapterInfo, ...], oldest first
    latest_adapter(Path("smollm2.gguf"))     ->  the newest adapter trained on that very base file, or None
    find_adapter("vellmar-test")             ->  the registry's adapter of that file name (or stem, prefix)

The registry is a folder (`.teachback/adapters/` by default); each adapter is a GGUF file whose
`teachback.*` keys say what it was trained from: the base model and its sha256, rank, alpha, target
tensors, the training data's hash, the runs and namespace it came from, the loss curve and the date.
An adapter only fits the base it was trained on, so `latest` matches on the base file's sha256.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ADAPTERS_DIR = Path(".teachback") / "adapters"


@dataclass
class AdapterInfo:
    """What one adapter file says about itself."""

    path: Path
    base_model: str = ""
    base_sha256: str = ""
    rank: int = 0
    alpha: float = 0.0
    targets: str = ""
    data_sha256: str = ""
    namespace: str = ""
    runs: list[str] = field(default_factory=list)
    student: str = ""
    n_train: int = 0
    epochs: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    created: str = ""
    size_bytes: int = 0

    @classmethod
    def read(cls, path: Path) -> AdapterInfo:
        from teachback.memory.lora import read_adapter_metadata

        meta = read_adapter_metadata(path)
        info = cls(path=path, size_bytes=path.stat().st_size)
        for name in (
            "base_model",
            "base_sha256",
            "targets",
            "data_sha256",
            "namespace",
            "student",
            "created",
        ):
            setattr(info, name, str(meta.get(name, "")))
        for name in ("rank", "n_train", "epochs"):
            with contextlib.suppress(TypeError, ValueError):
                setattr(info, name, int(meta.get(name, 0)))
        with contextlib.suppress(TypeError, ValueError):
            info.alpha = float(meta.get("alpha", meta.get("adapter.lora.alpha", 0.0)))
        info.runs = [str(r) for r in _as_list(meta.get("runs"))]
        info.train_loss = [float(x) for x in _as_list(meta.get("train_loss"))]
        info.val_loss = [None if x is None else float(x) for x in _as_list(meta.get("val_loss"))]
        return info

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            return parsed if isinstance(parsed, list) else [parsed]
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def list_adapters(directory: Path | None = None) -> list[AdapterInfo]:
    """Every readable adapter in the registry, oldest first (by the date inside, then the file time)."""
    directory = Path(directory or ADAPTERS_DIR)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob("*.gguf"):
        with contextlib.suppress(Exception):  # a half-copied or foreign file is not an adapter
            found.append(AdapterInfo.read(path))
    return sorted(found, key=lambda a: (a.created, a.path.stat().st_mtime, a.path.name))


def latest_adapter(
    base_model: Path, directory: Path | None = None, namespace: str | None = None
) -> Path | None:
    """The newest adapter in the registry trained on `base_model` (same sha256), of `namespace` if given."""
    from teachback.memory.finetune import sha256_file

    candidates = list_adapters(directory)
    if namespace:
        candidates = [a for a in candidates if a.namespace == namespace]
    if not candidates:
        return None
    base_sha = sha256_file(Path(base_model))
    matching = [a for a in candidates if a.base_sha256 == base_sha]
    return matching[-1].path.resolve() if matching else None


def find_adapter(ident: str, directory: Path | None = None) -> AdapterInfo:
    """The adapter `ident` names: a file path, `latest` (the registry's newest), or a registry file by its
    name, its stem or the start of either (one match only). A one-line TeachbackError otherwise."""
    from teachback.errors import TeachbackError

    directory = Path(directory or ADAPTERS_DIR)
    path = Path(ident).expanduser()
    if path.is_file():
        try:
            return AdapterInfo.read(path)
        except Exception as exc:  # noqa: BLE001 - gguf raises struct, value and key errors for a non-adapter
            raise TeachbackError(
                f"{path}: not a readable adapter ({' '.join(str(exc).split())[:120]})"
            ) from None
    adapters = list_adapters(directory)
    if ident == "latest" and adapters:
        return adapters[-1]
    exact = [a for a in adapters if ident in (a.path.name, a.path.stem)]
    found = exact or [a for a in adapters if a.path.name.startswith(ident)]
    if len(found) == 1:
        return found[0]
    names = ", ".join(a.path.name for a in (found or adapters)) or "none yet"
    said = f"{len(found)} adapters match" if found else "no adapter matches"
    raise TeachbackError(
        f"adapters --show {ident}: {said} in {directory}/ ({names}); `teachback adapters` lists them"
    )
