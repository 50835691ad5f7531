"""`make demo`: the study on the built-in offline corpus, as far as the package has it today.

Steps: build MiniStew -> data card -> pretrain the supervised tagging baseline, the contrastive and the captioning
objective on the same encoder and data -> contrastive again from the tagging encoder (the initialisation
ablation) -> results records -> loss figure. Evaluation runs through `audiolp evaluate`; the study notebooks that
will run it here are not written yet, and the demo says so instead of pretending.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from audiolp.study.figures import plot_pretrain_losses
from audiolp.study.records import read_records, write_record


# The CPU demo runs the demo_cpu preset (audiolp/presets/demo_cpu.json: the tiny encoder, small heads, the offline
# MiniLM); everything else is the same code path as a GPU run with the paper preset.
PRESET = "demo_cpu"


@dataclass
class DemoPlan:
    steps: int
    scale: str | None


PLANS = {
    "tiny": DemoPlan(steps=40, scale=None),
    "full": DemoPlan(steps=80, scale=None),
}

NOT_YET = [
    "evaluation of these runs (audiolp evaluate RUN_DIR ... --tasks minibench does it by hand; the study notebooks "
    "will run it): linear probing, SED, t-SNE",
    "LiT-style retrieval, caption generation metrics, open-form QA with SmolLM2",
    "study notebooks 01_objective_gap, 02_pooling_sensitivity, 03_scaling, 04_init_ablation, 05_caption_tsne",
]


def run_demo(profile: str = "full", out_root: str = "papermill_runs/demo", steps: int | None = None,
             data_root: str = "data", figures_dir: str = "figures") -> int:
    from audiolp.data.ministew import build_ministew
    from audiolp.data.ministew.card import data_card
    from audiolp.train.config import TrainConfig
    from audiolp.train.trainer import train

    if profile not in PLANS:
        raise ValueError(f"profile={profile!r}; use one of {sorted(PLANS)}")
    plan = PLANS[profile]
    steps = steps or plan.steps
    out_root = Path(out_root) / profile
    records_dir = out_root / "records"
    t0 = time.time()

    print(f"[demo] 1/4 MiniStew ({profile}) ...", flush=True)
    corpus = Path(build_ministew(Path(data_root) / f"ministew_{profile}", profile=profile))
    card = data_card(corpus)
    (out_root).mkdir(parents=True, exist_ok=True)
    (out_root / "data_card.md").write_text(card)
    print(card)

    model = TrainConfig.from_preset(PRESET).model
    print(f"[demo] 2/4 pretraining {model} ({PRESET} preset) for {steps} steps per objective ...", flush=True)
    runs = [
        ("tagging", "tagging", None),
        ("contrastive", "contrastive", None),
        ("captioning", "captioning", None),
        ("contrastive_from_tagging", "contrastive", "tagging"),
    ]
    run_dirs: dict[str, Path] = {}
    for name, objective, init_run in runs:
        cfg = TrainConfig.from_preset(PRESET, dict(
            objective=objective,
            data=str(corpus / "cuts.jsonl.gz"),
            scale=plan.scale,
            max_steps=steps,
            run_dir=str(out_root / "runs" / name),
            checkpoint_every=max(1, steps // 2),
            log_every=max(1, steps // 40),
            init_from=str(run_dirs[init_run] / "encoder.safetensors") if init_run else None,
        ))
        run_dir = Path(train(cfg))
        run_dirs[name] = run_dir
        res = json.loads((run_dir / "results.json").read_text())
        write_record(records_dir, "pretrain", name,
                     params={"objective": objective, "model": model, "steps": steps, "profile": profile,
                             "init_from": init_run},
                     metrics={k: res.get(k) for k in ("first_loss", "final_loss", "final_loss_mean_last_10pct",
                                                       "throughput_audio_s_per_s", "wall_time_s", "loss_curve",
                                                       "num_params", "peak_memory_bytes")},
                     config=res.get("config"), artifacts={"run_dir": str(run_dir)})
        print(f"[demo]   {name}: loss {res['first_loss']:.3f} -> {res['final_loss_mean_last_10pct']:.3f} "
              f"(mean of the last 10% of steps) "
              f"({res['throughput_audio_s_per_s']:.0f} s audio/s)", flush=True)

    print("[demo] 3/4 figures from the results records ...", flush=True)
    fig = plot_pretrain_losses(read_records(records_dir, kind="pretrain"),
                               Path(figures_dir) / f"demo_pretrain_loss_{profile}.png",
                               title=f"Pretraining on MiniStew ({profile}), {model}")
    print(f"[demo]   wrote {fig}")

    print("[demo] 4/4 not run by the demo yet:")
    for item in NOT_YET:
        print(f"[demo]   - {item}")
    print(f"[demo] done in {time.time() - t0:.0f} s; records in {records_dir}")
    return 0
