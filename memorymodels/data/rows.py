"""Rows of ``context`` tokens cut from encoded documents: one per document (padded) or a packed stream.

Each batch of rows carries, per row, where a shard ending at that row must resume (the corpus position of the first
document not fully used, and how many of its tokens are already in rows) and the documents and UTF-8 bytes that
start in it, so that shard counts add up exactly across interruptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memorymodels.data.tokenizer import EOS_ID, PAD_ID


@dataclass
class Rows:
    """Rows cut from one batch of documents, with what a shard ending at each row must record."""

    ids: np.ndarray  # (r, context) token ids
    next_doc: np.ndarray  # (r,) corpus position of the first document not fully used after this row
    next_offset: np.ndarray  # (r,) tokens of that document already in rows
    docs: np.ndarray  # (r,) documents that start in this row
    nbytes: np.ndarray  # (r,) UTF-8 bytes of the documents that start in this row

    def __len__(self) -> int:
        return len(self.ids)


def padded_rows(encodings, positions, nbytes, *, context: int, left: bool, dtype, token_bytes: np.ndarray) -> Rows:
    """One row per non-empty document, cut to ``context`` tokens and padded on the left or right.

    A cut document counts the UTF-8 bytes of its kept tokens (``token_bytes[id]``: byte-level tokens stand for
    fixed byte strings), so a character split by the cut counts the bytes of it that went into the row.
    """
    keep = [i for i, enc in enumerate(encodings) if enc.ids]
    ids = np.full((len(keep), context), PAD_ID, dtype=dtype)
    used_bytes = np.empty(len(keep), dtype=np.int64)
    for row, i in enumerate(keep):
        tokens = encodings[i].ids
        used_bytes[row] = nbytes[i]
        if len(tokens) > context:
            tokens = tokens[:context]
            used_bytes[row] = int(token_bytes[tokens].sum())
        if left:
            ids[row, context - len(tokens):] = tokens
        else:
            ids[row, : len(tokens)] = tokens
    next_doc = np.asarray([positions[i] + 1 for i in keep], dtype=np.int64)
    ones = np.ones(len(keep), dtype=np.int64)
    return Rows(ids, next_doc, np.zeros(len(keep), dtype=np.int64), ones, used_bytes)


class Packer:
    """Concatenates documents, each followed by eos, and cuts the stream into rows of ``context`` tokens.

    Positions are global token indices in the split's stream; ``start`` is where this run begins (after the rows of
    already finished shards). Tokens that do not fill a row wait in ``carry`` for the next batch or ``finish``.
    """

    def __init__(self, *, context: int, left: bool, dtype, start: int = 0):
        self.context, self.left, self.dtype = context, left, dtype
        self.carry = np.zeros(0, dtype=dtype)
        self.position = start  # global index of carry[0]
        self.pending_docs = 0  # documents that start in carry
        self.pending_bytes = 0
        self.last_doc = -1

    def add(self, encodings, positions, nbytes, first_offset: int = 0) -> Rows:
        """Append a batch of encoded documents (``positions``: their corpus positions; ``first_offset``: tokens of the
        first one already in finished shards) and return the full rows that are ready."""
        flat, lengths, counted = [], [], []
        for k, enc in enumerate(encodings):
            if not enc.ids:
                continue
            tokens = enc.ids + [EOS_ID]
            lengths.append(len(tokens))
            if k == 0 and first_offset:
                tokens = tokens[first_offset:]  # resuming inside this document: its head is in finished shards
            counted.append(not (k == 0 and first_offset))
            flat.extend(tokens)
        kept = [i for i, enc in enumerate(encodings) if enc.ids]
        if positions:
            self.last_doc = positions[-1]
        if not kept:
            return self._empty()
        lengths = np.asarray(lengths, dtype=np.int64)
        batch_start = self.position + len(self.carry)
        first_shift = first_offset if encodings[0].ids else 0
        starts = batch_start - first_shift + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ends = starts + lengths
        stream = np.concatenate([self.carry, np.asarray(flat, dtype=self.dtype)])
        n_rows = len(stream) // self.context
        ids = stream[: n_rows * self.context].reshape(n_rows, self.context)
        self.carry = stream[n_rows * self.context:].copy()

        # where a shard ending at each row resumes: the first document that ends after the row's end
        row_ends = self.position + self.context * np.arange(1, n_rows + 1, dtype=np.int64)
        self.position += n_rows * self.context
        after = np.searchsorted(ends, row_ends, side="right")
        doc_positions = np.asarray([positions[i] for i in kept] + [self.last_doc + 1], dtype=np.int64)
        next_doc = doc_positions[after]
        next_offset = np.where(after < len(kept), row_ends - starts[np.minimum(after, len(kept) - 1)], 0)

        # documents (and their bytes) are counted in the row where they start; the resumed document was counted
        # before the interruption, and documents starting in the carry wait as pending for the next row
        counted = np.asarray(counted)
        counted_starts = starts[counted]
        counted_bytes = np.concatenate([[0], np.cumsum(np.asarray([nbytes[i] for i in kept], dtype=np.int64)[counted])])
        before = np.searchsorted(counted_starts, np.concatenate([[self.position - n_rows * self.context], row_ends]))
        docs = np.diff(before)
        used_bytes = np.diff(counted_bytes[before])
        if n_rows:
            docs[0] += self.pending_docs
            used_bytes[0] += self.pending_bytes
            self.pending_docs = self.pending_bytes = 0
        self.pending_docs += int(len(counted_starts) - before[-1])
        self.pending_bytes += int(counted_bytes[-1] - counted_bytes[before[-1]])
        return Rows(ids, next_doc, next_offset.astype(np.int64), docs.astype(np.int64), used_bytes.astype(np.int64))

    def finish(self) -> Rows:
        """The last, padded row (empty when the stream filled whole rows)."""
        if not len(self.carry):
            return self._empty()
        row = np.full((1, self.context), PAD_ID, dtype=self.dtype)
        if self.left:
            row[0, self.context - len(self.carry):] = self.carry
        else:
            row[0, : len(self.carry)] = self.carry
        rows = Rows(row, np.asarray([self.last_doc + 1]), np.zeros(1, dtype=np.int64),
                    np.asarray([self.pending_docs]), np.asarray([self.pending_bytes]))
        self.carry = self.carry[:0]
        self.pending_docs = self.pending_bytes = 0
        return rows

    def _empty(self) -> Rows:
        empty = np.zeros(0, dtype=np.int64)
        return Rows(np.zeros((0, self.context), dtype=self.dtype), empty, empty, empty, empty)
