"""Corpora: where the text comes from, as a stream of documents split into ``train`` and ``test``.

A corpus is named by a spec string (the ``data.corpus`` of an experiment, ``--corpus`` of the commands):

- ``stdlib``: the source files (``*.py``) of the running Python's standard library, one document per file, in
  sorted path order. Real text on every machine, with no download. Files that are not valid UTF-8 (a handful of
  deliberately mis-encoded test modules) are left out.
- ``stdlib-small``: a deterministic ~1.5 MB subset of ``stdlib`` for the debug experiment and tests: the files of at
  most 32 KB, ordered by the stable hash of their path, taken until 1.5 MB of text; then read in path order.
- a local path, directory or glob of ``.txt`` (one document per file), ``.jsonl`` (one document per line, field
  ``text``, else ``content``) or ``.parquet`` (column ``text``, else ``content``) files. A directory means every
  such file under it.
- ``hf:NAME[:CONFIG]``: a Hugging Face dataset streamed through ``datasets`` (e.g.
  ``hf:HuggingFaceFW/fineweb-edu:sample-10BT``, ``hf:HuggingFaceTB/finemath:finemath-4plus``,
  ``hf:roneneldan/TinyStories``). NAME may also be a local directory: one written by ``save_to_disk`` or one of
  data files that ``datasets.load_dataset`` reads.

Held-out split: for ``stdlib`` and local files a document is in ``test`` when a stable hash (BLAKE2b) of its key
falls in the lowest ``TEST_PERCENT`` percent; the key is the file's path relative to the corpus root, plus the line
or row number for ``.jsonl``/``.parquet``. Moving the corpus directory does not change the split. Hub datasets use
their own ``test`` (else ``validation``) split; with none, the first ``HUB_TEST_DOCS`` documents are ``test`` and the
rest ``train``, as the seed did with FineWeb-edu.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from memorymodels.data.errors import DataError

SPLITS = ("train", "test")
TEST_PERCENT = 5
HUB_TEST_DOCS = 50_000
TEXT_FIELDS = ("text", "content")
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
SMALL_MAX_FILE_BYTES = 32 * 1024
SMALL_TOTAL_BYTES = 1_500_000
SPEC_HELP = "use 'stdlib', 'stdlib-small', a .txt/.jsonl/.parquet path, directory or glob, or 'hf:NAME[:CONFIG]'"


def stable_hash(key: str) -> int:
    """A hash of ``key`` that is the same on every machine and Python run (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def split_of(key: str) -> str:
    """``"test"`` for the held-out ``TEST_PERCENT`` percent of keys, else ``"train"``."""
    return "test" if stable_hash(key) % 100 < TEST_PERCENT else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: bytes at offset {exc.start} are not valid UTF-8 ({data[exc.start:exc.start + 8]!r}); "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or leave it out of the corpus"
        ) from None


class Corpus:
    """A named source of documents. ``documents(split)`` streams the texts of one split in a fixed order."""

    spec: str

    def documents(self, split: str) -> Iterator[str]:
        raise NotImplementedError

    def identity(self) -> str:
        """What decides the corpus's contents, for cache keys: the spec, plus what a spec alone does not pin down."""
        return self.spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


# ---------------------------------------------------------------------------------------------- stdlib


def stdlib_root() -> Path:
    """The directory of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[tuple[str, Path]]:
    """``(relative path, path)`` of every stdlib ``*.py`` file outside site-packages, in sorted order."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


