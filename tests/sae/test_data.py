"""Text sources, chat rendering, packing (BOS per row, separators) and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sae import data as sdata
from sae.config import DataConfig
from sae.data import DataError, iter_documents, pack_tokens, token_rows

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Sparse autoencoders find features in activations.",
    "A third document, a little longer than the others, about nothing in particular at all.",
]
CHAT = {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]}


@pytest.fixture(scope="module")
def tok():
    # the tokenizer alone: no need to load the model for text tests
    from transformers import AutoTokenizer

    from sae.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --------------------------------------------------------------------------- packing


def test_pack_tokens_bos_first_and_separators_between_documents() -> None:
    docs = [[10, 11, 12], [20, 21], [], [30, 31, 32, 33, 34, 35, 36]]
    rows = list(pack_tokens(docs, context_size=4, bos_id=1, sep_id=0))
    assert all(r.shape == (4,) and r.dtype == torch.long for r in rows)
    assert all(int(r[0]) == 1 for r in rows)
    stream = [t for r in rows for t in r[1:].tolist()]
    # 3 + 1 + 2 + 1 + 7 = 14 tokens -> 4 full rows of 3; the last 2 tokens are dropped
    expected = [10, 11, 12, 0, 20, 21, 0, 30, 31, 32, 33, 34, 35, 36][:12]
    assert stream == expected
    assert len(rows) == 4


def test_pack_tokens_rejects_tiny_context() -> None:
    with pytest.raises(DataError, match="context_size"):
        list(pack_tokens([[1, 2]], context_size=1, bos_id=1, sep_id=0))


def test_token_rows_reconstruct_the_documents(tmp_path: Path, tok) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS * 4])
    cfg = DataConfig(source=str(src), context_size=16)
    rows = list(token_rows(cfg, tok))
    bos, sep = sdata.special_ids(tok, cfg)
    assert (bos, sep) == (tok.bos_token_id, tok.convert_tokens_to_ids("<|endoftext|>"))
    assert all(int(r[0]) == bos and r.shape == (16,) for r in rows)
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in DOCS * 4]
    joined = ids[0]
    for more in ids[1:]:
        joined = joined + [sep] + more
    stream = [t for r in rows for t in r[1:].tolist()]
    assert stream == joined[: len(stream)]
    assert len(joined) - len(stream) < 15  # only the partial last row is dropped


def test_rank_split_partitions_rows(tmp_path: Path, tok) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS * 6])
    cfg = DataConfig(source=str(src), context_size=8)
    everything = [r.tolist() for r in token_rows(cfg, tok)]
    r0 = [r.tolist() for r in token_rows(cfg, tok, rank=0, world_size=2)]
    r1 = [r.tolist() for r in token_rows(cfg, tok, rank=1, world_size=2)]
    assert r0 == everything[0::2] and r1 == everything[1::2]


# --------------------------------------------------------------------------- sources


def test_txt_jsonl_parquet_and_folder(tmp_path: Path, tok) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(DOCS[0])
    write_jsonl(folder / "b.jsonl", [{"body": DOCS[1]}])
    pq.write_table(pa.table({"body": [DOCS[2]]}), folder / "sub" / "c.parquet")
    (folder / "notes.csv").write_text("ignored,file\n")
    cfg = DataConfig(source=str(folder), text_field="body")
    assert list(iter_documents(cfg, tok)) == DOCS  # sorted, recursive, .csv ignored
    assert list(iter_documents(DataConfig(source=str(folder / "a.txt")))) == [DOCS[0]]


def test_chat_messages_use_the_chat_template(tmp_path: Path, tok) -> None:
    src = write_jsonl(tmp_path / "chat.jsonl", [CHAT, {"text": DOCS[0]}])
    docs = list(iter_documents(DataConfig(source=str(src)), tok))
    assert docs[0] == tok.apply_chat_template(CHAT["messages"], tokenize=False)
    assert "<|im_start|>user" in docs[0] and docs[1] == DOCS[0]
    # chat markers become their special ids inside packed rows
    rows = torch.stack(list(token_rows(DataConfig(source=str(src), context_size=8), tok)))
    assert (rows[:, 1:] == tok.convert_tokens_to_ids("<|im_start|>")).any()


def test_builtin_reader_on_a_zst_file(tmp_path: Path, monkeypatch, tok) -> None:
    import zstandard

    path = tmp_path / "builtin.jsonl.zst"
    payload = "".join(json.dumps(r) + "\n" for r in [{"text": DOCS[0], "topic": "x"}, CHAT])
    path.write_bytes(zstandard.ZstdCompressor().compress(payload.encode()))
    monkeypatch.setattr(sdata, "BUILTIN_CORPUS", path)
    docs = list(iter_documents(DataConfig(source="builtin"), tok))
    assert docs[0] == DOCS[0] and docs[1].startswith("<|im_start|>")
    # the same file works as an explicit path too
    assert list(iter_documents(DataConfig(source=str(path)), tok)) == docs


def test_builtin_missing_names_the_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sdata, "BUILTIN_CORPUS", tmp_path / "nope.jsonl.zst")
    with pytest.raises(DataError, match="nope.jsonl.zst"):
        list(iter_documents(DataConfig(source="builtin")))


def test_hf_datasets_path_with_local_data(tmp_path: Path, tok) -> None:
    import datasets

    src = write_jsonl(tmp_path / "d.jsonl", [{"content": d} for d in DOCS])
    cfg = DataConfig(source="json", data_files=str(src), text_field="content", streaming=True)
    assert list(iter_documents(cfg, tok)) == DOCS
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(saved))
    assert list(iter_documents(DataConfig(source=str(saved)), tok)) == DOCS
    bad = DataConfig(source="json", data_files=str(src), text_field="text")
    with pytest.raises(DataError, match="content"):
        list(iter_documents(bad, tok))


def test_shuffle_is_a_seeded_permutation(tmp_path: Path) -> None:
    docs = [f"document number {i}" for i in range(50)]
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in docs])
    a = list(iter_documents(DataConfig(source=str(src), shuffle_seed=1)))
    b = list(iter_documents(DataConfig(source=str(src), shuffle_seed=1)))
    c = list(iter_documents(DataConfig(source=str(src), shuffle_seed=2)))
    assert a == b and sorted(a) == sorted(docs) and a != docs and a != c


# --------------------------------------------------------------------------- bad input


def test_missing_field_lists_fields_present(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "id": 1}])
    with pytest.raises(DataError, match=r"fields present: \['body', 'id'\]"):
        list(iter_documents(DataConfig(source=str(src))))
    pq.write_table(pa.table({"content": ["x"], "score": [1]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"columns present: \['content', 'score'\]"):
        list(iter_documents(DataConfig(source=str(tmp_path / "d.parquet"))))


@pytest.mark.parametrize("kind", ["empty_file", "blank_texts", "empty_folder", "too_short"])
def test_empty_corpus_is_an_error(tmp_path: Path, tok, kind: str) -> None:
    if kind == "empty_file":
        src = tmp_path / "e.jsonl"
        src.write_text("")
    elif kind == "blank_texts":
        src = write_jsonl(tmp_path / "e.jsonl", [{"text": ""}, {"text": None, "messages": None}])
    elif kind == "empty_folder":
        src = tmp_path / "folder"
        src.mkdir()
    else:
        src = write_jsonl(tmp_path / "e.jsonl", [{"text": "hi"}])
    with pytest.raises(DataError, match="no text|no .txt|fewer than"):
        list(token_rows(DataConfig(source=str(src), context_size=64), tok))


def test_bad_json_and_missing_path(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"d.jsonl:2"):
        list(iter_documents(DataConfig(source=str(src))))
    with pytest.raises(DataError, match="does not exist"):
        list(iter_documents(DataConfig(source=str(tmp_path / "missing.jsonl"))))
