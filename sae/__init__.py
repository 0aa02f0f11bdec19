"""saekit's core library: model, text, activations, SAEs, training, evaluation, feature database.

Everything `steering/` and `app/` use is exported here. Names resolve lazily so that
`import sae` stays fast (torch and transformers load only when first needed).
"""

from __future__ import annotations

from sae.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # config
    "ModelConfig": "sae.config",
    "DataConfig": "sae.config",
    "CacheConfig": "sae.config",
    "StoreConfig": "sae.config",
    "SAEConfig": "sae.config",
    "TrainConfig": "sae.config",
    "EvalConfig": "sae.config",
    "FeaturesConfig": "sae.config",
    "TokenFilterConfig": "sae.config",
    "ConfigError": "sae.config",
    "load_config": "sae.config",
    "save_config": "sae.config",
    "to_dict": "sae.config",
    "apply_overrides": "sae.config",
    "from_dict": "sae.config",
    # model
    "load_model": "sae.model",
    "embedded_model_dir": "sae.embedded",
    "list_hooks": "sae.model",
    "validate_hook": "sae.model",
    "resid_hook": "sae.model",
    "hook_layer": "sae.model",
    "stop_layer": "sae.model",
    "pick_device": "sae.devices",
    "parse_dtype": "sae.devices",
    "model_device": "sae.devices",
    "special_token_ids": "sae.model",
    "installed_versions": "sae.environment",
    "versions_line": "sae.environment",
    "KVCache": "sae.kv_cache",
    "KVCacheError": "sae.kv_cache",
    "cache_kwargs": "sae.kv_cache",
    "HookError": "sae.model",
    # text
    "iter_documents": "sae.data",
    "pack_tokens": "sae.data",
    "token_rows": "sae.data",
    "DataError": "sae.data",
    # activations
    "build_cache": "sae.activation_cache",
    "read_manifest": "sae.activation_cache",
    "CacheManifest": "sae.manifest",
    "verify_cache": "sae.activation_cache",
    "CacheError": "sae.activation_cache",
    "ActivationStore": "sae.store",
    "ActivationPair": "sae.store",
    "StoreError": "sae.activation_sources",
    "ActivationSource": "sae.activation_sources",
    "ActivationExtractor": "sae.extract",
    # which positions count (special tokens, norm outliers): one filter for every stage
    "TokenFilter": "sae.token_filter",
    "TokenMask": "sae.token_filter",
    "filter_tokens": "sae.token_filter",
    "is_residual_hook": "sae.token_filter",
    # SAEs
    "SparseAutoencoder": "sae.architectures.base",
    "ForwardOutput": "sae.architectures.base",
    "build_sae": "sae.architectures.base",
    "architectures": "sae.architectures.base",
    "architecture_names": "sae.architectures.base",
    "get_architecture": "sae.architectures.base",
    "save_sae": "sae.checkpoint",
    "load_sae": "sae.checkpoint",
    "CheckpointError": "sae.checkpoint_files",
    # the Hugging Face Hub: push a checkpoint with a model card, pull `hf://OWNER/NAME[/SUB][@REV]`
    "push_sae": "sae.hub_push",
    "pull_sae": "sae.hub",
    "HubError": "sae.hub",
    "train": "sae.training.run",
    "resolve_train_config": "sae.training.run",
    "Trainer": "sae.training.trainer",
    "TrainingDivergedError": "sae.training.trainer",
    "evaluate": "sae.evaluation",
    "splice_ce": "sae.splice",
    "attached": "sae.attachment",
    "Attached": "sae.attachment",
    "AttachError": "sae.attachment",
    "attribute": "sae.attribution",
    "check_attribution": "sae.attribution",
    "logit_metric": "sae.attribution",
    "Attribution": "sae.attribution",
    "EvalResult": "sae.eval_result",
    "load_eval": "sae.eval_result",
    # quality evaluations beyond FVU (opt-in in `evaluate`: EvalConfig.probing / .absorption)
    "run_sparse_probing": "sae.sparse_probing",
    "run_absorption": "sae.absorption",
    "SparseProbingMetrics": "sae.eval_metrics",
    "AbsorptionMetrics": "sae.eval_metrics",
    "LinearProbe": "sae.linear_probe",
    "fit_probe": "sae.linear_probe",
    "save_figure": "sae.figures",
    # features
    "build_feature_db": "sae.features.build",
    "FeatureDB": "sae.features.db",
    "random_sae": "sae.features.demo_db",  # a random TopK SAE, for trying the tools without training one
    "FeatureDBError": "sae.features.db",
    "text_activations": "sae.features.token_activations",
    "TextActivations": "sae.features.token_activations",
    # autointerp: explanations written and scored by a language model, stored in the feature DB
    "run_autointerp": "sae.autointerp.runner",
    "AutointerpConfig": "sae.autointerp.runner",
    "make_client": "sae.autointerp.clients",
    "AutointerpError": "sae.autointerp.clients",
    "inactive_check": "sae.autointerp.samples",
    # Neuronpedia: the feature DB as its upload files, validated against the shipped schema
    "export_neuronpedia": "sae.features.neuronpedia_export",
    "NeuronpediaExportError": "sae.features.neuronpedia_validate",
    # logit lens: what a direction writes, through the final norm's weight and W_U
    "unembedding": "sae.features.lens",
    "lens_logits": "sae.features.lens",
    "feature_lens": "sae.features.lens",
    "LogitLens": "sae.features.lens",
    # writing files (temp, fsync, rename, fsync the folder)
    "atomic_write_bytes": "sae.atomic_io",
    "atomic_write_text": "sae.atomic_io",
    "atomic_write_json": "sae.atomic_io",
    "atomic_write_with": "sae.atomic_io",
    "append_text": "sae.atomic_io",
    "DiskFullError": "sae.atomic_io",
    "read_json": "sae.atomic_io",
    # package attributes that import their module on first use
    "lazy_exports": "sae.lazy",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
