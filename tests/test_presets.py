"""Presets: the paper preset is the TrainConfig defaults (the authors' setting), a preset is data merged field by
field, and the values a run uses are the ones recorded."""
from __future__ import annotations

import json

import pytest

from audiolp.train.config import TrainConfig, preset_names
from audiolp.train.data import objective_config_for


def test_paper_preset_is_the_defaults():
    assert {"paper", "demo_cpu"} <= set(preset_names())
    diff = TrainConfig.from_preset("paper").diff(TrainConfig())
    # The objective's section is written out in the preset; its values are the config classes' defaults (below).
    assert {k: v for k, v in diff.items() if not k.startswith("objective_config")} == {"preset": ("paper", None)}
    for objective in ("contrastive", "captioning", "tagging"):
        cfg = TrainConfig.from_preset("paper", {"objective": objective})
        from audiolp.objectives import objective_config_class

        cls = objective_config_class(objective)
        # The preset's per-objective values are the objective configs' own defaults.
        assert cls(**cfg.objective_config) == cls(), objective


def test_paper_preset_holds_the_authors_settings():
    cfg = TrainConfig.from_preset("paper", {"objective": "contrastive"})
    oc = objective_config_for(cfg)
    assert cfg.model == "zipformer_m" and cfg.scale_unit == "captions"
    assert cfg.model_overrides == {"regularizers": True, "activation_constraints": True}
    assert oc["text_model"] == "bert-base-uncased" and oc["max_text_tokens"] == 30 and oc["text_pooling"] == "cls"
    assert oc["proj_dim"] == 1024 and oc["temperature"] == 0.07 and oc["text_lr_scale"] == 1.0
    from audiolp.objectives import ContrastiveConfig

    assert ContrastiveConfig().audio_pooling == "frame_proj_mean"  # project each frame, then the masked mean
    assert cfg.optim.name == "scaled_adam" and cfg.optim.base_lr == 0.045 and cfg.optim.eden_schedule == "step"
    assert (cfg.loader.max_duration, cfg.loader.min_clip_seconds, cfg.loader.max_clip_seconds) == (600.0, 1.0, 60.0)
    assert cfg.loader.spec_augment_config.time_warp_factor == 80
    cap = objective_config_for(TrainConfig.from_preset("paper", {"objective": "captioning"}))
    assert cap["tokenizer"] == "facebook/bart-base" and cap["max_caption_tokens"] == 128
    assert cap["clean_captions"] is True and cap["parallel_prob"] == 0.75
    assert TrainConfig().encoder_config().regularizers is True


def test_presets_merge_field_by_field_and_record_their_name(tmp_path):
    demo = TrainConfig.from_preset("demo_cpu", {"objective": "captioning", "loader": {"max_duration": 30.0},
                                                "objective_config": {"num_layers": 1}})
    assert demo.preset == "demo_cpu" and demo.model == "zipformer_tiny" and demo.text_model == "minilm"
    assert demo.loader.max_duration == 30.0 and demo.loader.num_buckets == 10  # the rest of the section stays
    assert demo.objective_config["num_layers"] == 1 and demo.objective_config["d_model"] == 256
    assert demo.model_overrides == {"regularizers": False, "activation_constraints": False}
    # A JSON file is a preset too; "_comment" keys are notes.
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"_comment": "x", "model": "zipformer_s", "optim": {"lr": 0.02}}))
    mine = TrainConfig.from_preset(custom)
    assert mine.model == "zipformer_s" and mine.optim.lr == 0.02 and mine.optim.name == "scaled_adam"
    assert mine.preset == str(custom)
    with pytest.raises(ValueError, match=r"unknown field 'loader.max_durationn'.*max_duration"):
        TrainConfig.from_preset("demo_cpu", {"loader": {"max_durationn": 1}})
    with pytest.raises(ValueError, match=r"unknown preset 'nope'.*demo_cpu"):
        TrainConfig.from_preset("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        TrainConfig.from_preset(bad)


def test_old_configs_with_a_top_level_label_set_still_load():
    cfg = TrainConfig.from_dict({"objective": "tagging", "label_set": ["a", "b"]})
    assert cfg.objective_config == {"label_set": ["a", "b"]}


def test_overrides_may_set_each_objectives_section():
    over = {"objective_configs": {"contrastive": {"text_cache_size": 100}, "captioning": {"num_layers": 1}}}
    con = TrainConfig.from_preset("demo_cpu", {**over, "objective": "contrastive"})
    cap = TrainConfig.from_preset("demo_cpu", {**over, "objective": "captioning"})
    assert con.objective_config["text_cache_size"] == 100 and con.objective_config["proj_dim"] == 256
    assert cap.objective_config["num_layers"] == 1 and "text_cache_size" not in cap.objective_config
