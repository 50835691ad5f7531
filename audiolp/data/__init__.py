"""Data layer: the CaptionStew schema on lhotse, source adapters, the stew builder, scale subsets, loading."""
from audiolp.data.schema import (  # noqa: F401
    DOMAINS,
    SAMPLING_RATE,
    cut_captions,
    cut_domain,
    cut_labels,
    cut_source,
    load_manifest,
    make_caption_cut,
    save_manifest,
)