@dataclass
class StdlibCorpus(Corpus):
    """The standard library's source files, one document per file (``small``: the ~1.5 MB subset)."""

    small: bool = False
    root: Path | None = None

    def __post_init__(self):
        self.spec = "stdlib-small" if self.small else "stdlib"
        self.root = Path(self.root) if self.root else stdlib_root()

    def identity(self) -> str:
        return f"{self.spec} {self.root} {platform.python_version()}"

    def files(self) -> list[tuple[str, Path]]:
        files = _stdlib_files(self.root)
        if not self.small:
            return files
        chosen, total = [], 0
        for key, path in sorted(files, key=lambda item: stable_hash(item[0])):
            size = path.stat().st_size
            if size > SMALL_MAX_FILE_BYTES:
                continue
            chosen.append((key, path))
            total += size
            if total >= SMALL_TOTAL_BYTES:
                break
        return sorted(chosen)

    def documents(self, split: str) -> Iterator[str]:
        _check_split(split)
        for key, path in self.files():
            if split_of(key) != split:
                continue
            try:
                yield path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue  # the few deliberately mis-encoded test modules


# ----------------------------------------------------------------------------------------- local files


def _resolve_files(spec: str) -> tuple[Path, list[Path]]:
    """The files a local spec names and the root their keys are relative to."""
    if any(ch in spec for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise DataError(f"corpus '{spec}': the glob matches no files; check the pattern ({SPEC_HELP})")
        root = Path(os.path.commonpath([str(p.parent) for p in matches]))
    else:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_SUFFIXES)
            if not matches:
                raise DataError(f"corpus '{spec}': the directory holds no {'/'.join(FILE_SUFFIXES)} files")
            root = path
        elif path.is_file():
            matches, root = [path], path.parent
        else:
            raise DataError(f"corpus '{spec}': no such file or directory ({SPEC_HELP})")
    unsupported = [str(p) for p in matches if p.suffix not in FILE_SUFFIXES]
    if unsupported:
        raise DataError(
            f"corpus '{spec}': unsupported file type: {', '.join(unsupported[:3])}; "
            f"local corpora are {', '.join(FILE_SUFFIXES)} files"
        )
    return root, matches


def _text_field(record: dict, where: str) -> str:
    for field in TEXT_FIELDS:
        if field in record:
            value = record[field]
            if not isinstance(value, str):
                raise DataError(f"{where}: field '{field}' is {type(value).__name__}, not a string")
            return value
    raise DataError(
        f"{where}: no text field; expected one of {', '.join(TEXT_FIELDS)}, "
        f"found {', '.join(map(str, record)) or 'none'}"
    )


def _jsonl_documents(path: Path, key: str) -> Iterator[tuple[str, str]]:
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            where = f"{path}:{lineno}"
            line = _decode(raw, where).strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object with a 'text' field, got {type(record).__name__}")
            yield f"{key}:{lineno}", _text_field(record, where)


def _parquet_documents(path: Path, key: str) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading .parquet needs pyarrow: pip install 'memorymodels[hub]'") from None
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    names = handle.schema_arrow.names
    column = next((f for f in TEXT_FIELDS if f in names), None)
    if column is None:
        raise DataError(f"{path}: no text column; expected one of {', '.join(TEXT_FIELDS)}, found {', '.join(names)}")
    row = 0
    for batch in handle.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield f"{key}:{row}", text
            row += 1


