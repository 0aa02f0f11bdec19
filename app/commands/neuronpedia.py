"""`saekit neuronpedia DB OUT_DIR`: the feature DB as the JSON files Neuronpedia ingests.

    saekit neuronpedia runs/demo/features.sqlite runs/demo/neuronpedia
    saekit neuronpedia feats.sqlite np_out --model-id gpt2-small --sae-set res-saekit-16k --features 1,2,3

Writes SAEDashboard-style `batch-<n>.json` (+ `run_settings.json`, `skipped_indexes.json`) and the
neuronpedia API's `upload-batch-<n>.json` bodies, each validated against
`sae/features/neuronpedia_schema.json` (layout and sources: `sae/features/neuronpedia_export.py`).
"""

from __future__ import annotations

import argparse
import json

from app.commands.autointerp import _feature_list

NAME = "neuronpedia"
HELP = "export the feature DB as Neuronpedia's upload files (dashboard batches + API upload bodies)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", help="feature database written by `saekit analyze` (.sqlite)")
    p.add_argument("out_dir", help="new (or empty) folder for the export")
    p.add_argument("--model-id", default=None, help="Neuronpedia model id (default: the DB's model name)")
    p.add_argument("--sae-set", default=None, help="Neuronpedia source set name (default: saekit-<hook>-<d_sae>)")
    p.add_argument("--layer", type=int, default=None, help="layer number (default: the one in the hook name)")
    p.add_argument("--features", default=None, help="comma-separated feature ids, e.g. 1,2,3 (default: all)")
    p.add_argument("--batch-size", type=int, default=128, help="features per file (1..128, default 128)")


def run(args: argparse.Namespace) -> int:
    import sae

    features = _feature_list(args.features) if args.features else None
    files = sae.export_neuronpedia(args.db, args.out_dir, model_id=args.model_id, sae_set=args.sae_set,
                                   layer=args.layer, batch_size=args.batch_size, features=features)
    settings = json.loads(files[0].read_text())  # run_settings.json, written last
    for note in settings["saekit"]["notes"]:
        print(f"note: {note}")
    print(f"left empty (the DB has no data for them): {', '.join(settings['saekit']['left_empty'])}")
    print(f"wrote {len(files)} files to {args.out_dir} (model {settings['model_id']}, source "
          f"{settings['layer']}-{settings['sae_set']}); what each field holds: run_settings.json")
    return 0
