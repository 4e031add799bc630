"""Recall: notes, payer replies and past outreach, searchable, one organisation at a time.

Stored in chromadb, persistent under ``settings.chroma_dir`` (``{data_dir}/chroma``) or on a Chroma
server (``PLIXO_CHROMA_URL``, chromadb's HTTP client) when several machines share it, one collection
per organisation, with ``org_id`` and ``customer_id`` in every record's metadata. Every query names
its organisation (a required argument, not an option), searches only that organisation's
collection, and every hit is checked again after the query, so one organisation's notes never
appear in another's recall. A customer filter is a metadata filter inside the collection.

The embedding function: ``HashingEmbedding`` (feature hashing, "the hashing trick")
-------------------------------------------------------------------------------------
chromadb's default embedding downloads an ONNX model on first use and fails on a machine without
network; plixo must work on a fresh, offline machine and may download nothing at run time. So the
vectors come from a deterministic function of the text alone:

- the text is folded (accents removed, lower case) and split into words; stopwords of the supported
  languages are dropped;
- features are the words, adjacent word pairs, and character 4-grams of each word (so "paid",
  "payment" and "Zahlung"/"Zahlungen" still share features, and typos degrade gracefully);
- each feature is hashed with BLAKE2b (stable across processes and machines, unlike ``hash()``) to
  one of ``dim`` buckets with a sign, weighted (words 1.0, pairs 0.6, 4-grams 0.25) and
  ``1 + log(tf)`` damped; the vector is L2-normalised and compared by cosine.

Why this is the right trade here: what operators recall in A/R is mostly lexical (an invoice
number, a person, "promise", "PO", "remittance", "dispute about quantity"), which hashed n-grams
capture well; it needs no model file, no GPU, no network and no new dependency; it is fast (tens of
microseconds per note, so 100,000 notes index in seconds); and it is reproducible, so a test or a
benchmark gives the same neighbours everywhere. What it gives up: synonyms without shared letters
("settle" vs "pay") are not close. An operator who has a local embedding model can pass any other
chromadb ``EmbeddingFunction`` to ``Recall``; the collection records which function wrote it and
refuses to mix two.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # noqa: E402
import numpy as np  # noqa: E402
from chromadb.api import ClientAPI  # noqa: E402
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings  # noqa: E402
from chromadb.config import Settings as ChromaSettings  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from memory import clock
from memory.config import Settings  # noqa: E402
from memory.models import Activity, ActivityKind, Draft, DraftStatus, Note  # noqa: E402

COLLECTION = "plixo_recall"
DEFAULT_DIM = 256
#: Note sources written by staff. Anything else came from outside and is marked untrusted.
INTERNAL_SOURCES = frozenset({"internal", "collector", "system"})
MAX_DOC_CHARS = 4_000

_STOP_WORDS = (
    "a an and are as at be by for from has have i in is it its of on or our please that the "
    "this to was we were will with you your "
    "der die das und ist nicht mit wir ihr ihre sie ein eine zu den dem bitte "
    "le la les et est pas avec nous vous votre une des du de au "
    "el los las y es no con su sus para una por del que"
)
_STOP = frozenset(_STOP_WORDS.split(" "))
_WORD = re.compile(r"[a-z0-9]+(?:[-/][a-z0-9]+)*")


def _fold(text: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    ).lower()


@lru_cache(maxsize=1 << 18)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return h % dim, (1.0 if (h >> 63) & 1 else -1.0)


@register_embedding_function
class HashingEmbedding(EmbeddingFunction[Documents]):
    """Deterministic, offline text embedding by feature hashing (see the module docstring)."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 16:
            raise ValueError("dim must be at least 16")
        self.dim = dim

    def features(self, text: str) -> dict[str, float]:
        words = [w for w in _WORD.findall(_fold(text)) if w not in _STOP and len(w) > 1]
        feats: dict[str, float] = {}
        for i, w in enumerate(words):
            feats["w:" + w] = feats.get("w:" + w, 0.0) + 1.0
            if "-" in w or "/" in w:  # invoice numbers: also their parts ("inv", "1042")
                for part in re.split(r"[-/]", w):
                    if part:
                        feats["w:" + part] = feats.get("w:" + part, 0.0) + 0.5
            if i + 1 < len(words):
                key = "b:" + w + " " + words[i + 1]
                feats[key] = feats.get(key, 0.0) + 0.6
            padded = f"#{w}#"
            for j in range(max(1, len(padded) - 3)):
                key = "c:" + padded[j : j + 4]
                feats[key] = feats.get(key, 0.0) + 0.25
        return feats

    def embed_one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for feat, weight in self.features(text).items():
            idx, sign = _bucket(feat, self.dim)
            vec[idx] += sign * (1.0 + math.log(weight)) if weight >= 1 else sign * weight
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            vec[0] = 1.0  # empty text: a fixed unit vector, far from real notes
            return vec
        return vec / norm

    def __call__(self, input: Documents) -> Embeddings:
        return [self.embed_one(text) for text in input]

    @staticmethod
    def name() -> str:
        return "plixo-hashing-v1"

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashingEmbedding:
        return HashingEmbedding(dim=int(config.get("dim", DEFAULT_DIM)))

    def default_space(self) -> Any:
        return "cosine"

    def supported_spaces(self) -> Any:
        return ["cosine", "ip", "l2"]

    def is_legacy(self) -> bool:
        return False