@dataclass
class FileCorpus(Corpus):
    """Local ``.txt`` / ``.jsonl`` / ``.parquet`` files named by a path, directory or glob."""

    spec: str

    def __post_init__(self):
        self.root, self.files = _resolve_files(self.spec)

    def identity(self) -> str:
        """Each file's path under the corpus root, size and modification time (an edited file is a new corpus). Not
        where the root is: the same files named from another folder, or copied with their times (a job's code
        snapshot holds a copy of a corpus that git tracks), are the same corpus."""
        stats = [(str(p.relative_to(self.root)), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files]
        digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
        return f"files {digest}"

    def _keyed_documents(self) -> Iterator[tuple[str, str]]:
        for path in self.files:
            if not path.exists():
                raise DataError(f"corpus '{self.spec}': {path} disappeared while reading")
            key = path.relative_to(self.root).as_posix()
            if path.suffix == ".txt":
                yield key, _decode(path.read_bytes(), str(path))
            elif path.suffix == ".jsonl":
                yield from _jsonl_documents(path, key)
            else:
                yield from _parquet_documents(path, key)

    def documents(self, split: str) -> Iterator[str]:
        _check_split(split)
        for key, text in self._keyed_documents():
            if split_of(key) == split:
                yield text


# ------------------------------------------------------------------------------------------------- hub


def _hub_error(spec: str, exc: BaseException) -> DataError:
    return DataError(
        f"corpus '{spec}': could not read the dataset through the Hugging Face hub ({type(exc).__name__}: {exc}). "
        "Check the name and config, the network, and HF_TOKEN for gated datasets; without network, save the dataset "
        "to a local directory (save_to_disk, or .parquet/.jsonl files) and use that instead"
    )


@dataclass
class HubCorpus(Corpus):
    """A Hugging Face dataset streamed through ``datasets`` (or a local dataset directory)."""

    name: str
    config: str | None = None

    def __post_init__(self):
        self.spec = f"hf:{self.name}" + (f":{self.config}" if self.config else "")

    def _splits(self):
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"corpus '{self.spec}': needs the datasets package: pip install 'memorymodels[hub]'"
            ) from None
        local = Path(self.name)
        try:
            if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
                loaded = datasets.load_from_disk(str(local))
                if isinstance(loaded, datasets.Dataset):
                    loaded = datasets.DatasetDict({"train": loaded})
                return {name: split.to_iterable_dataset() for name, split in loaded.items()}
            return datasets.load_dataset(self.name, self.config, streaming=True)
        except DataError:
            raise
        except Exception as exc:  # network, authentication, unknown name: datasets raises many kinds
            raise _hub_error(self.spec, exc) from None

    def documents(self, split: str) -> Iterator[str]:
        _check_split(split)
        splits = self._splits()
        held_out = next((name for name in ("test", "validation") if name in splits), None)
        if "train" not in splits:
            raise DataError(f"corpus '{self.spec}': the dataset has no 'train' split (it has {', '.join(splits)})")
        if held_out:
            stream = splits[held_out if split == "test" else "train"]
        elif split == "test":
            stream = splits["train"].take(HUB_TEST_DOCS)
        else:
            stream = splits["train"].skip(HUB_TEST_DOCS)
        try:
            for index, record in enumerate(stream):
                yield _text_field(record, f"{self.spec} ({split} document {index})")
        except DataError:
            raise
        except Exception as exc:
            raise _hub_error(self.spec, exc) from None


# ------------------------------------------------------------------------------------------------ open


def corpus_problem(spec: str) -> str | None:
    """Why a local corpus cannot be read, found without reading it (what a preflight asks before a job is queued):
    its spec names no file, or none of its files can be opened and holds anything. None for a corpus that can be
    read, and for ``stdlib`` and ``hf:`` corpora (the job reads them)."""
    try:
        corpus = open_corpus(spec)
    except DataError as exc:
        return str(exc)
    if not isinstance(corpus, FileCorpus):
        return None
    why = {}
    for path in corpus.files:
        try:
            with open(path, "rb") as handle:
                if handle.read(1):
                    return None
            why[path] = "empty"
        except OSError as exc:
            why[path] = exc.strerror or str(exc)
    listed = "; ".join(f"{path.name}: {reason}" for path, reason in list(why.items())[:3])
    return (f"corpus '{spec}': none of its {len(why)} file(s) can be read and holds anything ({listed}"
            f"{'; ...' if len(why) > 3 else ''})")


def open_corpus(spec: str | Corpus) -> Corpus:
    """The corpus a spec string names (see the module docstring); a bad spec is a DataError saying what to use."""
    if isinstance(spec, Corpus):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"corpus {spec!r}: empty corpus name; {SPEC_HELP}")
    if spec in ("stdlib", "stdlib-small"):
        return StdlibCorpus(small=spec == "stdlib-small")
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        if not name:
            raise DataError(f"corpus '{spec}': expected hf:NAME[:CONFIG], e.g. hf:roneneldan/TinyStories")
        return HubCorpus(name=name, config=config or None)
    return FileCorpus(spec=spec)
