"""LoRA adapter files (GGUF) and the adapter's tensors inside a running llama.cpp context.

File format (what llama.cpp's `llama_adapter_lora_init` reads): `general.type=adapter`,
`adapter.type=lora`, `adapter.lora.alpha`, and per target weight `<name>.lora_a` shaped (r, n_in) and
`<name>.lora_b` shaped (n_out, r) as numpy arrays (ggml ne order is reversed); llama.cpp scales the
product by alpha / r. teachback adds its own `teachback.*` keys (base model hash, rank, targets, data
hash, loss curve, ...) which llama.cpp ignores; `read_adapter_metadata` returns them.

Files are always written atomically (teachback/files.py): into a temporary file next to the target,
fsynced, then renamed over it, so an interrupted write never leaves a partial adapter where a model loads it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachback.errors import FinetuneError
from teachback.files import atomic_path

META_PREFIX = "teachback."


@dataclass(frozen=True)
class TargetTensor:
    """One base weight that gets a LoRA pair: `name` is the base tensor (e.g. blk.0.attn_q.weight)."""

    name: str
    n_in: int
    n_out: int


def model_info(base: Path) -> tuple[str, dict[str, Any], list[tuple[str, tuple[int, ...], str, int]]]:
    """(architecture, scalar metadata, [(tensor name, ggml ne shape, type name, n_bytes)]) of a GGUF."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(base))
    except Exception as exc:  # gguf raises ValueError/struct errors on bad files
        raise FinetuneError(f"{base}: not a readable GGUF model ({exc})") from exc
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type", "scores")):
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # noqa: S112 - a field we cannot decode is simply not reported
            continue
    tensors = [
        (t.name, tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors
    ]
    return str(meta.get("general.architecture", "?")), meta, tensors


def select_targets(
    tensors: list[tuple[str, tuple[int, ...], str, int]], targets: tuple[str, ...], first_layer: int = 0
) -> list[TargetTensor]:
    """The 2-D block weights whose kind (attn_q, ffn_up, ...) is in `targets`, in blocks >= first_layer,
    in file order."""
    chosen = []
    for name, shape, _type, _nbytes in tensors:
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[3] == "weight" and parts[2] in targets:
            if len(shape) != 2 or not parts[1].isdigit() or int(parts[1]) < first_layer:
                continue
            chosen.append(TargetTensor(name, n_in=int(shape[0]), n_out=int(shape[1])))
    return chosen


def init_adapter(targets: list[TargetTensor], rank: int, seed: int) -> dict[str, Any]:
    """Fresh LoRA tensors: A ~ U(-1/sqrt(n_in), 1/sqrt(n_in)) (PEFT's kaiming-uniform), B = 0.

    B = 0 makes the initial adapter an exact no-op, so the "before" validation loss is the base model's.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for t in targets:
        bound = 1.0 / np.sqrt(t.n_in)
        out[t.name + ".lora_a"] = rng.uniform(-bound, bound, size=(rank, t.n_in)).astype(np.float32)
        out[t.name + ".lora_b"] = np.zeros((t.n_out, rank), np.float32)
    return out


def write_adapter(
    out: Path,
    tensors: Mapping[str, Any],
    *,
    architecture: str,
    alpha: float,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a LoRA adapter GGUF atomically. `metadata` values: str, int, float, bool, or JSON-able."""
    import gguf
    import numpy as np

    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for key, value in (metadata or {}).items():
            k = META_PREFIX + key
            if isinstance(value, bool):
                writer.add_bool(k, value)
            elif isinstance(value, int):
                writer.add_int64(k, value)
            elif isinstance(value, float):
                writer.add_float64(k, value)
            elif isinstance(value, str):
                writer.add_string(k, value)
            else:
                writer.add_string(k, json.dumps(value))
        for name in sorted(tensors):
            writer.add_tensor(name, np.ascontiguousarray(tensors[name], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out)


def _open_adapter(path: Path) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:
        raise FinetuneError(f"{path}: not a readable adapter ({exc})") from exc


def _metadata(reader: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key == "adapter.lora.alpha":
            meta["alpha"] = float(field.contents())
        elif key == "general.architecture":
            meta["architecture"] = field.contents()
        elif key.startswith(META_PREFIX):
            value = field.contents()
            if isinstance(value, str) and value[:1] in "[{":
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            meta[key[len(META_PREFIX) :]] = value
    return meta


def read_adapter(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, tensors) of an adapter file: metadata holds alpha and every `teachback.*` key
    (JSON strings decoded), tensors are float32 numpy arrays in numpy (r, n_in) / (n_out, r) order."""
    import numpy as np

    reader = _open_adapter(path)
    tensors = {
        t.name: np.array(t.data, dtype=np.float32).reshape(tuple(reversed(t.shape))) for t in reader.tensors
    }
    return _metadata(reader), tensors


def read_adapter_metadata(path: Path) -> dict[str, Any]:
    """Only the metadata of an adapter (for `teachback adapters`); the tensors stay on disk."""
    return _metadata(_open_adapter(path))


# ---- the adapter's tensors inside llama.cpp ------------------------------------------------------------


def find_adapter_tensors(decode_probe: Callable[[Any], None], expected: set[str]) -> dict[str, int]:
    """Map `<target>.lora_a/.lora_b` -> ggml tensor address, found during one throwaway decode.

    No public llama.cpp API lists an adapter's tensors. `decode_probe(cb)` must create a context with
    `cb_eval=cb`, run one small `llama_decode` and free the context; the callback sees every graph
    node, and the adapter's weights appear as leaf sources (op NONE) of the LoRA matmuls. It returns
    False so the scheduler never copies data out for it.
    """
    from teachback.memory import native

    found: dict[str, int] = {}
    seen: set[int] = set()

    @native.eval_callback
    def callback(node_ptr: int, ask: bool, _ud: int) -> bool:
        try:
            node = native.tensor(node_ptr)
            for src in node.src:
                if src and src not in seen:
                    seen.add(src)
                    t = native.tensor(src)
                    if t.op == native.GGML_OP_NONE:
                        name = t.name.decode("utf-8", "replace")
                        if name in expected:
                            found[name] = src
        except BaseException:  # noqa: BLE001 - never let an exception cross the C boundary
            pass
        return False

    decode_probe(callback)
    missing = expected - found.keys()
    if missing:
        raise FinetuneError(
            f"llama.cpp did not expose {len(missing)} of the adapter's {len(expected)} tensors "
            f"(e.g. {sorted(missing)[0]}); training needs the CPU backend with the whole model in one split"
        )
    return found


def read_tensor(ptr: int) -> Any:
    """Copy a 2-D F32 ggml tensor out as a numpy array in numpy order (ne[1], ne[0])."""
    import numpy as np

    from teachback.memory import native

    t = native.tensor(ptr)
    if t.type != native.GGML_TYPE_F32:
        raise FinetuneError(f"adapter tensor {t.name.decode()} is not F32")
    arr = np.empty((int(t.ne[1]), int(t.ne[0])), np.float32)
    native.tensor_get(ptr, arr)
    return arr


def write_tensor(ptr: int, values: Any) -> None:
    """Overwrite a 2-D F32 ggml tensor with `values` (numpy order, same shape)."""
    import numpy as np

    from teachback.memory import native

    t = native.tensor(ptr)
    arr = np.ascontiguousarray(values, dtype=np.float32)
    if arr.shape != (int(t.ne[1]), int(t.ne[0])):
        raise FinetuneError(f"adapter tensor {t.name.decode()}: shape {arr.shape} does not match")
    native.tensor_set(ptr, arr)
