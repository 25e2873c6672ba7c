"""Calibration / healing / evaluation text sources: parsing, disjoint roles, packing, and bad input."""

from __future__ import annotations

import json
import logging
import re

import pytest

from prune_core import data
from prune_core.data import DataSource, load_texts, parse_source, role_of, source_hash, token_samples
from prune_core.testing import tiny_tokenizer

RECORD = re.compile(r"rec(\d{4})x")


def _records(n: int = 400) -> list[str]:
    """Records with a unique marker each, long enough that windows span several of them."""
    return [f"rec{i:04d}x " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(12)) for i in range(n)]


@pytest.fixture()
def jsonl_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "body": t}) for i, t in enumerate(_records())) + "\n")
    return path


@pytest.fixture()
def txt_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(f"Paragraph {i}. " + "Some words of prose here. " * (5 + i % 9) for i in range(600)))
    return path


# ---------------------------------------------------------------------------------------------------- parsing


def test_parse_source_kinds(tmp_path, jsonl_file, txt_file):
    assert parse_source("python-docs") == DataSource("builtin", "python-docs")
    assert parse_source("hf:allenai/c4", config="en", split="validation") == DataSource(
        "hub", "allenai/c4", "text", "en", "validation")
    assert parse_source(str(jsonl_file), column="body").column == "body"
    assert parse_source(str(txt_file)).column is None
    assert parse_source(str(tmp_path)).kind == "hub"  # a folder is a local dataset
    assert parse_source(str(tmp_path)).describe() == f"{tmp_path.resolve()} (column 'text')"
    src = parse_source("hf:allenai/c4", config="en", split="validation")
    assert src.describe() == "hf:allenai/c4 (en, validation, column 'text')"
    assert parse_source(src) is src


@pytest.mark.parametrize("spec, error, match", [
    ("", ValueError, "python-docs"),
    ("hf:", ValueError, "dataset name"),
    ("notes.pdf", ValueError, r"\.txt/\.jsonl/\.csv"),
    ("missing.txt", FileNotFoundError, "missing.txt"),
])
def test_parse_source_errors(spec, error, match):
    with pytest.raises(error, match=match):
        parse_source(spec)


def test_unknown_role():
    with pytest.raises(ValueError, match="calibration, heal, eval"):
        load_texts("python-docs", "train")


# ---------------------------------------------------------------------------------------------------- roles


@pytest.mark.parametrize("name", data.BUILTIN_SOURCES)
def test_builtin_roles_are_disjoint_and_cover_the_source(name):
    roles = {role: load_texts(name, role) for role in data.ROLES}
    sets = {role: set(units) for role, units in roles.items()}
    assert not sets["calibration"] & sets["heal"]
    assert not sets["calibration"] & sets["eval"]
    assert not sets["heal"] & sets["eval"]
    total = sum(len(u) for u in roles.values())
    assert total == len(data._builtin_units(name))
    for role, share in data.ROLE_SHARES.items():
        assert abs(len(roles[role]) / total - share) < 0.08
    assert all(len(u) < 4 * data.UNIT_CHARS for units in roles.values() for u in units)


def test_role_is_a_function_of_the_text_only():
    assert role_of("some unit") == role_of("some unit")
    assert {role_of(f"unit {i}") for i in range(200)} == set(data.ROLES)


def test_samples_come_only_from_their_role(jsonl_file):
    tok = tiny_tokenizer()
    src = parse_source(str(jsonl_file), column="body")
    expected = {role: {int(RECORD.search(u).group(1)) for u in load_texts(src, role)} for role in data.ROLES}
    for role in data.ROLES:
        for max_length, seed in ((64, 0), (200, 3)):
            windows = token_samples(tok, src, role, n_samples=5, max_length=max_length, seed=seed)
            seen = {int(m) for w in windows for m in RECORD.findall(tok.decode(w))}
            assert seen and seen <= expected[role]


def test_token_samples_packing_and_seed(txt_file):
    tok = tiny_tokenizer()
    a = token_samples(tok, str(txt_file), "heal", n_samples=6, max_length=100, seed=0)
    assert len(a) == 6 and all(len(w) == 100 for w in a)
    assert a == token_samples(tok, str(txt_file), "heal", n_samples=6, max_length=100, seed=0)
    assert a != token_samples(tok, str(txt_file), "heal", n_samples=6, max_length=100, seed=1)
    text = "".join(tok.decode(w) for w in token_samples(tok, str(txt_file), "eval", n_samples=3, max_length=300))
    assert data.SEPARATOR in text  # windows run across unit boundaries


def test_too_few_samples_names_the_available_count(jsonl_file):
    with pytest.raises(ValueError, match=r"has only \d+ samples of 512 tokens; 10000 were requested"):
        token_samples(tiny_tokenizer(), parse_source(str(jsonl_file), column="body"), "calibration",
                      n_samples=10000, max_length=512)
    with pytest.raises(ValueError, match="max_length"):
        token_samples(tiny_tokenizer(), "python-docs", "calibration", n_samples=1, max_length=1)


def test_bos_prefix_is_kept(jsonl_file):
    tok = tiny_tokenizer()
    from tokenizers import processors

    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    windows = token_samples(tok, parse_source(str(jsonl_file), column="body"), "heal", n_samples=3, max_length=50)
    assert all(w[0] == tok.bos_token_id and len(w) == 50 for w in windows)
    assert all(tok.bos_token_id not in w[1:] for w in windows)


