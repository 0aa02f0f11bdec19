"""steering.forced_choice: the sycophancy items and the agreement probability read from logits."""

from __future__ import annotations

import contextlib
import importlib.util
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from steering.forced_choice import (
    DATA,
    ForcedChoiceError,
    Item,
    agreement_probability,
    letter_logprobs,
    letter_token_ids,
    load_items,
    render_item,
)
from tests.steering.conftest import make_sae

BUILDER = Path(__file__).resolve().parents[2] / "scripts" / "make_sycophancy_items.py"
MID = "blocks.15.hook_resid_post"  # the middle of SmolLM2-135M's 30 blocks


# --------------------------------------------------------------------------- the items


def test_items_load_with_balanced_stratified_halves() -> None:
    items = load_items()
    sel, ev = load_items("selection"), load_items("evaluation")
    assert len(items) >= 120 and len(sel) == len(ev) == len(items) // 2
    assert len({it.id for it in items}) == len(items)
    cats = Counter(it.category for it in items)
    assert len(cats) >= 5
    assert Counter(it.category for it in sel) == Counter(it.category for it in ev)
    for half in (sel, ev):  # a model that always answers "A" scores exactly 0.5 on either half
        assert Counter(it.agree_option for it in half) == {"A": len(half) // 2, "B": len(half) // 2}
    for it in items:
        agree, correct = it.options[it.agree_option], it.options[it.correct_option]
        assert agree.startswith("Yes") and correct.startswith("No"), it.id
        assert "(A)" in it.user_turn() and "(B)" in it.user_turn() and "A or B" in it.user_turn()


def test_data_file_matches_its_builder() -> None:
    spec = importlib.util.spec_from_file_location("make_sycophancy_items", BUILDER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert DATA.read_text(encoding="utf-8") == mod.render(mod.build_items()), \
        "rerun scripts/make_sycophancy_items.py"


def test_bad_split_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ForcedChoiceError, match="not one of"):
        load_items("test")
    with pytest.raises(ForcedChoiceError, match="make_sycophancy_items"):
        load_items(path=tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "category": "c", "prompt": "p", "options": {"A": "a"}, '
                   '"agree_option": "A", "split": "selection"}\n')
    with pytest.raises(ForcedChoiceError, match="options exactly"):
        load_items(path=bad)


# --------------------------------------------------------------------------- the model


def test_letters_are_single_tokens_after_the_prefill(tokenizer) -> None:
    a, b = letter_token_ids(tokenizer)
    assert a != b and tokenizer.decode([a]) == "A" and tokenizer.decode([b]) == "B"
    item = load_items()[0]
    ids = render_item(tokenizer, item)
    assert tokenizer.encode(tokenizer.decode(ids) + "A", add_special_tokens=False)[-1] == a
    with pytest.raises(ForcedChoiceError, match="one token"):
        letter_token_ids(tokenizer, prefill="Answer: ")  # the space joins the letter: " A"


@pytest.fixture(scope="module")
def few() -> list[Item]:
    ev = load_items("evaluation")
    by_len = sorted(ev, key=lambda it: len(it.user_turn()))
    return [by_len[0], by_len[len(by_len) // 2], by_len[-1], by_len[1]]  # unequal lengths: real padding


@pytest.fixture(scope="module")
def unsteered(model, few) -> torch.Tensor:
    return agreement_probability(model, few, batch_size=len(few))


@pytest.mark.slow
def test_probabilities_and_batched_equals_unbatched(model, few, unsteered) -> None:
    assert unsteered.shape == (len(few),) and unsteered.dtype == torch.float64
    assert bool(((unsteered >= 0) & (unsteered <= 1)).all())
    one_by_one = agreement_probability(model, few, batch_size=1)
    assert torch.allclose(unsteered, one_by_one, atol=1e-4, rtol=0), (unsteered, one_by_one)
    mass = letter_logprobs(model, few[:1]).exp().sum()
    assert 0.3 < float(mass) <= 1.0  # the model does answer with a letter after "Answer: ("


def _add_vector(model, scale: float):
    """A context manager adding a fixed large vector to the middle-layer residual."""
    hook = model.hook_dict[MID].name or MID
    d = model.cfg.d_model
    vec = torch.randn(d, generator=torch.Generator().manual_seed(0))
    vec = vec / vec.norm() * scale

    def add(x: torch.Tensor, hook) -> torch.Tensor:
        return x + vec.to(x.dtype)

    return model.hooks(fwd_hooks=[(hook, add)])


@pytest.mark.slow
def test_a_strong_steering_edit_changes_the_probabilities(model, few, unsteered) -> None:
    steered = agreement_probability(model, few, _add_vector(model, 300.0), batch_size=len(few))
    assert float((steered - unsteered).abs().max()) > 0.02, (unsteered, steered)

    @contextlib.contextmanager
    def factory() -> Iterator[None]:  # a function returning a context manager works too
        with _add_vector(model, 300.0):
            yield

    assert torch.allclose(agreement_probability(model, few, factory, batch_size=len(few)), steered, atol=1e-6)
    # the hook is gone afterwards
    again = agreement_probability(model, few, batch_size=len(few))
    assert torch.allclose(again, unsteered, atol=1e-6)


@pytest.mark.slow
def test_steering_steer_is_accepted(model, few, unsteered) -> None:
    import steering

    clamp = steering.steer(model, make_sae("relu"), {0: steering.Clamp(200.0)})
    steered = agreement_probability(model, few, clamp, batch_size=len(few))
    assert float((steered - unsteered).abs().max()) > 0.02, (unsteered, steered)


def test_steering_that_is_no_context_manager_raises(model, few) -> None:
    with pytest.raises(TypeError, match="context manager"):
        agreement_probability(model, few, steering=42)  # type: ignore[arg-type]
    with pytest.raises(ForcedChoiceError, match="no items"):
        agreement_probability(model, [])
