"""Compress any file with a trained causal language model and arithmetic coding, and decompress it exactly.

    python -m memorymodels.compress RUN_DIR FILE [-o FILE.mmz] [--streams B] [--threads N] [--overlap K]
    python -m memorymodels.compress --decompress RUN_DIR FILE.mmz [-o FILE] [--threads N]
    cat FILE | python -m memorymodels.compress RUN_DIR - > FILE.mmz        # '-': stdin / stdout

The model's next-token probabilities drive a range coder (``constriction``), so the compressed size is the model's
cross entropy on the file plus a few bytes: the bits-per-byte number of ``memorymodels.evaluate`` made real.

Bytes -> tokens. The run's byte-level BPE tokenizer (``memorymodels.data.tokenizer``). The bytes are decoded as UTF-8
with ``surrogateescape``; valid stretches go through the tokenizer with special-token text (``<|endoftext|>``) encoded
as plain characters, and each byte of an invalid stretch becomes its one-byte token (ids 2..257). Tokens -> bytes never
goes through text: every token id maps to the bytes its byte-level string stands for, so any byte sequence
(binary files, cut UTF-8) round-trips; the encoder checks it before coding.

Blocks and streams. The input is read in blocks of ``BLOCK_BYTES`` (the last one shorter), so memory does not grow
with the file. A block's tokens are cut into B contiguous segments of equal length (segment i holds tokens
``[i*n//B, (i+1)*n//B)``) coded side by side: each step runs the model once on a (B, 1) batch, one token of every
segment, and the B symbols go into one range coder in row order. B defaults to one segment per ``SEGMENT_WINDOWS``
windows of tokens, at most ``MAX_STREAMS`` (``--streams`` sets it); more streams are faster and lose a little
context at each segment's start.

Windows. The model takes L tokens. A segment is ``<|endoftext|>`` and its tokens, cut into windows of L positions;
position p of a window predicts the token after it. After the first window, each window starts with ``overlap``
positions of tokens already coded (L/8 by default), fed to the model in one chunk, then steps one position at a time
to L-2 (the last position's logits are never trained). A step is ``model.step`` on the model's incremental state (the
Llama's key/value cache, the mixer's cached mixing inputs): it costs one position, not a window.

Encoder and decoder agree bit for bit because they run the same computation: both sides iterate ``predictions``,
which makes the same ``model.step`` calls on tensors of the same shapes and values (the decoder fills in each token
before the next step reads it), then a float64 softmax of the float32 logits, which ``constriction``'s
``Categorical(perfect=False)`` quantizes. What the floats depend on, the header records and the decoder checks
before decoding (``Numerics``); a mismatch is refused in one line that says what must match:
- the torch build (``torch.__version__``; its MKL and oneDNN come with it);
- the CPU instruction set torch's kernels use (``torch.backends.cpu.get_cpu_capability()``, e.g. AVX512; set
  ``ATEN_CPU_CAPABILITY=avx2`` on both sides to pin a common one) and MKL's code path (MKL's conditional numerical
  reproducibility, ``MKL_CBWR``; e.g. ``MKL_CBWR=AVX2,STRICT`` on both sides); the refusal names the settings that
  make this machine compute as the encoder did, where its CPU has the encoder's instruction set;
- the thread count, unless MKL runs in strict CNR mode, where its matrix products give the same bits on any number
  of threads. The command line sets ``MKL_CBWR=AUTO,STRICT`` unless the environment sets ``MKL_CBWR``, so a file
  compressed with ``--threads 2`` decompresses with one thread, or in a process with other OMP/MKL thread settings
  (tests/training/test_compress.py runs the two in separate processes). Without strict CNR (a library caller whose
  process did a matrix product before, a torch without MKL) the header records the thread count and the decoder
  uses it.
Then the checks: a probe (a checksum of the probabilities of a fixed batch, computed by the encoder and stored in
the header) is recomputed before any block is decoded, which catches a machine that computes differently without a
different version or instruction set (another MKL build, a CPU model whose kernels differ); each block's decoded
bytes are checked against the block's CRC-32 before they are written, and the whole output against the file's
SHA-256 at the end; the other CRC-32s catch a damaged file. The output goes to a temporary file renamed at the end,
so a refused, failed or interrupted (Ctrl-C, SIGTERM) run leaves nothing under the output name (with ``-o -`` only
verified blocks reach stdout). On a terminal, a progress bar shows bytes and bytes/s on stderr.

Speed: a step costs one position per segment; its matrix products are (B, d) x (d, 4d), so more streams amortize
the weights, while the cached state each token reads (L/2 positions x d per layer on average) does not shrink:
BENCHMARKS.md, codec, has the measured throughput.

File format (version 2, little-endian); version 1 files (one window per token, ``decode_v1``) still decode:

    header (102 bytes): magic "MMZ" + version byte | run identity (16 bytes, ASCII, NUL-padded) | checkpoint step
      (u64) | weights hash (8 bytes: SHA-256 of the loaded state dict) | tokenizer fingerprint (8 bytes) | L (u32)
      | overlap (u16) | streams of the first block (u16) | original bytes (u64; 0 from a pipe) | torch version (16)
      | CPU capability (8) | MKL CNR settings (u32: STRICT bit | code path) | threads (u16; 0: any) | probe (8)
      | CRC-32 of the header
    blocks (23 bytes + payload): method (u8: 0 model, 1 stored) | streams B (u16) | tokens n (u32) | bytes (u32)
      | payload bytes (u32) | CRC-32 of the block's bytes | CRC-32 of these fields and the payload; then the payload:
      the range coder's 32-bit words, or the block's bytes where coding them would not be smaller (stored)
    end (21 bytes): method (u8: 2) | the file's bytes (u64) | SHA-256 of all of them (first 8) | CRC-32
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import os
import re
import signal
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import constriction
import numpy as np
import torch

from memorymodels import checkpoints
from memorymodels.checkpoints import CheckpointError
from memorymodels.configuration import ConfigError, flag_number
from memorymodels.data.errors import DataError
from memorymodels.data.tokenizer import EOS_ID, PAD_ID, fingerprint, load_tokenizer
from memorymodels.evaluate import load_checkpoint
from memorymodels.experiment import build, experiment_from_dict, load_data
from memorymodels.fileio import CorruptFileError, DiskFullError, disk_full_error, exits_on_full_disk, read_json
from memorymodels.rundir import RunPaths

MAGIC = b"MMZ"
VERSION = 2
HEADER = struct.Struct("<3sB16sQ8s8sIHHQ16s8sIH8s")
"""magic, version, identity, step, weights hash, tokenizer fingerprint, L, overlap, streams, bytes, torch version,
CPU capability, MKL CNR, threads, probe; then the CRC-32 of these fields."""
BLOCK = struct.Struct("<BHIIII")
"""method, streams, tokens, bytes, payload bytes, CRC-32 of the bytes; then the CRC-32 of these and the payload."""
END_FIELDS = struct.Struct("<BQ8s")
"""The end marker: method END, the file's bytes, the SHA-256 of all of them (first 8); then the CRC-32 of these."""
MODEL, STORED, END = 0, 1, 2
"""Block methods: the range coder's words; the bytes themselves, where coding would not make them smaller (what a
text model does to most binary data: about 20 bits per byte); the end of the file."""
OVERHEAD = HEADER.size + BLOCK.size + END_FIELDS.size + 3 * 4
"""Bytes a one-block file adds to its payload: the header, the block's header and the end marker, each with its
CRC-32."""
BLOCK_BYTES = 256 * 1024
"""Bytes read, tokenized and coded at a time: what bounds memory (with the model's state for B streams)."""
MAX_STREAMS = 128
"""Default ceiling on B: beyond it a step's matrix products gain little and every segment start costs context."""
SEGMENT_WINDOWS = 2
"""Default B gives each segment at least this many windows of tokens."""
DEFAULT_OVERLAP = 0.125
"""Context carried into each window after the first, as a fraction of L: it costs a chunk of ``overlap`` positions
per window on both sides (BENCHMARKS.md, codec, has the trade-off measured)."""
CAUSAL_MODELS = ("language_mixer", "llama_clm")
"""Registry names of plain next-token models with incremental inference (``new_cache``, ``step``)."""
FILLER = PAD_ID
"""What fills the positions after a segment's last token (read by no coded prediction)."""
ESCAPED = re.compile("([\udc80-\udcff]+)")  # the bytes that are not valid UTF-8, after decode("surrogateescape")


