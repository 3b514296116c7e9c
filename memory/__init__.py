"""What was learned: the vector memory of accepted turns, its offline embeddings, retrieval and export.

    store.py       MemoryStore: one chromadb collection per namespace, provenance, dedup, search, delete
    embeddings.py  the embedders (offline MiniLM by default) as registered chromadb embedding functions
    export.py      training data out: chatml and sharegpt JSONL, written atomically
    retrieval.py   StoreMemory: the store as an autogen `Memory`, for students that cannot be fine-tuned
    commands.py    `teachback memory stats|search|list|export|delete`
    sink.py        MemorySink: accepted turns from a run's event stream into the store, crash backfill
    server.py      a memory folder served over HTTP behind a token (chromadb's own server)
    chroma_server.py  ChromaServer: that server on a free loopback port for a batch's runs, stopped with it
    adapters.py    the registry of trained adapters (`adapter: latest`); adapters_command.py lists them
    finetune.py    train_lora: accepted turns -> a GGUF LoRA adapter, trained inside llama.cpp
    lora.py        the adapter's GGUF files: initial, trained, written atomically
    llama_train.py ctypes bindings to llama.cpp's training API (llama_opt_*, ggml-opt)

This file imports nothing, so the CLI stays instant; chromadb and onnxruntime load when memory is used.
"""
