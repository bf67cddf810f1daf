"""The adapter library: write-once, content-addressed LoRA adapters, indexed by task embedding.

An adapter is one episode of memory. It is stored once under `<RUNE_HOME>/adapters/<id>/`
(the id is the SHA-256 of its content), never changed afterwards, checked against its recorded
digests whenever its files are used, and found again by the embedding of the task it was
learned from (a Chroma index, which is derived data and rebuilt from the manifests at will).

    lib = Library.open(settings)
    record = lib.add(peft_dir, gguf_file, {"base_fingerprint": fp, "task": "...", ...})
    for hit in lib.recall("fix the failing login test"):
        print(hit.record.adapter_id, hit.similarity)

Several processes may use one library at once: one writer at a time (a file lock), and readers
never see a partial adapter. See docs/library.md.
"""

from __future__ import annotations

from rune_mcp.library.embed import Embedder, get_embedder
from rune_mcp.library.embedtext import embed_text_for
from rune_mcp.library.library import Library
from rune_mcp.library.manifest import FORMAT_VERSION
from rune_mcp.library.records import AdapterRecord, Problem, RecallHit

__all__ = [
    "FORMAT_VERSION",
    "AdapterRecord",
    "Embedder",
    "Library",
    "Problem",
    "RecallHit",
    "embed_text_for",
    "get_embedder",
]
