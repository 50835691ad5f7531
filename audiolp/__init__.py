"""audiolp: audio-language pretraining for general-purpose audio representations.

Flow (one way): data -> features -> models -> objectives -> train -> eval -> study.
"""
__version__ = "0.1.0"


def load_encoder(run_dir, **kwargs):
    """Frozen encoder of a pretraining run (see :func:`audiolp.models.io.load_encoder`); a run dir without
    encoder_config.json has its encoder rebuilt from the run's config.json."""
    from pathlib import Path

    from audiolp.models.io import ENCODER_CONFIG
    from audiolp.models.io import load_encoder as _load

    run_dir = Path(run_dir)
    if "encoder_config" not in kwargs and not (run_dir / ENCODER_CONFIG).exists() and (run_dir / "config.json").exists():
        from audiolp.train.config import TrainConfig

        kwargs["encoder_config"] = TrainConfig.load(run_dir / "config.json").encoder_config()
    return _load(run_dir, **kwargs)