class CodecError(Exception):
    """A refusal or a corrupt file, said in one line."""


# ---- bytes <-> tokens -------------------------------------------------------------------------------------------


def byte_symbols() -> list[str]:
    """``symbols[b]``: the character standing for byte b in byte-level BPE strings (GPT-2's ``bytes_to_unicode``)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


class ByteTokens:
    """The run's tokenizer as a map between any bytes and token ids, exact both ways."""

    def __init__(self, tokenizer):
        symbols = byte_symbols()
        ids = [tokenizer.token_to_id(s) for s in symbols]
        if None in ids:
            raise CodecError(f"the tokenizer has no token for byte {ids.index(None)}; it is not a byte-level BPE")
        self.tokenizer = tokenizer
        self.byte_ids = np.array(ids, dtype=np.int64)
        value = {s: b for b, s in enumerate(symbols)}
        self.table = [b""] * tokenizer.get_vocab_size()
        for token, index in tokenizer.get_vocab().items():
            if index not in (PAD_ID, EOS_ID):  # never produced from bytes; they decode to nothing
                self.table[index] = bytes(value[c] for c in token)

    def encode(self, data: bytes) -> np.ndarray:
        """Token ids (int64) of ``data``; ``decode`` gives ``data`` back."""
        parts = ESCAPED.split(data.decode("utf-8", "surrogateescape"))  # valid, invalid, valid, ...
        texts = [text for text in parts[0::2] if text]
        encoded = iter(self.tokenizer.encode_batch(texts, add_special_tokens=False))
        ids = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.byte_ids[[ord(c) - 0xDC00 for c in part]])
            elif part:
                ids.append(np.array(next(encoded).ids, dtype=np.int64))
        tokens = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        if self.decode(tokens) != data:
            raise CodecError("the tokenizer does not give these bytes back exactly (a normalizer?); nothing written")
        return tokens

    def decode(self, tokens) -> bytes:
        return b"".join(self.table[t] for t in tokens)


# ---- what the floats depend on ----------------------------------------------------------------------------------

MKL_STRICT = 0x10000
"""``MKL_CBWR_STRICT``: MKL's matrix products give the same bits on any number of threads."""
MKL_BRANCHES = {3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2",
                12: "AVX512", 14: "AVX512_E1"}
"""MKL's code paths (``MKL_CBWR_*`` in mkl_service.h) by number, for messages."""


def mkl_cnr() -> int | None:
    """MKL's conditional-numerical-reproducibility settings in effect (STRICT bit | the code path it runs, the
    CPU's own for AUTO), or None when torch has no MKL.

    The one adapter around MKL's private service functions: torch links MKL statically and exports
    ``mkl_serv_cbwr_get`` (what the public ``mkl_cbwr_get`` calls) but not the public name; tests/training/
    test_compress.py fails loudly if they change. The first call fixes MKL's mode (from ``MKL_CBWR``), as the first
    matrix product would.
    """
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get, auto = lib.mkl_serv_cbwr_get, lib.mkl_serv_cbwr_get_auto_branch
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes, auto.restype, auto.argtypes = ctypes.c_int, [ctypes.c_int], ctypes.c_int, []
    settings, branch = get(-1), get(1)  # MKL_CBWR_ALL, MKL_CBWR_BRANCH
    if branch in (1, 2):  # MKL_CBWR_BRANCH_OFF / MKL_CBWR_AUTO: the code path MKL picks for this CPU
        branch = auto()
    return (settings & MKL_STRICT) | branch


