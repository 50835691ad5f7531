"""audiolp: audio-language pretraining for general-purpose audio representations.

Flow (one way): data -> features -> models -> objectives -> train -> eval -> study.
"""
__version__ = "0.1.0"


def load_encoder(run_dir, **kwargs):
    """Frozen encoder of a pretraining run (see :func:`audiolp.models.io.load_encoder`)."""
    from audiolp.models.io import load_encoder as _load

    return _load(run_dir, **kwargs)
