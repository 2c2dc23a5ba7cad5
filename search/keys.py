"""Result keys the search adds to the metric keys of ``vae.keys`` (light: no Ray, no torch)."""

NONFINITE = "nonfinite"  # 1 on the single report of a trial stopped for NaN/inf, else 0
RESUMED_FROM = "resumed_from_epoch"  # epochs restored from the checkpoint this run started from
