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

from teachback.errors import FinetuneError, ModelError

ADAPTERS_DIR = Path(".teachback") / "adapters"
# What reading a file that is not an adapter raises: lora.py's one-line FinetuneError for a file gguf
# cannot read (empty, foreign, cut off), OSError for one that went away, ValueError and TypeError for
# metadata of the wrong kind. Anything else is a bug, and is raised.
UNREADABLE = (FinetuneError, OSError, ValueError, TypeError)


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


def list_adapters(
    directory: Path | None = None, unreadable: list[tuple[Path, str]] | None = None
) -> list[AdapterInfo]:
    """Every readable adapter in the registry, oldest first (by the date inside, then the file time).
    A half-copied or foreign file is not an adapter: it is left out, and added to `unreadable` (its path
    and why) when that list is given."""
    directory = Path(directory or ADAPTERS_DIR)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob("*.gguf"):
        try:
            found.append(AdapterInfo.read(path))
        except UNREADABLE as exc:
            if unreadable is not None:
                unreadable.append((path, " ".join(str(exc).split())))
    return sorted(found, key=lambda a: (a.created, a.path.stat().st_mtime, a.path.name))


def latest_adapter(
    base_model: Path, directory: Path | None = None, namespace: str | None = None
) -> Path | None:
    """The newest adapter in the registry trained on `base_model` (same sha256), of `namespace` if given.

    A file in the registry that cannot be read and is newer than that adapter (or newer than nothing)
    may be the newest one, cut off or damaged: a one-line ModelError names it, rather than an older
    adapter taking its place unseen."""
    from teachback.memory.finetune import sha256_file

    unreadable: list[tuple[Path, str]] = []
    candidates = list_adapters(directory, unreadable)
    if namespace:
        candidates = [a for a in candidates if a.namespace == namespace]
    base_sha = sha256_file(Path(base_model)) if candidates else ""
    matching = [a for a in candidates if a.base_sha256 == base_sha]
    chosen = matching[-1].path if matching else None
    since = chosen.stat().st_mtime if chosen is not None else float("-inf")
    newer = [(path, why) for path, why in unreadable if path.stat().st_mtime > since]
    if newer:
        path, why = max(newer, key=lambda item: item[0].stat().st_mtime)
        than = f" than {chosen.name}, the newest readable one for {Path(base_model).name}," if chosen else ""
        why = why.removeprefix(f"{path}: ")[:120]
        raise ModelError(
            f"adapter 'latest': {path} is newer{than} and cannot be read ({why}); "
            "remove it or train again, or name an adapter file instead of 'latest'"
        )
    return chosen.resolve() if chosen is not None else None


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
