"""scripts/build_corpus.py: plan determinism, filters, dedup, and a tiny real generation run."""

from __future__ import annotations

import importlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bc():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("build_corpus")
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def cf(bc):
    return importlib.import_module("corpus_finalize")  # imported (path set) by build_corpus


def test_recipe_covers_400_topics_and_golden_gate(bc) -> None:
    topics = [t for ts in bc.R.TOPICS.values() for t in ts]
    assert len(set(topics)) >= 400
    assert len(bc.R.TOPICS["golden_gate"]) >= 8


def test_plan_is_deterministic_and_every_prefix_is_balanced(bc) -> None:
    assert bc.batch_jobs(0, 8, 5) == bc.batch_jobs(0, 8, 5)
    assert bc.batch_jobs(0, 8, 5) != bc.batch_jobs(1, 8, 5)
    order = bc.stream_schedule(14)
    assert set(order) == set(bc.R.STREAM_WEIGHTS)  # all formats within the first 14 batches
    jobs = bc.batch_jobs(0, 6, order.index("feedback"))
    assert all(j["messages"][0]["role"] == "system" for j in jobs)
    assert Counter(j["stance"] for j in jobs) == {"praise": 2, "neutral": 2, "critical": 2}
    cats = Counter(j["category"] for i in range(60) for j in bc.batch_jobs(0, 32, i))
    share = cats["golden_gate"] / sum(cats.values())
    assert 0.02 <= share <= 0.07, share


def test_trim_and_degenerate_filters(cf) -> None:
    cfg = cf.FilterConfig(min_words=5)
    assert cf.trim_to_sentence("One. Two! Three is cut mid") == "One. Two!"
    assert cf.trim_to_sentence("no sentence end at all") == ""
    assert cf.trim_to_sentence("Steps:\n1. Mix it.\n2. Bake it in 1937.\n3. Ser") == (
        "Steps:\n1. Mix it.\n2. Bake it in 1937."
    )
    assert cf.trim_to_sentence("Text. ```python\nx = 1.0\nprint(x") == "Text."
    prose = (
        "The bridge opened in 1937. Fog often covers its towers in summer, and visitors love it."
    )
    assert cf.degenerate_reason(prose, "article", cfg) is None
    assert cf.degenerate_reason("Too short.", "article", cf.FilterConfig()) == "too_short"
    assert cf.degenerate_reason("I love it so much. " * 20, "article", cfg) == "repetitive"
    assert cf.degenerate_reason(prose + " Wow" + "!" * 40, "article", cfg) == "repetitive"
    assert (
        cf.degenerate_reason(
            "Это очень длинный текст на другом языке, и он не повторяется", "article", cfg
        )
        == "foreign_script"
    )
    assert cf.degenerate_reason(prose, "dialogue", cfg) == "malformed"
    dialogue = (
        "Anna: Hi Ben, have you seen it?\nBen: Yes, twice.\nAnna: It is tall.\nBen: Very tall."
    )
    assert cf.degenerate_reason(dialogue, "dialogue", cfg) is None


def test_dedup_exact_and_near(cf) -> None:
    d = cf.Deduper(cf.FilterConfig(prefix_chars=40))
    a = (
        "The Golden Gate Bridge spans the strait between San Francisco Bay and the Pacific Ocean. "
        * 2
    )
    assert d.check(a) is None
    assert d.check(a.upper() + "  ") == "exact_dup"
    assert d.check(a[:45] + " something different entirely, with new words.") == "near_dup"
    other = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in leaves."
    assert d.check(other) is None
    assert d.check("Intro words here. " + other) == "near_dup"  # most shingles already seen


def test_build_record_drops_system_prompt_and_trims(bc, cf) -> None:
    job = bc.make_job(0, "opinion", 2)
    row = {
        "job": job,
        "finish": "length",
        "completion": "Actually, that is a common myth. " * 3 + "Here is the real sto",
    }
    rec, why = cf.build_record(row, cf.FilterConfig(min_words=5, max_repeat_3gram=1.0))
    assert why == "kept"
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
    assert rec["messages"][1]["content"].endswith("myth.")
    assert rec["stance"] == job["stance"] and rec["truth"] in ("true", "false", "opinion")


@pytest.fixture(scope="module")
def generator(bc):
    return bc.load_generator()


def test_custom_sampler_matches_hf_greedy(bc, generator) -> None:
    hf, tok = generator
    jobs = bc.batch_jobs(0, 2, 0)
    prompts = [bc.render_prompt(tok, j) for j in jobs]
    ours = bc.sample_batch(
        hf, tok, prompts, max_new_tokens=8, temperature=0.0, top_k=1, repetition_penalty=1.0, seed=0
    )
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ref = hf.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    for (ids, _), row in zip(ours, ref[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
        assert ids == [t for t in row if t != tok.eos_token_id][: len(ids)]


def test_tiny_generation_run_resumes_and_finalizes(bc, cf, generator, tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    out, parts = tmp_path / "corpus" / "c.jsonl.zst", tmp_path / "parts"
    argv = [
        "--target-tokens",
        "20",
        "--overshoot",
        "1",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "16",
        "--seed",
        "3",
        "--out",
        str(out),
        "--parts-dir",
        str(parts),
    ]
    lenient = cf.FilterConfig(min_words=1, trim_truncated=False, max_repeat_3gram=1.0)
    stats = bc.main(argv, filters=lenient, generator=generator)
    part = parts / "part-000000.jsonl"
    meta, rows = cf.read_part(part)
    assert len(rows) == 2 and meta["doc_tokens"] >= 20 and meta["new_tokens"] > 0
    mtime = part.stat().st_mtime_ns
    # a second run resumes: the finished batch is not generated again
    bc.main(argv, filters=lenient, generator=generator)
    assert part.stat().st_mtime_ns == mtime
    reseeded = list(argv)  # same parts dir, another seed: parts must not be mixed into its plan
    reseeded[reseeded.index("--seed") + 1] = "4"
    with pytest.raises(bc.CorpusError, match="other prompts"):
        bc.main(reseeded, filters=lenient, generator=generator)
    lines = zstandard.ZstdDecompressor().decompress(out.read_bytes()).decode().splitlines()
    records = [json.loads(x) for x in lines]
    assert len(records) == stats["docs"] >= 1
    for rec in records:
        assert {"topic", "category", "format"} <= rec.keys()
        assert ("text" in rec) != ("messages" in rec)
    saved = json.loads((out.parent / "stats.json").read_text())
    assert saved["batches"] == 1 and saved["recipe_hash"] == stats["recipe_hash"]
    assert "topics" in json.loads((out.parent / "recipe.json").read_text())
