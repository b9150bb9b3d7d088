"""Compress any file with a trained causal language model and arithmetic coding, and decompress it exactly.

    python -m memorymodels.compress RUN_DIR FILE -o FILE.mmz [--checkpoint RUN_DIR/checkpoint-800] [--overlap 32]
    python -m memorymodels.compress --decompress RUN_DIR FILE.mmz -o FILE

The model's next-token probabilities drive a range coder (``constriction``), so the compressed size is the model's
cross entropy on the file plus a few bytes: this is the bits-per-byte number of ``memorymodels.evaluate`` made real.

Bytes -> tokens. The run's byte-level BPE tokenizer (``memorymodels.data.tokenizer``). The bytes are decoded as UTF-8
with ``surrogateescape``; valid stretches go through the tokenizer with special-token text (``<|endoftext|>``) encoded
as plain characters, and each byte of an invalid stretch becomes its one-byte token (ids 2..257). Tokens -> bytes never
goes through text: every token id maps to the bytes its byte-level string stands for, so any byte sequence
(binary files, cut UTF-8) round-trips; the encoder checks it before writing.

Windows. The model takes exactly L tokens. The token stream is ``<|endoftext|>`` followed by the file's tokens, cut
into windows of L positions; position p of a window predicts the token after it. Window after window, the first
``overlap`` positions (L/4 by default) are context already coded (0: each window starts at the last token of the
previous one), the rest predict new tokens, except the last position, whose logits training never scores. The encoder
runs the model once per window on the real tokens; the decoder, for each token, runs the same (1, L) window with the
tokens known so far and ``<|pad|>`` after them. A causal model's logits at p do not depend on later positions, bit
for bit: the masked weights multiply them by exact zeros and the reduction order depends only on the shapes
(tests/training/test_compress.py checks it). Probabilities are a float32 softmax of one logits row, quantized by
``constriction``'s ``Categorical(perfect=False)``, identically on both sides. Everything runs on the CPU in float32
with a fixed thread count (recorded in the header) and deterministic algorithms: decode on the same kind of CPU with
the same torch and constriction as the encoder (a mismatch ends in the checksum error, never in wrong bytes).

File format (version 1, little-endian): an 89-byte header (``FIELDS``, then a CRC-32), then the payload: the range
coder's 32-bit words, or the original bytes where coding them would not be smaller (method STORED).

    magic "MMZ" + version byte | method (u8: 0 model, 1 stored) | run identity (16 bytes, ASCII, NUL-padded)
    | checkpoint step (u64) | weights hash (8 bytes: SHA-256 of the loaded state dict) | tokenizer fingerprint (8 bytes)
    | window length L (u32) | overlap (u32) | torch threads (u16) | original bytes (u64) | tokens (u64)
    | SHA-256 of the original (first 8 bytes) | payload bytes (u64) | CRC-32 of header fields and payload (u32)

Speed: decoding is one forward pass per token (encoding one per window); nothing is batched across positions, since
that would change the shapes the bit-for-bit argument rests on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memorymodels import checkpoints
from memorymodels.checkpoints import CheckpointError
from memorymodels.configuration import ConfigError, flag_number
from memorymodels.data.errors import DataError
from memorymodels.data.tokenizer import EOS_ID, PAD_ID, fingerprint, load_tokenizer
from memorymodels.evaluate import load_checkpoint
from memorymodels.experiment import build, experiment_from_dict, load_data
from memorymodels.fileio import CorruptFileError, DiskFullError, exits_on_full_disk, read_json, write_bytes_atomic
from memorymodels.rundir import RunPaths

MAGIC = b"MMZ"
VERSION = 1
# magic, version, method, identity, step, weights hash, tokenizer fingerprint, L, overlap, threads, bytes, tokens,
# data hash, payload bytes; then the CRC-32 of these fields and the payload
FIELDS = struct.Struct("<3sBB16sQ8s8sIIHQQ8sQ")
HEADER_BYTES = FIELDS.size + 4
MODEL, STORED = 0, 1
"""Methods: the payload is the range coder's words, or the original bytes when coding would not make them smaller
(what a text model does to most binary files: about 20 bits per byte)."""
CAUSAL_MODELS = ("language_mixer", "llama_clm")
"""Registry names of plain next-token models (logits at p predict token p+1 from tokens <= p)."""
FILLER = PAD_ID
"""What the decoder puts after the tokens it knows (any id would do: the logits read never see it)."""
DEFAULT_OVERLAP = 0.25
"""Context carried into each window, as a fraction of L. It costs the encoder (ceil(n / (L-1-overlap)) forward
passes), not the decoder (one per token either way); on the held-out rows of a 2 M-parameter language_mixer with
L = 128 (BENCHMARKS: compress) overlap 32 gave 2.248 bits/byte, 0 gave 2.257, 64 and 96 2.249 and 2.248, 126 2.258."""
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


@contextlib.contextmanager
def deterministic(threads: int):
    """CPU float math that gives the same bits every time: fixed threads, deterministic algorithms, no autograd."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def windows(n: int, length: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, first, last)`` per window: stream positions start..start+L-2 predict tokens first..last.

    The stream is BOS then the n tokens (token k at stream position k+1); the first window predicts from position 0,
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


