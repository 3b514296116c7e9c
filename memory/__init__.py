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
    finetune.py    train_lora: accepted turns -> a GGUF LoRA adapter, trained inside llama.cpp; its settings
    train_data.py  the turns as token windows: split, chat template, tokens, packing
    train_session.py  the training copy, the adapter and the optimizer inside llama.cpp, step by step
    native.py      every ctypes binding to llama.cpp and ggml (llama_opt_*, ggml-opt), checked at load
    lora.py        the adapter's GGUF files: initial, trained, written atomically

This file imports nothing, so the CLI stays instant; chromadb and onnxruntime load when memory is used.
"""