@dataclass(frozen=True)
class Numerics:
    """What, besides the model and the input, decides the bits of the probabilities."""

    torch: str
    """torch's version (its MKL and oneDNN are part of the build)."""
    cpu: str
    """The instruction set torch's own kernels use (``get_cpu_capability``: AVX512, AVX2, DEFAULT...)."""
    mkl: int
    """MKL's CNR settings (``mkl_cnr``; 0 without MKL)."""
    threads: int
    """Torch threads the results depend on; 0 when they do not (MKL in strict CNR mode)."""

    @classmethod
    def here(cls, threads: int) -> Numerics:
        mkl = mkl_cnr() or 0
        return cls(torch.__version__, torch.backends.cpu.get_cpu_capability(), mkl,
                   0 if mkl & MKL_STRICT else threads)

    def describe(self) -> str:
        branch = self.mkl & ~MKL_STRICT
        mkl = (f"MKL {MKL_BRANCHES.get(branch, f'code path {branch}')}"
               f"{', strict CNR' if self.mkl & MKL_STRICT else ''}") if self.mkl else "no MKL"
        threads = f"{self.threads} thread(s)" if self.threads else "any thread count"
        return f"torch {self.torch}, {self.cpu} kernels, {mkl}, {threads}"

    def mismatch(self, other: Numerics) -> str | None:
        """What differs from ``other`` (the encoder's), and what to do, or None. Threads are not compared here: a
        decoder uses the encoder's count when it matters."""
        if (self.torch, self.cpu, self.mkl) == (other.torch, other.cpu, other.mkl):
            return None
        wrote = f"it was encoded with {other.describe()}; this process computes with {self.describe()}"
        branch = MKL_BRANCHES.get(other.mkl & ~MKL_STRICT)
        if self.torch != other.torch or not other.mkl or branch is None:
            return f"{wrote}: decode with the same torch build on a CPU with the same instruction set"
        return (f"{wrote}: decode with ATEN_CPU_CAPABILITY={other.cpu.lower()} "
                f"MKL_CBWR={branch}{',STRICT' if other.mkl & MKL_STRICT else ''} in the environment (on a CPU that "
                f"has {other.cpu} and MKL's {branch} code path)")