def window_logits(model: torch.nn.Module, stream: np.ndarray, start: int, length: int) -> torch.Tensor:
    """(L, V) logits of the window at ``start``: ``stream[start:start+L]``, filled with FILLER past the end."""
    window = np.full(length, FILLER, dtype=np.int64)
    chunk = stream[start:start + length]
    window[:len(chunk)] = chunk
    return model(torch.from_numpy(window)[None])[1][0]  # (L, V)


def probabilities(row: torch.Tensor) -> np.ndarray:
    """float32 softmax of one (V,) logits row, computed the same way by encoder and decoder."""
    return torch.softmax(row.float()[None], dim=-1)[0].numpy()


# ---- the file ---------------------------------------------------------------------------------------------------


@dataclass
class Header:
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
        fields = FIELDS.pack(MAGIC, VERSION, self.method, self.identity.encode("ascii"), self.step, self.weights,
                             self.tokenizer, self.length, self.overlap, self.threads, self.nbytes, self.ntokens,
                             self.checksum, self.payload)
        return fields + struct.pack("<I", zlib.crc32(payload, zlib.crc32(fields)))

    @classmethod
    def unpack(cls, blob: bytes, name: str) -> Header:
        """The header of a .mmz file, after checking magic, version, length and CRC (one-line CodecError)."""
        if len(blob) < 4 or blob[:3] != MAGIC:
            raise CodecError(f"{name}: not a .mmz file (no MMZ magic)")
        if blob[3] != VERSION:
            raise CodecError(f"{name}: .mmz format version {blob[3]}; this memorymodels reads version {VERSION}")
        if len(blob) < HEADER_BYTES:
            raise CodecError(f"{name}: truncated ({len(blob)} bytes, the header alone is {HEADER_BYTES})")
        values = FIELDS.unpack_from(blob)
        header = cls(values[2], values[3].rstrip(b"\0").decode("ascii", "replace"), *values[4:])
        if len(blob) != HEADER_BYTES + header.payload:
            raise CodecError(f"{name}: truncated or extended: {len(blob)} bytes, the header says "
                             f"{HEADER_BYTES + header.payload}")
        (crc,) = struct.unpack_from("<I", blob, FIELDS.size)
        if crc != zlib.crc32(blob[HEADER_BYTES:], zlib.crc32(blob[:FIELDS.size])):
            raise CodecError(f"{name}: corrupt (CRC-32 mismatch)")
        stored = header.method == STORED and header.payload == header.nbytes and header.ntokens == 0
        if not stored and (header.method != MODEL or header.ntokens > header.nbytes or header.payload % 4):
            raise CodecError(f"{name}: corrupt header (method {header.method}, {header.ntokens} tokens for "
                             f"{header.nbytes} bytes)")
        return header


