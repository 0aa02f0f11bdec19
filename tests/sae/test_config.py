"""sae/config.py: typed configs round-trip through YAML/JSON and take dotted overrides."""

from __future__ import annotations

import json

import pytest

from sae.config import (
    CacheConfig,
    ConfigError,
    EvalConfig,
    FeaturesConfig,
    SAEConfig,
    StoreConfig,
    TokenFilterConfig,
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


def test_filter_settings_are_one_nested_config_and_flat_keys_still_load(tmp_path):
    old = tmp_path / "old.yaml"  # written before the settings were nested
    old.write_text("max_norm_ratio: 5\nexclude_special_tokens: false\n")
    for cls in (CacheConfig, StoreConfig, EvalConfig, FeaturesConfig):
        cfg = load_config(cls, old)
        assert cfg.token_filter == TokenFilterConfig(exclude_special_tokens=False, max_norm_ratio=5.0), cls
        assert "max_norm_ratio" not in to_dict(cfg) and from_dict(cls, to_dict(cfg)) == cfg
        # A flat `key=value` override wins over the nested default it lands beside.
        assert load_config(cls, None, ["max_norm_ratio=null"]).token_filter.max_norm_ratio is None
        assert load_config(cls, old, ["token_filter.max_norm_ratio=3"]).token_filter.max_norm_ratio == 3.0
    train = load_config(TrainConfig, None, ["store.max_norm_ratio=4"])
    assert train.store.token_filter == TokenFilterConfig(max_norm_ratio=4.0)
    with pytest.raises(ConfigError, match="valid keys are"):
        from_dict(SAEConfig, {"max_norm_ratio": 5})  # only the stages that filter take the keys
