"""Metric keys, defined once: Tune, the schedulers and MLflow all use these names."""

TRAIN_LOSS = "train/loss"  # weighted total: reconstruction terms + beta * KL
# The training terms are sums over one image's pixels (vae.losses), averaged over the epoch's
# images: "_sum" keeps them apart from val/mse, a per-pixel mean. A term whose weight is 0 is
# not reported (it would be a flat 0), except mse_sum, which is always computed (no gradient).
TRAIN_MSE = "train/mse_sum"
TRAIN_BCE = "train/bce_sum"
TRAIN_FFT = "train/fft_sum"
TRAIN_KL = "train/kl"
TRAIN_IMAGES_PER_S = "train/images_per_s"
TRAIN_EPOCH_TIME_S = "train/epoch_time_s"

VAL_LOSS = "val/loss"
VAL_MSE = "val/mse"  # plain per-pixel MSE on held-out normal patches: comparable across mixes
VAL_KL = "val/kl"
VAL_AUROC = "val/auroc"  # normal vs synthetic-defect patches (the objective without labels)
# Real defects of held-out defective strips vs those strips' clean patches (fabric-matched);
# only reported when the data set has labelled defects to hold out.
VAL_REAL_AUROC = "val/real_auroc"
# What ranks trials (search.objective: val/auroc, val/real_auroc or their mean).
VAL_OBJECTIVE = "val/objective"
# With score.select = "best" or "best_per_patch": how many scorers were compared, which won
# (index into vae.score.scorers.NAMES), and every scorer's AUROC as "val/auroc_by_scorer/<name>".
VAL_SCORERS_COMPARED = "val/scorers_compared"
VAL_SCORER_INDEX = "val/scorer_index"
VAL_AUROC_BY_SCORER = "val/auroc_by_scorer"
VAL_REAL_AUROC_BY_SCORER = "val/real_auroc_by_scorer"

# What the trial's process used over the epoch (vae.resources); "system/" is the prefix MLflow's
# UI shows as system metrics. CPU: cores kept busy, and as a share of the cores Ray granted
# (not MLflow's own host-wide system/cpu_utilization_percentage: a different figure, so a
# different name). Megabytes are 10^6 bytes, as MLflow's system metrics count them.
SYSTEM_CPU_CORES = "system/cpu_cores_used"
SYSTEM_CPU_PERCENT = "system/granted_cpu_utilization_percentage"
SYSTEM_MEMORY_PEAK_MB = "system/memory_peak_megabytes"
SYSTEM_GPU_MEMORY_PEAK_MB = "system/gpu_memory_peak_megabytes"  # this trial's tensors (torch)
SYSTEM_GPU_PERCENT = "system/gpu_utilization_percentage"  # the whole device (NVML), averaged

EPOCH = "epoch"
OBJECTIVE, OBJECTIVE_MODE = VAL_OBJECTIVE, "max"