def compress(coder: Coder, data: bytes, *, overlap: int | None = None, threads: int = 1,
             store: bool = True) -> tuple[bytes, dict]:
    """``data`` as a .mmz file, and stats: tokens, overlap, stored, payload and header bytes, the model's estimate in
    bits, seconds. ``overlap`` defaults to ``DEFAULT_OVERLAP`` of the window length; ``store``: keep the bytes as
    they are (method STORED) when the coded payload would not be smaller."""
    import constriction

    if len(coder.identity) > 16:
        raise CodecError(f"run identity {coder.identity!r} is longer than the 16 bytes the header holds")
    overlap = int(coder.length * DEFAULT_OVERLAP) if overlap is None else overlap
    began = time.perf_counter()
    tokens = coder.tokens.encode(data)
    stream = np.concatenate([[EOS_ID], tokens]).astype(np.int64)
    encoder, family = constriction.stream.queue.RangeEncoder(), constriction.stream.model.Categorical(perfect=False)
    estimate = 0.0
    with deterministic(threads):
        for start, first, last in windows(len(tokens), coder.length, overlap):
            logits = window_logits(coder.model, stream, start, coder.length)
            probs = np.stack([probabilities(logits[j - 1 - start]) for j in range(first, last + 1)])
            symbols = stream[first:last + 1].astype(np.int32)
            encoder.encode(symbols, family, probs)
            estimate -= np.log2(probs[np.arange(len(symbols)), symbols].astype(np.float64)).sum()
    payload, method, coded = encoder.get_compressed().astype("<u4").tobytes(), MODEL, len(tokens)
    if store and len(payload) >= len(data):
        payload, method, coded = data, STORED, 0
    header = Header(method, coder.identity, coder.step, coder.weights, coder.tokenizer, coder.length, overlap,
                    threads, len(data), coded, hashlib.sha256(data).digest()[:8], len(payload))
    stats = {"bytes": len(data), "tokens": len(tokens), "overlap": overlap, "stored": method == STORED,
             "header_bytes": HEADER_BYTES, "payload_bytes": len(payload), "estimate_bits": float(estimate),
             "seconds": time.perf_counter() - began}
    return header.pack(payload) + payload, stats


def check_match(header: Header, coder: Coder, name: str) -> None:
    """Refuse, in one line naming both, a coder that is not the one that wrote the file."""
    wrote = f"run {header.identity} checkpoint-{header.step} (weights {header.weights.hex()})"
    if (header.identity, header.step, header.weights) != (coder.identity, coder.step, coder.weights):
        raise CodecError(f"{name} was encoded with {wrote}, not {coder.describe()} from {coder.run_dir}; "
                         f"decode with the run and checkpoint that encoded it")
    if (header.tokenizer, header.length) != (coder.tokenizer, coder.length):
        raise CodecError(f"{name} was encoded with tokenizer {header.tokenizer.hex()} and L={header.length}, not "
                         f"tokenizer {coder.tokenizer.hex()} and L={coder.length} of {coder.run_dir}")


def decode_tokens(coder: Coder, header: Header, blob: bytes, name: str) -> np.ndarray:
    """The ``header.ntokens`` token ids coded in the payload, one forward pass each."""
    import constriction

    n = header.ntokens
    stream = np.full(n + 1, FILLER, dtype=np.int64)
    stream[0] = EOS_ID
    if not n:
        return stream[1:]
    words = np.frombuffer(blob, dtype="<u4", offset=HEADER_BYTES).astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    family = constriction.stream.model.Categorical(perfect=False)
    with deterministic(header.threads):
        for start, first, last in windows(n, header.length, header.overlap):
            for j in range(first, last + 1):  # positions j.. of the stream still hold FILLER
                logits = window_logits(coder.model, stream, start, header.length)
                try:
                    stream[j] = decoder.decode(family, probabilities(logits[j - 1 - start])[None])[0]
                except Exception as exc:  # constriction reports an exhausted or invalid stream
                    raise CodecError(f"{name}: corrupt payload at token {j} ({exc})") from None
    return stream[1:]


