"""The benchmark's markdown: concept x method tables per SAE, sycophancy both ways, spread over SAEs."""

from __future__ import annotations

from typing import Any


def _ci(iv: dict[str, float], pct: bool = False) -> str:
    if pct:
        return f"{iv['point']:.0%} [{iv['low']:.0%}, {iv['high']:.0%}]"
    return f"{iv['point']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def _setting(r: dict[str, Any]) -> str:
    if r["method"].startswith("clamp"):
        return f"x{r['setting']:g} max (feature {r.get('feature')})"
    if r["method"].startswith("caa"):
        return f"scale {r.get('scale', 0):.3g}"
    return ""


RATE_RULE = ("`clamp` and `caa`: the setting with the best combined score on the selection prompts; "
             "`clamp_by_rate` and `caa_by_rate`: the one with the highest concept rate whose median text "
             "perplexity stays within {ratio:g}x unsteered (the issue's target rule; absent when it picks none).")


def concept_table(concepts: dict[str, Any]) -> list[str]:
    lines = ["| concept | method | setting | concept rate [95% CI] | fluency | relevance | combined [95% CI] "
             "| edit size | text ppl (median) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, res in concepts.items():
        for r in res["evaluation"]:
            lines.append(f"| {name} | {r['method']} | {_setting(r)} | {_ci(r['concept_rate'], pct=True)} "
                         f"| {_ci(r['fluency'])} | {_ci(r['relevance'])} | {_ci(r['combined'])} "
                         f"| {r['edit_size']:.3f} | {r['text_perplexity_median']:.2f} |")
    return lines


def sycophancy_tables(res: dict[str, Any]) -> list[str]:
    lines = [f"Sycophancy: feature {res['feature']} clamped at x{res['strength']:g} max (chosen on the selection "
             f"split), {res['n_items']} evaluation items. Prompting: \"{res['instruction']}\" in the user turn.", "",
             "| method | agreement probability [95% CI] | difference to unsteered [paired 95% CI] | A+B mass "
             "| edit size |", "|---|---|---|---|---|"]
    for r in res["forced_choice"]:
        lines.append(f"| {r['method']} | {_ci(r['agreement'])} | {_ci(r['difference_to_unsteered'])} "
                     f"| {r['letter_mass']:.2f} | {r['edit_size']:.3f} |")
    lines += ["", "| method (free text) | agrees, fluent [95% CI] | agrees, any reply | corrects [95% CI] "
              "| fluent share | edit size |", "|---|---|---|---|---|---|"]
    for r in res["free_text"]:
        lines.append(f"| {r['method']} | {_ci(r['fluent_only_agrees_interval'], pct=True)} "
                     f"| {r['only_agrees_interval']['point']:.0%} | {_ci(r['corrects_interval'], pct=True)} "
                     f"| {r['fluent_share']:.0%} | {r['edit_size']:.3f} |")
    if not res.get("selection", {}).get("fluent_choice", True):
        lines += ["", "No clamp setting kept the free-text replies fluent on the selection items; the gentlest "
                      "setting of the best feature is shown."]
    return lines


def samples_table(samples: list[dict[str, str]], width: int = 160) -> list[str]:
    """Replies side by side (one row per prompt, one column per method), each cut to `width` characters."""
    if not samples:
        return []
    cols = list(samples[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in samples:
        cells = [str(s.get(c, "")).replace("\n", " ").replace("|", "\\|")[:width] for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def spread_table(spread: dict[str, Any]) -> list[str]:
    lines = ["| concept | method | metric | min | median | max | SAEs |", "|---|---|---|---|---|---|---|"]
    for name, methods in spread.items():
        for method, metrics in methods.items():
            for metric, s in metrics.items():
                if metric in ("concept_rate", "combined", "agreement", "difference", "fluent_only_agrees"):
                    lines.append(f"| {name} | {method} | {metric} | {s['min']:.2f} | {s['median']:.2f} "
                                 f"| {s['max']:.2f} | {s['n_saes']} |")
    return lines


def _seconds(result: dict[str, Any]) -> float:
    """Time spent on what the results hold (a stopped run's finished concepts included)."""
    return sum(sum(res.get("seconds", {}).values()) for res in result["saes"].values())


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = ["# Steering benchmark", "",
             f"{cfg['n_selection']} selection / {cfg['n_evaluation']} evaluation prompts, {cfg['max_new_tokens']} "
             f"new tokens, clamp strengths {cfg['strengths']} x max; CAA at the clamp's measured edit sizes "
             "(mean ||added|| / mean ||residual|| over generated positions); each method's setting chosen by mean "
             f"combined score on the selection prompts. {_seconds(result):.0f} s in all. {result['versions']}.", ""]
    if cfg.get("rate_rule_ppl") is not None and cfg.get("concepts") != []:
        lines += [RATE_RULE.format(ratio=cfg["rate_rule_ppl"]), ""]
    for label, res in result["saes"].items():
        lines += [f"## SAE {label}", ""]
        if res["concepts"]:
            lines += concept_table(res["concepts"]) + [""]
        if "sycophancy" in res:
            lines += sycophancy_tables(res["sycophancy"]) + [""]
    if len(result["saes"]) > 1:
        lines += [f"## Spread over {len(result['saes'])} SAEs", ""] + spread_table(result.get("spread", {})) + [""]
    return "\n".join(lines)
