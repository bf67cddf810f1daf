"""What the library hands out: adapter records, recall hits, damaged adapters, problems.

A record's file paths are only given out after the files have been checked against the
manifest's digests, so no caller can load a torn or tampered adapter by accident:
`record.peft_dir` and `record.gguf_path` verify on first use (`Library.get` verifies at once).
Listing and recall stay fast because they read manifests and `lstat` the files, without
hashing them.

A damaged adapter is never used, and never silently left out either: listings and recalls
name it as a `Damaged` (its id and one sentence built from Rune's own words, never from what
the damaged files say, so it is safe to show to an agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rune_mcp.errors import IntegrityError
from rune_mcp.library.manifest import GGUF_FILE, Finding, inspect_folder
from rune_mcp.library.manifest import text_verified as _text_verified


@dataclass(frozen=True)
class Damaged:
    """An adapter that is present but unusable: its id and what is wrong, in fixed words."""

    adapter_id: str
    reason: str

    @classmethod
    def of(cls, adapter_id: str, findings: Sequence[Finding]) -> Damaged:
        return cls(adapter_id, "; ".join(dict.fromkeys(f.summary for f in findings)))

    @property
    def sentence(self) -> str:
        short = self.adapter_id[:12]
        return (
            f"adapter {short} is damaged ({self.reason}), so it is not used; "
            f"`rune adapters verify` shows the problems and `rune adapters rm {short}` "
            "removes it."
        )

    def to_dict(self) -> dict[str, Any]:
        return {"adapter_id": self.adapter_id, "problem": self.sentence}


class AdapterDamaged(IntegrityError):
    """An adapter failed its checks; `damage` says which and why, in words safe to show."""

    def __init__(self, damage: Damaged) -> None:
        short = damage.adapter_id[:12]
        super().__init__(
            f"adapter {short} failed verification ({damage.reason}); it will not be used: "
            f"remove it with `rune adapters rm {short}`."
        )
        self.damage = damage


@dataclass
class AdapterRecord:
    """One stored adapter: its id, its folder and its manifest (a dict, see docs/library.md)."""

    adapter_id: str
    path: Path
    manifest: dict[str, Any]
    _verified: bool = field(default=False, repr=False, compare=False)

    def verify(self) -> AdapterRecord:
        """Check every file against the manifest; AdapterDamaged (an IntegrityError) names
        what differs. Done once per record, when its files are first used."""
        if not self._verified:
            self.check(digests=True)
            self._verified = True
        return self

    def check(self, digests: bool = False) -> AdapterRecord:
        """Raise AdapterDamaged unless the folder is as the manifest says; without `digests`
        the files are only `lstat`ed (links, sizes, missing and stray files), not hashed."""
        findings = inspect_folder(self.path, self.manifest, digests=digests)
        if findings:
            raise AdapterDamaged(Damaged.of(self.adapter_id, findings))
        return self

    @property
    def verified(self) -> bool:
        return self._verified

    @property
    def text_verified(self) -> bool:
        """Whether a digest checked on reading covers the task and the other text shown
        (format 2 on); False for a format 1 manifest, whose text nothing covers."""
        return _text_verified(self.manifest)

    @property
    def peft_dir(self) -> Path:
        """Folder loadable by `PeftModel.from_pretrained` (digests checked first)."""
        return self.verify().path

    @property
    def gguf_path(self) -> Path | None:
        """The llama.cpp GGUF LoRA file, or None when none was stored (digests checked first)."""
        self.verify()
        return self.path / GGUF_FILE if GGUF_FILE in self.manifest["files"] else None

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def embed_text(self) -> str:
        return str(self.manifest.get("embed_text") or self.manifest["task"])

    @property
    def base_fingerprint(self) -> str:
        return str(self.manifest["base_fingerprint"])

    @property
    def method(self) -> str:
        return str(self.manifest.get("method") or "lora")

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at") or "")

    def source(self, key: str) -> str | None:
        value = (self.manifest.get("source") or {}).get(key)
        return value if isinstance(value, str) else None

    @property
    def project(self) -> str | None:
        return self.source("project")

    @property
    def session_id(self) -> str | None:
        return self.source("session_id")

    @property
    def agent(self) -> str | None:
        return self.source("agent")

    @property
    def trajectory_id(self) -> str | None:
        return self.source("trajectory_id")

    @property
    def size_bytes(self) -> int:
        return sum(int(info.get("size", 0)) for info in self.manifest["files"].values())

    def summary(self) -> dict[str, Any]:
        """The row `rune adapters ls` prints."""
        return {
            "adapter_id": self.adapter_id,
            "task": self.task,
            "project": self.project,
            "session_id": self.session_id,
            "agent": self.agent,
            "created_at": self.created_at,
            "method": self.method,
            "rank": self.manifest.get("rank"),
            "size_bytes": self.size_bytes,
            "has_gguf": GGUF_FILE in self.manifest["files"],
        }


@dataclass(frozen=True)
class RecallHit:
    """An adapter that matched a task, with the cosine similarity of the two embeddings, and
    why it is ranked above a more similar hit when it is (`rune_mcp.library.preference`;
    None: similarity alone placed it)."""

    record: AdapterRecord
    similarity: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        row = self.record.summary()
        return {
            "adapter_id": row["adapter_id"],
            "similarity": round(self.similarity, 4),
            "task": row["task"],
            "project": row["project"],
            "session_id": row["session_id"],
            "agent": row["agent"],
            "created_at": row["created_at"],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Recall:
    """A recall's answer: the usable hits, best first, and the damaged adapters it skipped."""

    hits: list[RecallHit]
    skipped: list[Damaged]


@dataclass(frozen=True)
class Inventory:
    """A listing: the usable adapters, newest first, and every damaged one."""

    records: list[AdapterRecord]
    damaged: list[Damaged]


@dataclass(frozen=True)
class Problem:
    """One finding of `Library.verify`: which adapter (or the index), where, and what is wrong."""

    adapter_id: str | None
    path: Path
    problem: str
    kind: str = "adapter"  # "adapter": the adapter itself is damaged; "index": the index is off

    def to_dict(self) -> dict[str, Any]:
        return {"adapter_id": self.adapter_id, "path": str(self.path), "problem": self.problem}
