"""Text in, fixed-length token rows out.

Sources (`DataConfig.source`):

* ``"builtin"`` — the corpus shipped with saekit (`BUILTIN_CORPUS`, zstd JSONL), offline.
* a local file or folder: ``.txt`` (one document per file), ``.jsonl`` / ``.json`` (one record per
  line), ``.parquet``; any of the text formats may also be ``.zst`` or ``.gz`` compressed. Folders
  are read recursively in sorted order. A folder written by ``datasets.Dataset.save_to_disk`` is
  loaded with ``datasets.load_from_disk``.
* anything else is a Hugging Face ``datasets`` name, streamed (``data.streaming``); generic
  builders work with local files too: ``source="json", data_files="my/*.jsonl"``.

A record's text is ``data.text_field``; chat records (``data.messages_field``: a list of
``{"role", "content"}``) are rendered with the model's chat template.

Packing (`pack_tokens`): documents are tokenized without special tokens and concatenated with a
separator token between them; the stream is cut into rows of ``context_size`` tokens whose first
token is always BOS, so row ``i`` is ``[BOS] + stream[i*(T-1) : (i+1)*(T-1)]``. A document longer
than a row continues in the next one; the partial last row is dropped. Rows are deterministic
given the config, which is what makes caching resumable and splittable across ranks.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from sae.config import DataConfig

log = logging.getLogger(__name__)

BUILTIN_CORPUS: Path = Path(__file__).resolve().parent / "corpus" / "builtin.jsonl.zst"

_TEXT_SUFFIXES = (".txt",)
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_PARQUET_SUFFIXES = (".parquet",)
_COMPRESSION = (".zst", ".gz")
_TOKENIZE_BATCH = 64  # documents per tokenizer call: batched fast-tokenizer calls are ~3x faster
_SHUFFLE_BUFFER = 10_000  # documents held when shuffling a stream


class DataError(ValueError):
    """Text that cannot be read or used (missing file or field, empty corpus, bad record)."""


# --------------------------------------------------------------------------- files


def _suffixes(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None): `a.jsonl.zst` -> (".jsonl", ".zst")."""
    sfx = [s.lower() for s in path.suffixes]
    comp = sfx[-1] if sfx and sfx[-1] in _COMPRESSION else None
    fmt_list = sfx[:-1] if comp else sfx
    return (fmt_list[-1] if fmt_list else ""), comp


def _is_supported(path: Path) -> bool:
    fmt, comp = _suffixes(path)
    if fmt in _PARQUET_SUFFIXES:
        return comp is None
    return fmt in _TEXT_SUFFIXES + _JSONL_SUFFIXES


def _open_text(path: Path) -> io.TextIOBase:
    _, comp = _suffixes(path)
    if comp == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if comp == ".zst":
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - owned by the returned wrapper
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115


def _record_text(rec: Any, cfg: DataConfig, tokenizer: Any, where: str) -> str | None:
    """The document string of one record (None: skip it, e.g. an empty text)."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object per record, got {type(rec).__name__}")
    if cfg.text_field not in rec and cfg.messages_field not in rec:
        raise DataError(
            f"{where}: no field {cfg.text_field!r} (nor chat field {cfg.messages_field!r}); fields "
            f"present: {sorted(rec)}. Set data.text_field=<one of them> (--set data.text_field=...)"
        )
    text = rec.get(cfg.text_field)
    if text is not None:
        if not isinstance(text, str):
            raise DataError(
                f"{where}: field {cfg.text_field!r} holds {type(text).__name__}, not text; "
                f"set data.text_field to a string field (fields present: {sorted(rec)})"
            )
        return text or None
    messages = rec.get(cfg.messages_field)
    if messages is not None:
        return render_chat(messages, tokenizer, where) or None
    return None  # a null record: skipped


def render_chat(messages: Any, tokenizer: Any = None, where: str = "record") -> str:
    """A chat as the model sees it: its chat template, or `role: content` lines without one."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise DataError(f"{where}: chat messages must be a list of {{'role', 'content'}} objects")
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False))
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _read_jsonl(path: Path, cfg: DataConfig, tokenizer: Any) -> Iterator[str]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e})") from None
            text = _record_text(rec, cfg, tokenizer, f"{path}:{lineno}")
            if text:
                yield text


