"""Recordings of runs: the event schema, the JSONL recorder and reader, the one renderer, and replay.

    events.py    typed events and their versioned wire form (the spine everything shares)
    sinks.py     Sink (one method: handle) and the fan-out that feeds a run's events to each, in order
    recorder.py  append events to a JSONL transcript, durably (the first sink)
    progress.py  Progress: what a run has achieved, one fold over its events (director, resume, renderer)
    reader.py    read a transcript back, with one-line errors and schema migrations
    render.py    draw events in the terminal: a live view, or plain lines for pipes and CI
    replay.py    feed a recorded transcript to a renderer at the speed it happened
    run_folder.py  RunFolder: the name of every file of a run folder (transcript, quiz, fine-tune, logs)

Recorded runs land under `transcripts/runs/` (git-ignored) unless `--out` says otherwise.
"""