@dataclass(frozen=True)
class RecallItem:
    """One thing to remember: a note, a payer reply or a past outreach."""

    doc_id: str
    org_id: int
    customer_id: int
    kind: str  # note | reply | outreach
    text: str
    source: str = "internal"
    invoice_id: int | None = None
    created_at: datetime | None = None


class RecallHit(BaseModel):
    id: str
    kind: str
    customer_id: int
    invoice_id: int | None
    source: str
    untrusted: bool
    created_at: str
    text: str
    score: float


def _client(path: Path | None, url: str | None = None) -> ClientAPI:
    settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if url:
        return _http_client(url, settings)
    if path is None:
        return chromadb.EphemeralClient(settings=settings)
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def _http_client(url: str, settings: ChromaSettings) -> ClientAPI:
    """A Chroma server (``chroma run``) shared by every machine: ``PLIXO_CHROMA_URL``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"PLIXO_CHROMA_URL={url!r} is not a server address: write it as http://host:8000."
        )
    port = parts.port or (443 if parts.scheme == "https" else 8000)
    return chromadb.HttpClient(
        host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=settings
    )


class Recall:
    """The recall store. Build with ``open_recall(settings)`` (persistent) or ``Recall(path)``.

    One chromadb collection per organisation (``{prefix}_o{org_id}``): the organisation is chosen
    structurally, not by a metadata filter, which is both the stronger isolation and the fast path
    (a filtered search scans metadata; a search of one collection does not). Every record still
    carries ``org_id``, and every hit is checked against it.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        embedding: EmbeddingFunction[Documents] | None = None,
        collection: str = COLLECTION,
        url: str | None = None,
    ) -> None:
        self.embedding = embedding or HashingEmbedding()
        self.prefix = collection
        self._client = _client(path, url)
        self._cols: dict[int, Any] = {}

    def _collection(self, org_id: int, *, create: bool) -> Any | None:
        if not isinstance(org_id, int) or isinstance(org_id, bool):
            raise TypeError("org_id must be an int: recall is always scoped to one organisation")
        col = self._cols.get(org_id)
        if col is not None:
            return col
        name = f"{self.prefix}_o{org_id}"
        if create:
            col = self._client.get_or_create_collection(
                name,
                embedding_function=cast(Any, self.embedding),
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"org_id": org_id},
            )
        else:
            try:
                col = self._client.get_collection(
                    name, embedding_function=cast(Any, self.embedding)
                )
            except Exception:  # chromadb raises NotFoundError (a ValueError) for a new org
                return None
        self._cols[org_id] = col
        return col

    # --- writing -------------------------------------------------------------------------------

    def add(self, items: Iterable[RecallItem], *, batch: int = 2_000) -> int:
        """Upsert items (same ``doc_id`` replaces); returns how many were written."""
        buf: dict[int, list[RecallItem]] = {}
        written = 0
        for item in items:
            group = buf.setdefault(item.org_id, [])
            group.append(item)
            if len(group) >= batch:
                written += self._upsert(item.org_id, group)
                buf[item.org_id] = []
        for org_id, group in buf.items():
            if group:
                written += self._upsert(org_id, group)
        return written

    def _upsert(self, org_id: int, items: Sequence[RecallItem]) -> int:
        seen: dict[str, RecallItem] = {}
        for item in items:
            seen[_global_id(item.org_id, item.doc_id)] = item
        ids = list(seen)
        docs = [it.text.strip()[:MAX_DOC_CHARS] or "(empty)" for it in seen.values()]
        metas: list[dict[str, Any]] = [
            {
                "org_id": it.org_id,
                "customer_id": it.customer_id,
                "kind": it.kind,
                "source": it.source,
                "invoice_id": it.invoice_id if it.invoice_id is not None else -1,
                "created_at": (it.created_at or clock.now()).isoformat(),
            }
            for it in seen.values()
        ]
        col = self._collection(org_id, create=True)
        assert col is not None
        col.upsert(ids=ids, documents=docs, metadatas=cast(Any, metas))
        return len(ids)

    def delete_customer(self, org_id: int, customer_id: int) -> None:
        """Forget everything about one customer (e.g. on a data-deletion request)."""
        col = self._collection(org_id, create=False)
        if col is not None:
            col.delete(where={"customer_id": customer_id})

    # --- reading -------------------------------------------------------------------------------

    def count(self, org_id: int | None = None) -> int:
        if org_id is not None:
            col = self._collection(org_id, create=False)
            return int(col.count()) if col is not None else 0
        total = 0
        for col in self._client.list_collections():
            name = col if isinstance(col, str) else col.name
            if name.startswith(f"{self.prefix}_o"):
                total += int(self._client.get_collection(name).count())
        return total

    def query(
        self,
        org_id: int,
        text: str,
        *,
        customer_id: int | None = None,
        kinds: Sequence[str] | None = None,
        k: int = 5,
    ) -> list[RecallHit]:
        """The ``k`` closest records of ``org_id`` (optionally one customer, some kinds)."""
        col = self._collection(org_id, create=False)
        if col is None:
            return []
        k = max(1, min(int(k), 50))
        conds: list[dict[str, Any]] = []
        if customer_id is not None:
            conds.append({"customer_id": customer_id})
        if kinds:
            conds.append({"kind": {"$in": list(kinds)}})
        where: dict[str, Any] | None = (
            None if not conds else conds[0] if len(conds) == 1 else {"$and": conds}
        )
        res = col.query(
            query_texts=[text or " "],
            n_results=k,
            where=cast(Any, where),
            include=cast(Any, ["documents", "metadatas", "distances"]),
        )
        hits: list[RecallHit] = []
        ids = res["ids"][0] if res["ids"] else []
        docs = (res.get("documents") or [[]])[0]
        metas = (res.get("metadatas") or [[]])[0]
        dists = (res.get("distances") or [[]])[0]
        for doc_id, doc, meta, dist in zip(ids, docs, metas, dists, strict=False):
            if meta is None or meta.get("org_id") != org_id:  # defence in depth
                continue
            if customer_id is not None and meta.get("customer_id") != customer_id:
                continue
            inv = meta.get("invoice_id")
            source = str(meta.get("source", ""))
            hits.append(
                RecallHit(
                    id=doc_id.split(":", 1)[1] if ":" in doc_id else doc_id,
                    kind=str(meta.get("kind", "")),
                    customer_id=int(cast(int, meta.get("customer_id", 0))),
                    invoice_id=int(cast(int, inv)) if isinstance(inv, int) and inv >= 0 else None,
                    source=source,
                    untrusted=source not in INTERNAL_SOURCES,
                    created_at=str(meta.get("created_at", "")),
                    text=doc or "",
                    score=round(1.0 - float(dist), 4),
                )
            )
        return hits