def _read_parquet(path: Path, cfg: DataConfig, tokenizer: Any) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    columns = [c for c in (cfg.text_field, cfg.messages_field) if c in names]
    if not columns:
        raise DataError(
            f"{path}: no column {cfg.text_field!r} (nor chat column {cfg.messages_field!r}); "
            f"columns present: {sorted(names)}. Set data.text_field=<one of them>"
        )
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        for rec in batch.to_pylist():
            row += 1
            text = _record_text(rec, cfg, tokenizer, f"{path} row {row}")
            if text:
                yield text


def _read_file(path: Path, cfg: DataConfig, tokenizer: Any) -> Iterator[str]:
    fmt, _ = _suffixes(path)
    if fmt in _TEXT_SUFFIXES:
        with _open_text(path) as fh:
            text = fh.read()
        if text.strip():
            yield text
    elif fmt in _JSONL_SUFFIXES:
        yield from _read_jsonl(path, cfg, tokenizer)
    elif fmt in _PARQUET_SUFFIXES:
        yield from _read_parquet(path, cfg, tokenizer)
    else:
        raise DataError(
            f"{path}: unsupported file type; use .txt, .jsonl/.json or .parquet "
            "(text formats may be .zst/.gz compressed)"
        )


def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and _is_supported(p))
    if not files:
        raise DataError(
            f"folder {root} holds no .txt, .jsonl, .json or .parquet files (searched recursively); "
            "point data.source at a folder or file with text"
        )
    return files