# ---------------------------------------------------------------------------------------------------- files


def test_txt_jsonl_csv_read(tmp_path, txt_file, jsonl_file):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('title,text\na,"first, with comma\nand newline"\nb,second\nc,\n')
    assert sum(len(load_texts(str(csv_path), r)) for r in data.ROLES) == 2
    with pytest.raises(ValueError, match="no column 'text'; columns: id, body"):
        load_texts(str(jsonl_file), "heal")
    assert sum(len(load_texts(parse_source(str(jsonl_file), column="body"), r)) for r in data.ROLES) == 400
    by_role = [set(load_texts(str(txt_file), r)) for r in data.ROLES]
    assert all(not a & b for i, a in enumerate(by_role) for b in by_role[i + 1:])
    units = [u for r in data.ROLES for u in load_texts(str(txt_file), r)]
    assert len(units) > 50 and all(u.startswith("Paragraph") and len(u) >= data.UNIT_CHARS for u in units[:-1])


@pytest.mark.parametrize("name, content, match", [
    ("e.txt", b"  \n\n ", "empty"),
    ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "not UTF-8"),
    ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("bad.jsonl", b'{"text": "ok"}\n{not json}\n', "line 2 is not valid JSON"),
    ("list.jsonl", b'["a"]\n', "not a JSON object"),
    ("col.jsonl", b'{"body": "x", "id": 1}\n', "no column 'text'; columns: body, id"),
    ("col.csv", b"body,id\nx,1\n", "no column 'text'; columns: body, id"),
    ("empty.csv", b"text\n\n", "no text"),
])
def test_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_texts(str(path), "heal")


def test_the_read_cap_truncates_with_a_warning(tmp_path, monkeypatch, caplog):
    path = tmp_path / "big.txt"
    path.write_text("\n\n".join(f"paragraph number {i} " * 20 for i in range(2000)))
    full = sum(len(load_texts(str(path), r)) for r in data.ROLES)
    monkeypatch.setattr(data, "MAX_READ_CHARS", 100_000)
    data._file_units_cached.cache_clear()
    with caplog.at_level(logging.WARNING):
        capped = sum(len(load_texts(str(path), r)) for r in data.ROLES)
    data._file_units_cached.cache_clear()
    assert 0 < capped < full
    assert "only its first" in caplog.text


def test_source_hash(tmp_path, txt_file):
    assert source_hash("python-docs") == source_hash(parse_source("python-docs"))
    assert source_hash("python-docs") != source_hash("shakespeare")
    before = source_hash(str(txt_file))
    txt_file.write_text(txt_file.read_text() + "\n\nmore text")
    assert source_hash(str(txt_file)) != before
    assert source_hash("hf:a/b") != source_hash(parse_source("hf:a/b", split="validation"))


# ---------------------------------------------------------------------------------------------------- datasets


@pytest.fixture()
def saved_dataset(tmp_path):
    import datasets

    rows = {"text": _records(300), "n": list(range(300))}
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                               "validation": datasets.Dataset.from_dict({"text": ["only one"], "n": [0]})})
    ds.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_saved_dataset_folder(saved_dataset):
    src = parse_source(str(saved_dataset))
    units = {role: load_texts(src, role) for role in data.ROLES}
    assert sum(map(len, units.values())) == 300
    assert not set(units["calibration"]) & set(units["heal"])
    assert len(token_samples(tiny_tokenizer(), src, "eval", n_samples=4, max_length=128)) == 4
    assert load_texts(parse_source(str(saved_dataset), split="validation"), "calibration") + load_texts(
        parse_source(str(saved_dataset), split="validation"), "heal") + load_texts(
        parse_source(str(saved_dataset), split="validation"), "eval") == ["only one"]
    with pytest.raises(ValueError, match="no column 'body'; columns: text, n"):
        load_texts(parse_source(str(saved_dataset), column="body"), "heal")
    with pytest.raises(ValueError, match="splits train, validation"):
        load_texts(parse_source(str(saved_dataset), split="test"), "heal")


def test_streamed_dataset_through_load_dataset(tmp_path):
    """The hub code path (datasets.load_dataset with streaming) on a local folder of JSON lines."""
    folder = tmp_path / "local_ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"content": t}) for t in _records(200)))
    src = parse_source(str(folder), column="content")
    assert sum(len(load_texts(src, role)) for role in data.ROLES) == 200
    windows = token_samples(tiny_tokenizer(), src, "heal", n_samples=3, max_length=64)
    assert len(windows) == 3
    with pytest.raises(ValueError, match="no column 'text'"):
        load_texts(parse_source(str(folder)), "heal")


def test_allow_fewer_returns_what_a_small_split_has(tmp_path):
    from prune_core.data import token_samples
    from prune_core.testing import tiny_tokenizer

    path = tmp_path / "small.txt"
    path.write_text("\n\n".join(f"Paragraph {i} about layers and pruning, with a few more words." for i in range(40)))
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="has only"):
        token_samples(tok, str(path), "heal", n_samples=10_000, max_length=64)
    few = token_samples(tok, str(path), "heal", n_samples=10_000, max_length=64, allow_fewer=True)
    assert 0 < len(few) < 10_000 and all(len(s) == 64 for s in few)