def _global_id(org_id: int, doc_id: str) -> str:
    return f"{org_id}:{doc_id}"


def open_recall(settings: Settings) -> Recall:
    """The recall store of this installation: the Chroma server at ``PLIXO_CHROMA_URL`` when set
    (recall shared by workers on several machines), else ``{data_dir}/chroma``. The same
    per-organisation collections and checks either way."""
    return Recall(settings.chroma_dir, url=settings.chroma_url)


def ledger_items(
    session: Session, org_id: int, *, since: datetime | None = None
) -> Iterable[RecallItem]:
    """Notes, inbound replies and sent outreach of ``org_id`` as recall items."""
    notes = select(Note).where(Note.org_id == org_id)
    if since is not None:
        notes = notes.where(Note.created_at >= since)
    for n in session.scalars(notes.order_by(Note.id)):
        yield RecallItem(
            doc_id=f"note:{n.id}",
            org_id=org_id,
            customer_id=n.customer_id,
            kind="note",
            text=n.body,
            source=n.source,
            invoice_id=n.invoice_id,
            created_at=n.created_at,
        )
    acts = select(Activity).where(Activity.org_id == org_id, Activity.body.is_not(None))
    if since is not None:
        acts = acts.where(Activity.occurred_at >= since)
    for a in session.scalars(acts.order_by(Activity.id)):
        inbound = a.direction == "in" or a.kind is ActivityKind.REPLY
        yield RecallItem(
            doc_id=f"activity:{a.id}",
            org_id=org_id,
            customer_id=a.customer_id,
            kind="reply" if inbound else "outreach",
            text=a.body or a.summary,
            source="payer" if inbound else "internal",
            invoice_id=a.invoice_id,
            created_at=a.occurred_at,
        )
    drafts = select(Draft).where(Draft.org_id == org_id, Draft.status == DraftStatus.SENT)
    if since is not None:
        drafts = drafts.where(Draft.updated_at >= since)
    for d in session.scalars(drafts.order_by(Draft.id)):
        yield RecallItem(
            doc_id=f"draft:{d.id}",
            org_id=org_id,
            customer_id=d.customer_id,
            kind="outreach",
            text=f"{d.subject}\n{d.body}",
            source="internal",
            invoice_id=d.invoice_id,
            created_at=d.updated_at,
        )


def index_ledger(
    session: Session, org_id: int, recall: Recall, *, since: datetime | None = None
) -> int:
    """Copy the organisation's notes, replies and sent outreach into recall (idempotent)."""
    return recall.add(ledger_items(session, org_id, since=since))