def _is_saved_dataset(root: Path) -> bool:
    return root.is_dir() and any(
        (root / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


# --------------------------------------------------------------------------- HF datasets


def _hf_records(cfg: DataConfig, saved_dir: Path | None = None) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        if saved_dir is not None:
            ds: Any = datasets.load_from_disk(str(saved_dir))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise DataError(
                        f"{saved_dir}: no split {cfg.split!r}; splits present: {sorted(ds)}"
                    )
                ds = ds[cfg.split]
        else:
            ds = datasets.load_dataset(
                cfg.source,
                name=cfg.dataset_config,
                split=cfg.split,
                streaming=cfg.streaming,
                data_files=cfg.data_files,
            )
    except DataError:
        raise
    except Exception as e:  # hub unreachable, unknown name, bad config: all reach the user the same way
        raise DataError(
            f"could not load dataset {cfg.source!r} (config={cfg.dataset_config!r}, "
            f"split={cfg.split!r}): {type(e).__name__}: {e}. Offline, use data.source=builtin or a "
            "local .txt/.jsonl/.parquet file or folder"
        ) from e
    columns = getattr(ds, "column_names", None)
    if columns and cfg.text_field not in columns and cfg.messages_field not in columns:
        raise DataError(
            f"dataset {cfg.source!r} has no field {cfg.text_field!r} (nor chat field "
            f"{cfg.messages_field!r}); fields present: {sorted(columns)}. Set data.text_field"
        )
    if cfg.shuffle_seed is not None:
        if isinstance(ds, datasets.IterableDataset):
            ds = ds.shuffle(seed=cfg.shuffle_seed, buffer_size=_SHUFFLE_BUFFER)
        else:
            ds = ds.shuffle(seed=cfg.shuffle_seed)
    yield from ds


# --------------------------------------------------------------------------- documents


def _shuffled(items: Iterable[str], seed: int, buffer: int = _SHUFFLE_BUFFER) -> Iterator[str]:
    """A bounded-memory shuffle of a stream: reservoir of `buffer` items, deterministic in `seed`."""
    rng = random.Random(seed)
    pool: list[str] = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        i = rng.randrange(buffer)
        yield pool[i]
        pool[i] = item
    rng.shuffle(pool)
    yield from pool


def _maybe_shuffled(docs: Iterator[str], cfg: DataConfig) -> Iterator[str]:
    # HF sources shuffle inside `datasets`; files and the builtin corpus shuffle here.
    return docs if cfg.shuffle_seed is None else _shuffled(docs, cfg.shuffle_seed)


def _raw_documents(cfg: DataConfig, tokenizer: Any) -> Iterator[str]:
    source = cfg.source
    if source == "builtin":
        path = BUILTIN_CORPUS
        if not path.exists():
            raise DataError(
                f"the builtin corpus is missing ({path}); reinstall saekit, or set data.source to "
                "a local .txt/.jsonl/.parquet file or folder"
            )
        yield from _maybe_shuffled(_read_jsonl(path, cfg, tokenizer), cfg)
        return
    local = Path(source).expanduser()
    if local.exists():
        if _is_saved_dataset(local):
            records = _hf_records(cfg, saved_dir=local)
            for i, rec in enumerate(records):
                text = _record_text(rec, cfg, tokenizer, f"{local} record {i}")
                if text:
                    yield text
            return
        files = _local_files(local)
        docs = (doc for path in files for doc in _read_file(path, cfg, tokenizer))
        yield from _maybe_shuffled(docs, cfg)
        return
    if _is_supported(local) or source.startswith((".", "/", "~")):
        raise DataError(f"data source {source!r} does not exist; check the path")
    for i, rec in enumerate(_hf_records(cfg)):
        text = _record_text(rec, cfg, tokenizer, f"dataset {source!r} record {i}")
        if text:
            yield text


def iter_documents(cfg: DataConfig, tokenizer: Any = None) -> Iterator[str]:
    """Document strings from `cfg.source` (chat records rendered with the tokenizer's template).

    Raises `DataError` for a missing source or field, and when the source holds no text at all.
    """
    n = 0
    for doc in _raw_documents(cfg, tokenizer):
        n += 1
        yield doc
    if n == 0:
        raise DataError(
            f"data source {cfg.source!r} holds no text (empty files or records); add documents or "
            "point data.source elsewhere"
        )


# --------------------------------------------------------------------------- tokens


def special_ids(tokenizer: Any, cfg: DataConfig | None = None) -> tuple[int, int]:
    """(bos_id, separator_id) used when packing with this tokenizer."""
    vocab = tokenizer.get_vocab()
    sep_text = cfg.separator if cfg is not None else None
    if sep_text is not None:
        if sep_text not in vocab:
            raise DataError(f"separator {sep_text!r} is not a token of this tokenizer")
        sep = vocab[sep_text]
    elif "<|endoftext|>" in vocab:  # the document boundary most pretraining corpora used
        sep = vocab["<|endoftext|>"]
    elif tokenizer.eos_token_id is not None:
        sep = tokenizer.eos_token_id
    elif tokenizer.bos_token_id is not None:
        sep = tokenizer.bos_token_id
    else:
        raise DataError("the tokenizer has no BOS/EOS token; set data.separator to a token")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else sep
    return int(bos), int(sep)


def pack_tokens(
    docs: Iterable[Sequence[int]], context_size: int, bos_id: int, sep_id: int
) -> Iterator[torch.Tensor]:
    """Rows of `context_size` token ids: BOS first, documents joined by `sep_id` (see module doc)."""
    if context_size < 2:
        raise DataError(f"context_size must be at least 2 (BOS + one token), got {context_size}")
    body = context_size - 1
    buf: list[int] = []
    start = 0  # read offset into buf: avoids quadratic re-slicing of long documents
    first = True
    for toks in docs:
        if len(toks) == 0:
            continue
        if not first:
            buf.append(sep_id)
        first = False
        buf.extend(toks)
        while len(buf) - start >= body:
            row = torch.empty(context_size, dtype=torch.long)
            row[0] = bos_id
            row[1:] = torch.tensor(buf[start : start + body], dtype=torch.long)
            start += body
            yield row
        if start > 65_536:
            del buf[:start]
            start = 0


def _token_lists(cfg: DataConfig, tokenizer: Any) -> Iterator[list[int]]:
    batch: list[str] = []
    for doc in iter_documents(cfg, tokenizer):
        batch.append(doc)
        if len(batch) == _TOKENIZE_BATCH:
            yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
            batch = []
    if batch:
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]


def token_rows(
    cfg: DataConfig, tokenizer: Any, *, rank: int = 0, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """Packed rows (LongTensor [context_size]); with `world_size` > 1 only rows rank::world_size."""
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside 0..{world_size - 1}")
    bos, sep = special_ids(tokenizer, cfg)
    rows = pack_tokens(_token_lists(cfg, tokenizer), cfg.context_size, bos, sep)
    n = 0
    for i, row in enumerate(rows):
        n += 1
        if i % world_size == rank:
            yield row
    if n == 0:
        raise DataError(
            f"data source {cfg.source!r} has fewer than {cfg.context_size} tokens, not enough for "
            "one row; add text or lower data.context_size"
        )
