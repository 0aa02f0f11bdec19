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


# --------------------------------------------------------------------------- a config against a cache


def manifest_only_cache(d, hooks: dict[str, int]):
    """A folder whose manifest is all that resolving a config reads."""
    from sae.shards import FORMAT

    d.mkdir(parents=True)
    doc = {"format": FORMAT, "version": 1, "complete": True, "model": "cached-model", "hooks": list(hooks),
           "d_in": hooks, "context_size": 32, "fingerprint": "f", "shards": []}
    (d / "manifest.json").write_text(json.dumps(doc))
    return d


def cli_config(*argv: str):
    from app.cli import build_parser
    from app.commands.train import build_config

    return build_config(build_parser().parse_args(["train", *argv]))


def test_cli_and_library_resolve_a_cache_alike(tmp_path):
    from sae.manifest import CacheManifest
    from sae.training.run import resolve_train_config

    cache = manifest_only_cache(tmp_path / "acts", {"h": 16})
    cli = cli_config("--cache", str(cache), "--out", str(tmp_path / "o"))
    written = TrainConfig(cache_dir=str(cache), out_dir=str(tmp_path / "o"), saes=[SAEConfig(hook_name="h", d_in=16)])
    lib = resolve_train_config(written, CacheManifest.read(cache))
    assert cli == lib and lib is not written  # a resolved copy; the caller's config is left alone
    assert (cli.saes[0].hook_name, cli.saes[0].d_in) == ("h", 16)
    assert (cli.saes[0].model_name, cli.saes[0].context_size) == ("cached-model", 32)
    assert written.saes[0].model_name != "cached-model"


def test_a_chosen_d_in_must_match_the_cache(tmp_path):
    from sae.manifest import CacheManifest
    from sae.training.run import resolve_train_config

    cache = manifest_only_cache(tmp_path / "acts", {"h": 16})
    phrases = r"SAE d_in=8 .* have d_in=16; set saes.0.d_in=16 \(`saekit train`: --d-in 16"
    with pytest.raises(ConfigError, match=phrases):
        cli_config("--cache", str(cache), "--d-in", "8")
    with pytest.raises(ConfigError, match=phrases):
        resolve_train_config(TrainConfig(saes=[SAEConfig(hook_name="h", d_in=8)]), CacheManifest.read(cache))
    in_file = tmp_path / "set.yaml"  # set in the file's saes entry: chosen too
    in_file.write_text("saes:\n  - d_in: 8\n")
    with pytest.raises(ConfigError, match=phrases):
        cli_config("--config", str(in_file), "--cache", str(cache))
    with pytest.raises(ConfigError, match=phrases):
        cli_config("--cache", str(cache), "--set", "saes.0.d_in=8")


def test_what_the_user_did_not_choose_comes_from_the_cache(tmp_path):
    cache = manifest_only_cache(tmp_path / "acts", {"h": 16, "g": 24})
    mentions = tmp_path / "mentions.yaml"  # the words alone choose nothing
    mentions.write_text("# hook_name and d_in come from the cache\nsaes:\n  - architecture: relu\n")
    cfg = cli_config("--config", str(mentions), "--cache", str(cache), "--hook", "g")
    assert (cfg.saes[0].hook_name, cfg.saes[0].d_in, cfg.saes[0].architecture) == ("g", 24, "relu")
    two = tmp_path / "two.yaml"
    two.write_text("saes:\n  - hook_name: h\n  - hook_name: g\n")
    assert [s.d_in for s in cli_config("--config", str(two), "--cache", str(cache)).saes] == [16, 24]
    with pytest.raises(ConfigError, match=r"'blocks.15.hook_resid_post' is not in the cache .*it holds \['h', 'g'\] \(use --hook\)"):
        cli_config("--cache", str(cache))  # two hooks: the default hook is not one of them
