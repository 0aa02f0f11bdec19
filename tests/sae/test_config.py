"""sae/config.py: typed configs round-trip through YAML/JSON and take dotted overrides."""

from __future__ import annotations

import json

import pytest

from sae.config import (
    CacheConfig,
    ConfigError,
    TrainConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


def test_round_trip(tmp_path):
    cfg = TrainConfig(n_tokens=123, lr=1e-3)
    save_config(cfg, tmp_path / "c.json")
    assert load_config(TrainConfig, tmp_path / "c.json") == cfg


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("n_tokens: 5000\nsaes:\n  - architecture: relu\n    d_sae: 64\n")
    cfg = load_config(TrainConfig, p, ["lr=0.01", "saes.0.k=7", "store.batch_size=128"])
    assert cfg.n_tokens == 5000 and cfg.lr == 0.01
    assert cfg.saes[0].architecture == "relu" and cfg.saes[0].d_sae == 64 and cfg.saes[0].k == 7
    assert cfg.store.batch_size == 128


def test_unknown_key_names_valid_ones():
    with pytest.raises(ConfigError, match="valid keys are"):
        from_dict(CacheConfig, {"n_tokenz": 5})


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(CacheConfig, {"n_tokens": "lots"})
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CacheConfig, None, ["n_tokens"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(CacheConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid json"):
        load_config(CacheConfig, bad)


def test_to_dict_is_json_ready():
    json.dumps(to_dict(TrainConfig()))