@contextlib.contextmanager
def deterministic(threads: int):
    """The codec's float math: ``threads`` torch threads, no autograd. The CPU kernels a step runs (matrix products,
    norms, softmax, attention) give the same bits run after run; ``torch.use_deterministic_algorithms`` is not
    needed for them (it governs scatter-style and CUDA kernels) and costs seconds of imports per process."""
    if threads < 1:
        raise CodecError(f"threads must be 1 or more, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(previous)


# ---- the model side ---------------------------------------------------------------------------------------------


@dataclass
class Coder:
    """A run's causal model, tokenizer and the identities a .mmz file records."""

    model: torch.nn.Module
    tokens: ByteTokens
    identity: str
    step: int
    weights: bytes
    tokenizer: bytes
    length: int
    run_dir: Path

    def describe(self) -> str:
        return f"run {self.identity} checkpoint-{self.step} (weights {self.weights.hex()})"


def weights_hash(model: torch.nn.Module) -> bytes:
    """First 8 bytes of the SHA-256 of the state dict (names, dtypes, shapes, values), whatever the file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.digest()[:8]


def run_identity(run_dir: Path) -> tuple[str, dict]:
    try:
        info = read_json(RunPaths(run_dir).run_json)
    except CorruptFileError as exc:
        raise CodecError(f"{exc}; the run's manifest names the model that codes") from None
    if info is None or "config" not in info or "model" not in info:
        raise CodecError(f"{run_dir}: no readable run.json with a model; is this a trained run directory?")
    return str(info.get("identity", "")), info


def load_coder(run_dir: Path, checkpoint: Path | None = None) -> Coder:
    """The run's model (from ``checkpoint``, by default its newest complete one) and tokenizer, ready to code."""
    run_dir = Path(run_dir)
    identity, info = run_identity(run_dir)
    build_args = info["model"]["build"]
    if build_args["name"] not in CAUSAL_MODELS:
        raise CodecError(f"{run_dir}: '{build_args['name']}' is not a causal language model; compressing needs one "
                         f"of {', '.join(CAUSAL_MODELS)}")
    if len(identity) > 16:
        raise CodecError(f"{run_dir}: run identity {identity!r} is longer than the 16 bytes the header holds")
    if checkpoint is None:
        complete, _ = checkpoints.checkpoints(run_dir)
        if not complete:
            raise CodecError(f"{run_dir}: no complete checkpoint-STEP directory; train first")
        checkpoint = complete[-1]
    checkpoint = Path(checkpoint)
    if not checkpoints.CHECKPOINT_RE.match(checkpoint.name):
        raise CodecError(f"{checkpoint}: not a checkpoint-STEP directory")
    experiment = experiment_from_dict(info["config"], source=str(RunPaths(run_dir).run_json))
    tokenizer_dir = load_data(experiment).tokenizer_dir
    model = build(build_args)
    load_checkpoint(model, checkpoint)
    model.float().eval()
    return Coder(model=model, tokens=ByteTokens(load_tokenizer(tokenizer_dir)), identity=identity,
                 step=checkpoints.checkpoint_step(checkpoint), weights=weights_hash(model),
                 tokenizer=bytes.fromhex(fingerprint(tokenizer_dir))[:8], length=model.input_length, run_dir=run_dir)


# ---- the computation both sides run -----------------------------------------------------------------------------


def windows(n: int, length: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, first, last)`` per window: stream positions start..start+L-2 predict tokens first..last.

    The stream is BOS then the n tokens (position k holds token k, k = 1..n); the first window predicts from 0,
    later ones keep ``overlap`` positions of coded context before the position that predicts their first token. The
    last position of a window predicts nothing: training never scores it (its label is past the row), so its
    logits are untrained.
    """
    if not 0 <= overlap <= length - 2:
        raise CodecError(f"overlap must be between 0 and the window length - 2 ({length - 2}), got {overlap}")
    plan, first = [], 1
    while first <= n:
        start = max(0, first - 1 - overlap)
        last = min(start + length - 1, n)
        plan.append((start, first, last))
        first = last + 1
    return plan


def default_streams(tokens: int, length: int) -> int:
    """B for a block of ``tokens``: one segment per ``SEGMENT_WINDOWS`` windows, 1..``MAX_STREAMS``."""
    return max(1, min(MAX_STREAMS, tokens // (SEGMENT_WINDOWS * length)))


def segments(tokens: np.ndarray, streams: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, m+1) streams (BOS, segment i's tokens, FILLER after them) and the (B,) segment lengths."""
    n = len(tokens)
    bounds = [i * n // streams for i in range(streams + 1)]
    lengths = np.diff(bounds)
    rows = np.full((streams, int(lengths.max(initial=0)) + 1), FILLER, dtype=np.int64)
    rows[:, 0] = EOS_ID
    for i in range(streams):
        rows[i, 1:1 + lengths[i]] = tokens[bounds[i]:bounds[i + 1]]
    return rows, lengths


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """(k, V) float64 probabilities of float32 logits rows, computed the same way by encoder and decoder."""
    return torch.softmax(logits.double(), dim=-1).numpy()


def predictions(model, rows: np.ndarray, lengths: np.ndarray, length: int, overlap: int,
                progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(j, active, probs)`` for j = 1, 2, ...: the probabilities (k, V) of token j of the k segments that
    have one (``active``, row indices), in the order they are coded.

    ``rows`` (B, m+1) is read, never written: the decoder writes ``rows[active, j]`` before asking for the next
    item, and position j of a row is read only after that. Encoder and decoder both iterate this generator, so they
    make the same ``model.step`` calls on the same shapes and values. ``progress(tokens)`` after each window.
    """
    ids = torch.from_numpy(rows)  # shares memory with rows: the decoder's writes are seen
    cache = model.new_cache(len(rows))
    counts = np.arange(len(lengths))
    for start, first, last in windows(int(lengths.max(initial=0)), length, overlap):
        cache.position = 0
        if first - 1 > start:  # context already coded, in one chunk: (B, first-1-start)
            model.step(ids[:, start:first - 1], cache, logits=False)
        for j in range(first, last + 1):
            logits = model.step(ids[:, j - 1:j], cache)[:, 0]  # (B, V)
            active = counts[lengths >= j]
            yield j, active, probabilities(logits if len(active) == len(rows) else logits[active])
        if progress:
            progress(int(np.minimum(lengths, last).sum() - np.minimum(lengths, first - 1).sum()))


def probe(coder: Coder, streams: int, overlap: int) -> bytes:
    """8 bytes of the SHA-256 of the probabilities of a fixed batch of ``streams`` rows: a chunk of ``overlap``
    positions, then one step (the shapes of coding). Recomputed by the decoder before it decodes anything."""
    vocab = len(coder.tokens.table)
    tokens = torch.from_numpy((np.arange(streams * (overlap + 1)) * 7919 % vocab).reshape(streams, overlap + 1))
    cache = coder.model.new_cache(streams)
    if overlap:
        coder.model.step(tokens[:, :overlap], cache, logits=False)
    return hashlib.sha256(probabilities(coder.model.step(tokens[:, overlap:], cache)[:, 0]).tobytes()).digest()[:8]


def encode_tokens(coder: Coder, tokens: np.ndarray, streams: int, overlap: int,
                  progress: Callable[[int], None] | None = None) -> tuple[bytes, float]:
    """The range coder's words for ``tokens`` in ``streams`` segments, and the model's estimate in bits."""
    rows, lengths = segments(tokens, streams)
    encoder, family = constriction.stream.queue.RangeEncoder(), constriction.stream.model.Categorical(perfect=False)
    bits = 0.0
    for j, active, probs in predictions(coder.model, rows, lengths, coder.length, overlap, progress):
        symbols = rows[active, j]
        encoder.encode(symbols.astype(np.int32), family, probs)
        bits -= float(np.log2(probs[np.arange(len(symbols)), symbols]).sum())
    return encoder.get_compressed().astype("<u4").tobytes(), bits


def decode_tokens(coder: Coder, payload: bytes, ntokens: int, streams: int, overlap: int, name: str,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """The ``ntokens`` token ids that ``encode_tokens`` coded in ``payload``."""
    rows, lengths = segments(np.full(ntokens, FILLER, dtype=np.int64), streams)  # the encoder's shapes
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    for j, active, probs in predictions(coder.model, rows, lengths, coder.length, overlap, progress):
        try:
            rows[active, j] = decoder.decode(family, probs)
        except Exception as exc:  # constriction reports an exhausted or invalid stream
            raise CodecError(f"{name}: corrupt payload at token {j} of a segment ({exc})") from None
    return np.concatenate([rows[i, 1:1 + lengths[i]] for i in range(streams)])


# ---- the file ---------------------------------------------------------------------------------------------------


@dataclass
class Header:
    """A version-2 file's header: who decodes it, how it was cut, and the numerics it was computed with."""

    identity: str
    step: int
    weights: bytes
    tokenizer: bytes
    length: int
    overlap: int
    streams: int
    nbytes: int
    numerics: Numerics
    probe: bytes

    def pack(self) -> bytes:
        n = self.numerics
        fields = HEADER.pack(MAGIC, VERSION, self.identity.encode("ascii"), self.step, self.weights, self.tokenizer,
                             self.length, self.overlap, self.streams, self.nbytes, n.torch.encode("ascii")[:16],
                             n.cpu.encode("ascii")[:8], n.mkl, n.threads, self.probe)
        return fields + struct.pack("<I", zlib.crc32(fields))

    @classmethod
    def read(cls, source: BinaryIO, name: str, start: bytes = b"") -> Header:
        """The header at the start of ``source`` (``start``: its first bytes, already read), checked (CodecError)."""
        blob = start + read_exactly(source, HEADER.size + 4 - len(start))
        if len(blob) < HEADER.size + 4:
            raise CodecError(f"{name}: truncated ({len(blob)} bytes, the header alone is {HEADER.size + 4})")
        if zlib.crc32(blob[:HEADER.size]) != struct.unpack_from("<I", blob, HEADER.size)[0]:
            raise CodecError(f"{name}: corrupt header (CRC-32 mismatch)")
        (_, _, identity, step, weights, tokenizer, length, overlap, streams, nbytes, version, cpu, mkl, threads,
         probe_sum) = HEADER.unpack_from(blob)
        text = lambda raw: raw.rstrip(b"\0").decode("ascii", "replace")  # noqa: E731
        header = cls(text(identity), step, weights, tokenizer, length, overlap, streams, nbytes,
                     Numerics(text(version), text(cpu), mkl, threads), probe_sum)
        if not 0 <= header.overlap <= header.length - 2 or header.streams < 1:
            raise CodecError(f"{name}: corrupt header (L={header.length}, overlap {header.overlap}, "
                             f"{header.streams} streams)")
        return header


@dataclass
class Block:
    """A block's header: how its payload codes its bytes, and the CRC-32 the decoded bytes must have."""

    method: int
    streams: int
    ntokens: int
    nbytes: int
    payload: int
    check: int

    def pack(self, payload: bytes) -> bytes:
        fields = BLOCK.pack(self.method, self.streams, self.ntokens, self.nbytes, len(payload), self.check)
        return fields + struct.pack("<I", zlib.crc32(payload, zlib.crc32(fields))) + payload


@dataclass
class End:
    """The end marker: the file's bytes and their SHA-256 (first 8 bytes)."""

    nbytes: int
    digest: bytes

    def pack(self) -> bytes:
        fields = END_FIELDS.pack(END, self.nbytes, self.digest)
        return fields + struct.pack("<I", zlib.crc32(fields))


def read_record(source: BinaryIO, name: str) -> tuple[Block | End, bytes]:
    """The next block and its payload, or the end marker, checked against its CRC-32 and its fields (CodecError)."""
    method = read_exactly(source, 1)
    size = END_FIELDS.size if method == bytes([END]) else BLOCK.size
    fields = method + read_exactly(source, size + 4 - len(method))
    if len(fields) < size + 4:
        raise CodecError(f"{name}: truncated (the file ends inside a block header; no end marker)")
    if method == bytes([END]):
        if zlib.crc32(fields[:size]) != struct.unpack_from("<I", fields, size)[0]:
            raise CodecError(f"{name}: corrupt (CRC-32 mismatch in the end marker)")
        return End(*END_FIELDS.unpack_from(fields)[1:]), b""
    block = Block(*BLOCK.unpack_from(fields))
    payload = read_exactly(source, block.payload)
    if len(payload) < block.payload:
        raise CodecError(f"{name}: truncated (a block's payload has {len(payload)} of its {block.payload} bytes)")
    if zlib.crc32(payload, zlib.crc32(fields[:size])) != struct.unpack_from("<I", fields, size)[0]:
        raise CodecError(f"{name}: corrupt (CRC-32 mismatch in a block)")
    coded = block.method == MODEL and block.payload % 4 == 0 and 1 <= block.streams <= block.ntokens <= block.nbytes
    if not (coded or (block.method == STORED and block.payload == block.nbytes)):
        raise CodecError(f"{name}: corrupt block (method {block.method}, {block.streams} streams, "
                         f"{block.ntokens} tokens for {block.nbytes} bytes)")
    return block, payload


def read_exactly(source: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of ``source`` (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        part = source.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def check_match(header, coder: Coder, name: str) -> None:
    """Refuse, in one line naming both, a coder that is not the one that wrote the file."""
    wrote = f"run {header.identity} checkpoint-{header.step} (weights {header.weights.hex()})"
    if (header.identity, header.step, header.weights) != (coder.identity, coder.step, coder.weights):
        raise CodecError(f"{name} was encoded with {wrote}, not {coder.describe()} from {coder.run_dir}; "
                         f"decode with the run and checkpoint that encoded it")
    if (header.tokenizer, header.length) != (coder.tokenizer, coder.length):
        raise CodecError(f"{name} was encoded with tokenizer {header.tokenizer.hex()} and L={header.length}, not "
                         f"tokenizer {coder.tokenizer.hex()} and L={coder.length} of {coder.run_dir}")


@dataclass
class Stats:
    """What a run of the codec did."""

    bytes: int = 0
    tokens: int = 0
    blocks: int = 0
    stored_blocks: int = 0
    streams: int = 0
    """B of the first block (later blocks may use fewer)."""
    overlap: int = 0
    threads: int = 1
    output_bytes: int = 0
    payload_bytes: int = 0
    """Of ``output_bytes``, the blocks' payloads (the rest is headers)."""
    estimate_bits: float = 0.0
    """Sum of -log2 p over the coded tokens (compressing only)."""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """The process's CPU time over the same span (all threads): ``seconds`` less the time other processes took."""

    @property
    def stored(self) -> bool:
        return self.blocks > 0 and self.stored_blocks == self.blocks


Progress = Callable[[int], None]
"""Called with a number of the input's (compressing) or output's (decompressing) bytes just done."""


def block_streams(streams: int | None, tokens: int, length: int) -> int:
    """B of a block of ``tokens``: ``streams`` (default ``default_streams``), at most one per token."""
    return max(1, min(streams or default_streams(tokens, length), tokens))


def bytes_progress(progress: Progress | None, tokens: int, nbytes: int) -> Callable[[int], None] | None:
    """Turn a block's per-window token counts into its bytes for ``progress``, adding up to ``nbytes`` exactly."""
    if progress is None:
        return None
    done = {"tokens": 0, "bytes": 0}

    def report(count: int) -> None:
        done["tokens"] += count
        now = done["tokens"] * nbytes // max(tokens, 1)
        progress(now - done["bytes"])
        done["bytes"] = now
    return report


def compress_stream(coder: Coder, source: BinaryIO, sink: BinaryIO, *, streams: int | None = None,
                    overlap: int | None = None, threads: int = 1, store: bool = True, nbytes: int = 0,
                    block_bytes: int = BLOCK_BYTES, progress: Progress | None = None) -> Stats:
    """Read ``source`` to its end and write its .mmz file to ``sink``, one block at a time.

    ``streams``: B of every block (default: ``default_streams`` of each block's tokens); ``overlap`` defaults to
    ``DEFAULT_OVERLAP`` of L; ``store``: keep a block's bytes as they are where coding would not make them smaller;
    ``nbytes``: the input's size where known (recorded for the decoder's progress).
    """
    began, cpu = time.perf_counter(), time.process_time()
    overlap = int(coder.length * DEFAULT_OVERLAP) if overlap is None else overlap
    windows(0, coder.length, overlap)  # refuses an overlap that does not fit
    if streams is not None and not 1 <= streams <= 65535:
        raise CodecError(f"--streams must be between 1 and 65535, got {streams}")
    if not 1 <= block_bytes < 2**32:
        raise CodecError(f"blocks hold 1 byte to 4 GiB, not {block_bytes}")
    digest = hashlib.sha256()
    with deterministic(threads):
        data = read_exactly(source, block_bytes)
        tokens = coder.tokens.encode(data)
        b = block_streams(streams, len(tokens), coder.length)
        header = Header(coder.identity, coder.step, coder.weights, coder.tokenizer, coder.length, overlap, b, nbytes,
                        Numerics.here(threads), probe(coder, b, overlap)).pack()
        sink.write(header)
        stats = Stats(streams=b, overlap=overlap, threads=threads, output_bytes=len(header))
        while data:
            payload, bits = encode_tokens(coder, tokens, b, overlap, bytes_progress(progress, len(tokens), len(data)))
            block = Block(MODEL, b, len(tokens), len(data), len(payload), zlib.crc32(data))
            if store and len(payload) >= len(data):
                block, payload = Block(STORED, 0, 0, len(data), len(data), block.check), data
                stats.stored_blocks += 1
            written = block.pack(payload)
            sink.write(written)
            digest.update(data)
            stats.blocks += 1
            stats.bytes += len(data)
            stats.tokens += len(tokens)
            stats.output_bytes += len(written)
            stats.payload_bytes += len(payload)
            stats.estimate_bits += bits
            data = read_exactly(source, block_bytes)
            tokens = coder.tokens.encode(data)
            b = block_streams(streams, len(tokens), coder.length)
    end = End(stats.bytes, digest.digest()[:8]).pack()
    sink.write(end)
    stats.output_bytes += len(end)
    stats.seconds, stats.cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    return stats


def decompress_stream(coder: Coder, header: Header, source: BinaryIO, sink: BinaryIO, name: str, *,
                      threads: int = 1, progress: Progress | None = None) -> Stats:
    """Decode the blocks that follow ``header`` in ``source`` into ``sink``; every block's bytes are checked before
    they are written, and the whole output at the end. Refuses (CodecError) before decoding anything when this
    process would not compute the encoder's probabilities."""
    began, cpu = time.perf_counter(), time.process_time()
    check_match(header, coder, name)
    threads = header.numerics.threads or threads  # the encoder's count, where the results depend on it
    stats, digest = Stats(overlap=header.overlap, threads=threads, streams=header.streams), hashlib.sha256()
    with deterministic(threads):
        here = Numerics.here(threads)
        problem = here.mismatch(header.numerics)
        if problem:
            raise CodecError(f"{name}: cannot be decoded here: {problem}; nothing written")
        if probe(coder, header.streams, header.overlap) != header.probe:
            raise CodecError(f"{name}: this machine computes other probabilities than the encoder did (the probe "
                             f"checksum differs, with {here.describe()} on both sides: another MKL build or CPU "
                             f"model?); decode where it was encoded; nothing written")
        while True:
            block, payload = read_record(source, name)
            if isinstance(block, End):
                break
            if block.method == STORED:
                data = payload
                if progress:
                    progress(len(data))
            else:
                report = bytes_progress(progress, block.ntokens, block.nbytes)
                tokens = decode_tokens(coder, payload, block.ntokens, block.streams, header.overlap, name, report)
                data = coder.tokens.decode(tokens.tolist())
            if len(data) != block.nbytes or zlib.crc32(data) != block.check:
                raise CodecError(f"{name}: block {stats.blocks + 1} decoded to {len(data)} bytes that do not match "
                                 f"its recorded {block.nbytes} bytes and checksum; the file is corrupt or this "
                                 f"machine computes different probabilities")
            sink.write(data)
            digest.update(data)
            stats.blocks += 1
            stats.bytes += len(data)
            stats.tokens += block.ntokens
            stats.stored_blocks += block.method == STORED
    if (block.nbytes, block.digest) != (stats.bytes, digest.digest()[:8]):
        raise CodecError(f"{name}: the end marker records {block.nbytes} bytes, but {stats.bytes} bytes that do not "
                         f"match its checksum were decoded; the file is corrupt")
    if source.read(1):
        raise CodecError(f"{name}: extended (bytes after the end marker)")
    stats.seconds, stats.cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    return stats


def compress(coder: Coder, data: bytes, **options) -> tuple[bytes, Stats]:
    """``data`` as a .mmz file in memory, and its stats (``compress_stream``'s options)."""
    sink = io.BytesIO()
    stats = compress_stream(coder, io.BytesIO(data), sink, nbytes=len(data), **options)
    return sink.getvalue(), stats


def decompress(coder: Coder, blob: bytes, name: str = "input", *, threads: int = 1) -> tuple[bytes, Stats]:
    """The original bytes of a .mmz file (either version) in memory, and stats; CodecError when it cannot be
    trusted."""
    source, sink = io.BytesIO(blob), io.BytesIO()
    start = read_exactly(source, 4)
    if len(start) == 4 and start[:3] == MAGIC and start[3] == 1:
        return decode_v1(coder, blob, name)
    header = Header.read(source, name, check_version(start, name))
    stats = decompress_stream(coder, header, source, sink, name, threads=threads)
    return sink.getvalue(), stats


def check_version(start: bytes, name: str) -> bytes:
    """The first 4 bytes of a version-2 file, or a one-line CodecError saying what they are instead."""
    if len(start) < 4 or start[:3] != MAGIC:
        raise CodecError(f"{name}: not a .mmz file (no MMZ magic)")
    if start[3] not in (1, VERSION):
        raise CodecError(f"{name}: .mmz format version {start[3]}; this memorymodels reads versions 1 and {VERSION}")
    return start


# ---- version 1 (one window per token) ---------------------------------------------------------------------------

V1_FIELDS = struct.Struct("<3sBB16sQ8s8sIIHQQ8sQ")
"""Version 1: magic, version, method (0 model, 1 stored), identity, step, weights hash, tokenizer fingerprint, L,
overlap, threads, bytes, tokens, SHA-256 of the original (first 8), payload bytes; then the CRC-32 of these and the
payload."""
V1_HEADER_BYTES = V1_FIELDS.size + 4


@dataclass
class HeaderV1:
    method: int
    identity: str
    step: int
    weights: bytes
    tokenizer: bytes
    length: int
    overlap: int
    threads: int
    nbytes: int
    ntokens: int
    checksum: bytes
    payload: int

    def pack(self, payload: bytes) -> bytes:
        fields = V1_FIELDS.pack(MAGIC, 1, self.method, self.identity.encode("ascii"), self.step, self.weights,
                                self.tokenizer, self.length, self.overlap, self.threads, self.nbytes, self.ntokens,
                                self.checksum, self.payload)
        return fields + struct.pack("<I", zlib.crc32(payload, zlib.crc32(fields)))

    @classmethod
    def unpack(cls, blob: bytes, name: str) -> HeaderV1:
        if len(blob) < V1_HEADER_BYTES:
            raise CodecError(f"{name}: truncated ({len(blob)} bytes, the header alone is {V1_HEADER_BYTES})")
        values = V1_FIELDS.unpack_from(blob)
        header = cls(values[2], values[3].rstrip(b"\0").decode("ascii", "replace"), *values[4:])
        if len(blob) != V1_HEADER_BYTES + header.payload:
            raise CodecError(f"{name}: truncated or extended: {len(blob)} bytes, the header says "
                             f"{V1_HEADER_BYTES + header.payload}")
        (crc,) = struct.unpack_from("<I", blob, V1_FIELDS.size)
        if crc != zlib.crc32(blob[V1_HEADER_BYTES:], zlib.crc32(blob[:V1_FIELDS.size])):
            raise CodecError(f"{name}: corrupt (CRC-32 mismatch)")
        stored = header.method == STORED and header.payload == header.nbytes and header.ntokens == 0
        if not stored and (header.method != MODEL or header.ntokens > header.nbytes or header.payload % 4):
            raise CodecError(f"{name}: corrupt header (method {header.method}, {header.ntokens} tokens for "
                             f"{header.nbytes} bytes)")
        return header


def window_logits(model: torch.nn.Module, stream: np.ndarray, start: int, length: int) -> torch.Tensor:
    """(L, V) logits of the version-1 window at ``start``: ``stream[start:start+L]``, FILLER past the end."""
    window = np.full(length, FILLER, dtype=np.int64)
    chunk = stream[start:start + length]
    window[:len(chunk)] = chunk
    return model(torch.from_numpy(window)[None])[1][0]  # (L, V)


def probabilities_v1(row: torch.Tensor) -> np.ndarray:
    """Version 1's float32 softmax of one (V,) logits row."""
    return torch.softmax(row.float()[None], dim=-1)[0].numpy()


def decode_v1(coder: Coder, blob: bytes, name: str) -> tuple[bytes, Stats]:
    """A version-1 file: the (1, L) window with the tokens known so far, one full forward pass per token."""
    began = time.perf_counter()
    header = HeaderV1.unpack(blob, name)
    check_match(header, coder, name)
    if header.method == STORED:
        data = blob[V1_HEADER_BYTES:]
    else:
        n = header.ntokens
        stream = np.full(n + 1, FILLER, dtype=np.int64)
        stream[0] = EOS_ID
        words = np.frombuffer(blob, dtype="<u4", offset=V1_HEADER_BYTES).astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        family = constriction.stream.model.Categorical(perfect=False)
        with deterministic(header.threads):
            for start, first, last in windows(n, header.length, header.overlap):
                for j in range(first, last + 1):  # positions j.. of the stream still hold FILLER
                    logits = window_logits(coder.model, stream, start, header.length)
                    try:
                        stream[j] = decoder.decode(family, probabilities_v1(logits[j - 1 - start])[None])[0]
                    except Exception as exc:
                        raise CodecError(f"{name}: corrupt payload at token {j} ({exc})") from None
        data = coder.tokens.decode(stream[1:].tolist())
    if len(data) != header.nbytes or hashlib.sha256(data).digest()[:8] != header.checksum:
        raise CodecError(f"{name}: decoded {len(data)} bytes that do not match the recorded {header.nbytes} bytes "
                         f"and checksum; the file is corrupt or this machine computes different probabilities")
    return data, Stats(bytes=len(data), tokens=header.ntokens, blocks=1, stored_blocks=int(header.method == STORED),
                       streams=1, overlap=header.overlap, threads=header.threads,
                       seconds=time.perf_counter() - began)


# ---- command line -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def output_file(path: str, force: bool) -> Iterator[BinaryIO]:
    """A writable file that appears under ``path`` only when the block ends without an error: a temporary file
    beside it, renamed at the end and removed on any failure or interrupt. ``-``: stdout (written as it goes)."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.exists() and not force:
        raise CodecError(f"{target}: already exists; give --force to overwrite it")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:  # a full disk: one line naming the output and its free space (exit 74)
        raise disk_full_error(exc, target, "nothing was written under that name") or exc from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def progress_bar(total: int, what: str, enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar of bytes and bytes/s on stderr when it is a terminal; else nothing."""
    if not enabled:
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, TextColumn, TimeRemainingColumn,  # noqa
                               TransferSpeedColumn)

    with Bar(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
             transient=True) as bar:
        task = bar.add_task(what, total=total or None)
        yield lambda count: bar.advance(task, count)


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> str:
    """Do what the command line asks; returns the summary line."""
    name = "stdin" if args.file == "-" else args.file
    if args.file != "-" and not Path(args.file).is_file():
        raise CodecError(f"{args.file}: no such file")
    if args.decompress:
        out = args.output or ("-" if args.file == "-" else args.file[:-4] if args.file.endswith(".mmz") else None)
        if out is None:
            raise CodecError(f"{args.file}: does not end in .mmz; give the output with -o")
    else:
        out = args.output or ("-" if args.file == "-" else args.file + ".mmz")
    if out != "-" and Path(out).exists() and not args.force:
        raise CodecError(f"{out}: already exists; give --force to overwrite it")
    show = not args.quiet and sys.stderr.isatty()
    with contextlib.ExitStack() as stack:
        source = sys.stdin.buffer if args.file == "-" else stack.enter_context(open(args.file, "rb"))
        size = 0 if args.file == "-" else os.fstat(source.fileno()).st_size
        if args.decompress:
            return decompress_command(args, source, name, out, show)
        coder = load_coder(args.run_dir, args.checkpoint)
        with progress_bar(size, "compressing", show) as progress, output_file(out, args.force) as sink:
            stats = compress_stream(coder, source, sink, streams=args.streams, overlap=args.overlap,
                                    threads=args.threads, nbytes=size, progress=progress)
    rate = 8 * stats.output_bytes / stats.bytes if stats.bytes else float("nan")
    how = "stored as is: the model would not make it smaller; " if stats.stored else ""
    estimate = stats.estimate_bits / 8 + stats.output_bytes - stats.payload_bytes
    return (f"{name} -> {out}: {stats.bytes:,} -> {stats.output_bytes:,} bytes ({rate:.3f} bits/byte; {how}model "
            f"estimate {estimate:,.0f} bytes with the headers), {stats.tokens:,} tokens in {stats.blocks} block(s) "
            f"of {stats.streams} stream(s), {stats.seconds:.1f} s ({stats.bytes / max(stats.seconds, 1e-9):,.0f} "
            f"bytes/s)")


def decompress_command(args: argparse.Namespace, source: BinaryIO, name: str, out: str, show: bool) -> str:
    """``--decompress``: the header is checked, and the run it names, before any model is loaded."""
    start = check_version(read_exactly(source, 4), name)
    if start[3] == 1:
        blob = start + source.read()
        header = HeaderV1.unpack(blob, name)
    else:
        header = Header.read(source, name, start)
    checkpoint = args.checkpoint or Path(args.run_dir) / f"checkpoint-{header.step}"
    identity, _ = run_identity(args.run_dir)
    if identity != header.identity or not Path(checkpoint).is_dir():
        raise CodecError(f"{name} was encoded with run {header.identity} checkpoint-{header.step}, not "
                         f"{args.run_dir} (run {identity}"
                         f"{'' if Path(checkpoint).is_dir() else f', which has no {Path(checkpoint).name}'}); "
                         f"decode with the run and checkpoint that encoded it")
    coder = load_coder(args.run_dir, checkpoint)
    if start[3] == 1:
        data, stats = decode_v1(coder, blob, name)
        with output_file(out, args.force) as sink:
            sink.write(data)
    else:
        with progress_bar(header.nbytes, "decompressing", show) as progress, output_file(out, args.force) as sink:
            stats = decompress_stream(coder, header, source, sink, name, threads=args.threads, progress=progress)
    return (f"{name} -> {out}: {stats.bytes:,} bytes, {stats.tokens:,} tokens in {stats.blocks} block(s), "
            f"{stats.seconds:.1f} s ({stats.bytes / max(stats.seconds, 1e-9):,.0f} bytes/s)")


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.compress", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a trained causal LM's run directory (holding run.json)")
    parser.add_argument("file", help="the file to compress (or, with --decompress, the .mmz file); - for stdin")
    parser.add_argument("-o", "--output", help="output file (default: FILE.mmz / FILE without .mmz; stdout when "
                                               "FILE is -); - for stdout")
    parser.add_argument("-d", "--decompress", action="store_true", help="decompress FILE.mmz")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the newest complete one; "
                                                        "when decompressing, the one the file names)")
    parser.add_argument("--streams", type=flag_number(int, minimum=1),
                        help=f"segments coded side by side, B (default: one per {SEGMENT_WINDOWS} windows of tokens, "
                             f"at most {MAX_STREAMS})")
    parser.add_argument("--overlap", type=flag_number(int, minimum=0),
                        help="context positions carried into each window after the first (0..L-2; default L/8): "
                             "costs encoder time, not decoder time")
    parser.add_argument("--threads", type=flag_number(int, minimum=1), default=1,
                        help="torch CPU threads (default 1); the file decodes with any count (see the module "
                             "docstring for what must match)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    # before the process's first matrix product: MKL's results then do not depend on the thread count
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    previous = signal.signal(signal.SIGTERM, interrupt)  # a killed run cleans up like an interrupted one
    try:
        summary = run(args)
    except DiskFullError:
        raise  # exit 74 (exits_on_full_disk)
    except (CodecError, CheckpointError, ConfigError, DataError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing written under the output name", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary, file=sys.stderr if (args.output or ("-" if args.file == "-" else "")) == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