def decompress(coder: Coder, blob: bytes, name: str = "input") -> tuple[bytes, dict]:
    """The original bytes of a .mmz file, and stats (tokens, seconds); CodecError when it cannot be trusted."""
    began = time.perf_counter()
    header = Header.unpack(blob, name)
    check_match(header, coder, name)
    if header.method == STORED:
        data = blob[HEADER_BYTES:]
    else:
        data = coder.tokens.decode(decode_tokens(coder, header, blob, name).tolist())
    if len(data) != header.nbytes or hashlib.sha256(data).digest()[:8] != header.checksum:
        raise CodecError(f"{name}: decoded {len(data)} bytes that do not match the recorded {header.nbytes} bytes "
                         f"and checksum; the file is corrupt or this machine computes different probabilities")
    return data, {"bytes": len(data), "tokens": header.ntokens, "seconds": time.perf_counter() - began}


def read_header(path: Path) -> Header:
    return Header.unpack(Path(path).read_bytes(), str(path))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it, so ``path`` is whole or absent (a full disk:
    ``DiskFullError`` naming ``path`` and its free space)."""
    write_bytes_atomic(path, data, fsync=True)


# ---- command line -----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    """Do what the command line asks; returns the summary line."""
    source = Path(args.file)
    if not source.is_file():
        raise CodecError(f"{source}: no such file")
    if args.decompress:
        out = Path(args.output) if args.output else source.with_suffix("") if source.suffix == ".mmz" else None
        if out is None:
            raise CodecError(f"{source}: does not end in .mmz; give the output with -o")
    else:
        out = Path(args.output) if args.output else source.with_name(source.name + ".mmz")
    if out.exists() and not args.force:
        raise CodecError(f"{out}: already exists; give --force to overwrite it")
    blob = source.read_bytes()
    if args.decompress:
        header = Header.unpack(blob, str(source))  # refuse a corrupt file before loading any model
        checkpoint = args.checkpoint or Path(args.run_dir) / f"checkpoint-{header.step}"
        identity, _ = run_identity(args.run_dir)
        if identity != header.identity or not Path(checkpoint).is_dir():
            raise CodecError(f"{source} was encoded with run {header.identity} checkpoint-{header.step}, not "
                             f"{args.run_dir} (run {identity}"
                             f"{'' if Path(checkpoint).is_dir() else f', which has no {Path(checkpoint).name}'}); "
                             f"decode with the run and checkpoint that encoded it")
        data, stats = decompress(load_coder(args.run_dir, checkpoint), blob, str(source))
        write_atomic(out, data)
        return f"{source} -> {out}: {stats['bytes']:,} bytes, {stats['tokens']:,} tokens in {stats['seconds']:.1f} s"
    coder = load_coder(args.run_dir, args.checkpoint)
    encoded, stats = compress(coder, blob, overlap=args.overlap, threads=args.threads)
    write_atomic(out, encoded)
    rate = 8 * len(encoded) / len(blob) if blob else float("nan")
    estimate = stats["estimate_bits"] / 8 + HEADER_BYTES
    how = "stored as is: the model would not make it smaller; " if stats["stored"] else ""
    return (f"{source} -> {out}: {len(blob):,} -> {len(encoded):,} bytes ({rate:.3f} bits/byte; {how}model estimate "
            f"{estimate:,.0f} bytes with the header), {stats['tokens']:,} tokens in {stats['seconds']:.1f} s")


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorymodels.compress", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a trained causal LM's run directory (holding run.json)")
    parser.add_argument("file", type=Path, help="the file to compress (or, with --decompress, the .mmz file)")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: FILE.mmz / FILE without .mmz)")
    parser.add_argument("-d", "--decompress", action="store_true", help="decompress FILE.mmz")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the newest complete one; "
                                                        "when decompressing, the one the file names)")
    parser.add_argument("--overlap", type=flag_number(int, minimum=0),
                        help="context positions carried into each window after the first (0..L-2; default L/4): "
                             "costs encoder time, not decoder time")
    parser.add_argument("--threads", type=flag_number(int, minimum=1), default=1,
                        help="torch CPU threads (default 1); recorded, and used again when decompressing")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    try:
        print(run(args))
    except DiskFullError:
        raise  # exit 74 (exits_on_full_disk)
    except (CodecError, CheckpointError, ConfigError, DataError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
