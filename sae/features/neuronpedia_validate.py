"""Checking Neuronpedia export files against `neuronpedia_schema.json` (the layout and its sources are
described in that file's `$comment` and in `neuronpedia_export.py`).

`validate(kind, obj)` runs jsonschema (Draft 2020-12) on `obj` against `$defs/<kind>`, then checks
the equal lengths JSON Schema cannot state, and raises `NeuronpediaExportError` naming the file,
the place and the problem.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("neuronpedia_schema.json")


class NeuronpediaExportError(ValueError):
    """The export cannot be made as asked (bad options, an occupied folder) or failed its schema."""


@functools.cache
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


# jsonschema spends ~30 us on each value it descends into, and a batch holds ~10^6 of them (every
# token and activation): minutes for a 4k-latent SAE. So its `items` keyword is replaced by one that
# first tries to PROVE each item valid with plain isinstance checks over the keywords this schema
# uses, and hands jsonschema every item it cannot prove: jsonschema still walks each file, and every
# error it reports is its own. A prover may say "not proven" for a valid item (jsonschema then
# decides), never "valid" for an invalid one; tests/sae/test_neuronpedia_export.py checks that.
_TYPES = {"string": lambda x: isinstance(x, str), "null": lambda x: x is None,
          "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
          "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
          "object": lambda x: isinstance(x, dict), "array": lambda x: isinstance(x, list),
          "boolean": lambda x: isinstance(x, bool)}
_NOTES = {"description", "title", "$comment"}


_KNOWN = _NOTES | {"type", "oneOf", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                   "uniqueItems", "minimum", "maximum", "minLength", "pattern"}
_provers: dict[int, Callable[[Any], bool]] = {}


def _type_test(s: dict[str, Any]) -> Callable[[Any], bool]:
    names = s["type"] if isinstance(s["type"], list) else [s["type"]]
    tests = [_TYPES.get(n, lambda _: False) for n in names]
    return lambda x: any(t(x) for t in tests)


def _prover(s: Any) -> Callable[[Any], bool]:
    """A function that returns True only if its argument certainly matches schema `s` (compiled once):
    False means "not proven" (a keyword it does not know, or an invalid value)."""
    if id(s) in _provers:
        return _provers[id(s)]
    never: Callable[[Any], bool] = lambda _: False  # noqa: E731
    if isinstance(s, dict) and set(s) == {"$ref"} and s["$ref"].startswith("#/$defs/"):
        target = load_schema()["$defs"][s["$ref"][8:]]
        return lambda x: _prover(target)(x)  # late: definitions refer to each other
    if not isinstance(s, dict) or set(s) - _KNOWN:
        return never
    checks: list[Callable[[Any], bool]] = []
    if "type" in s:
        checks.append(_type_test(s))
    if "oneOf" in s:  # exactly one branch: that one proven, every other excluded by its type
        if not all("type" in o for o in s["oneOf"]):
            return never
        branches = [(_prover(o), _type_test(o)) for o in s["oneOf"]]
        checks.append(lambda x: sum(p(x) for p, _ in branches) == 1 == sum(t(x) for _, t in branches))
    if "minimum" in s or "maximum" in s:
        lo, hi = s.get("minimum", -math.inf), s.get("maximum", math.inf)
        checks.append(lambda x: _TYPES["number"](x) and lo <= x <= hi)
    if "minLength" in s or "pattern" in s:
        n, pattern = s.get("minLength", 0), re.compile(s.get("pattern", ""))
        checks.append(lambda x: isinstance(x, str) and len(x) >= n and pattern.search(x) is not None)
    if {"properties", "required", "additionalProperties"} & set(s):
        props = {k: _prover(v) for k, v in s.get("properties", {}).items()}
        required, closed = tuple(s.get("required", ())), s.get("additionalProperties", True) is not True
        checks.append(lambda x: isinstance(x, dict) and all(k in x for k in required)
                      and not (closed and any(k not in props for k in x))
                      and all(props[k](v) for k, v in x.items() if k in props))
    if {"items", "minItems", "maxItems", "uniqueItems"} & set(s):
        sub = s.get("items", {})
        item = (_TYPES[sub["type"]] if set(sub) == {"type"} and sub["type"] in _TYPES
                else _prover(sub) if sub else (lambda _: True))
        lo_n, hi_n, unique = s.get("minItems", 0), s.get("maxItems", math.inf), s.get("uniqueItems", False)
        checks.append(lambda x: isinstance(x, list) and lo_n <= len(x) <= hi_n and all(map(item, x))
                      and not (unique and not (all(map(_TYPES["integer"], x)) and len(set(x)) == len(x))))
    prove = (lambda x: all(c(x) for c in checks)) if checks else (lambda _: True)
    _provers[id(s)] = prove
    return prove


def _items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]) -> Any:
    if not isinstance(instance, list) or "prefixItems" in schema:
        yield from validator.ORIGINAL_ITEMS(validator, items, instance, schema)
        return
    for k, x in enumerate(instance):
        if not _prover(items)(x):
            yield from validator.descend(x, items, path=k)


@functools.cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import extend

    root = load_schema()
    if kind not in root["$defs"]:
        raise KeyError(f"no definition {kind!r} in {SCHEMA_PATH.name}")
    cls = extend(Draft202012Validator, {"items": _items})
    cls.ORIGINAL_ITEMS = staticmethod(Draft202012Validator.VALIDATORS["items"])
    return cls({**root, "$ref": f"#/$defs/{kind}"})


def _parallel_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    """Equal lengths JSON Schema cannot state (Neuronpedia indexes one array by the other's positions)."""
    bad = []
    pairs = (("neg_str", "neg_values"), ("pos_str", "pos_values"),
             ("freq_hist_data_bar_heights", "freq_hist_data_bar_values"),
             ("logits_hist_data_bar_heights", "logits_hist_data_bar_values"))
    for f in obj.get("features", []):
        where = f"feature {f.get('feature_index', f.get('index'))}"
        if kind == "dashboardBatch":
            bad += [f"{where}: {a} and {b} differ in length" for a, b in pairs if len(f[a]) != len(f[b])]
        for j, a in enumerate(f["activations"]):
            if len(a["tokens"]) != len(a["values"]):
                bad.append(f"{where}, activation {j}: {len(a['tokens'])} tokens but {len(a['values'])} values")
            elif a.get("qualifying_token_index", 0) >= len(a["tokens"]):
                bad.append(f"{where}, activation {j}: qualifying_token_index past the last token")
    return bad


def validate(kind: str, obj: dict[str, Any], where: str = "") -> None:
    """Raise NeuronpediaExportError unless `obj` matches `$defs/<kind>` of the shipped schema."""
    from jsonschema.exceptions import best_match

    err = best_match(_validator(kind).iter_errors(obj))
    problems = [f"at /{'/'.join(map(str, err.absolute_path))}: {err.message[:300]}"] if err else []
    if not problems and kind in ("dashboardBatch", "uploadBatch"):
        problems = _parallel_errors(kind, obj)
    if problems:
        raise NeuronpediaExportError(
            f"{where or kind} does not match Neuronpedia's layout ({kind} in {SCHEMA_PATH.name}) "
            f"{problems[0]}; nothing more was written. This is a saekit bug: please report it"
        )
