"""Tracking settings, the run/tag names shared by the writer and the readers, and user hints.

Light on purpose (no MLflow import): the CLI builds ``TrackingSettings`` and prints
``next_steps`` without paying for MLflow's import.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import subprocess
import urllib.parse
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "aitexvae"
DEFAULT_MODEL_NAME = "aitex-vae"
CHAMPION_ALIAS = "champion"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION_ALIAS}"
ARTIFACTS_FOLDER = "mlartifacts"  # beside a SQLite database: the local artifact store

# Tags that find runs again after a restart (restore-safety) and say what happened to a trial.
TAG_ROLE = "aitexvae.role"  # "search" (parent) or "trial" (child)
TAG_SEARCH = "aitexvae.search"  # search name, on parent and children
TAG_SEARCH_ID = "aitexvae.search_id"  # unique per search; kept by a restored Tune callback
TAG_TRIAL_ID = "aitexvae.trial_id"
def best_metric(objective: str) -> str:
    """``val/objective`` → ``best/val_objective``: a child's best value so far (the parent: its
    champion's), a number the runs table sorts by."""
    return "best/" + objective.replace("/", "_")


# MLflow 3's UI shows an experiment as GenAI (an overview of traces and tokens) or as model
# training (runs, models, the registry). Where the UI has no GenAI/Model-training switch it takes
# the kind from this experiment tag. MLflow 3.17's UI has the switch, defaults it to GenAI in
# a new browser and ignores the tag (seen in screenshots of a fresh Chromium profile); only
# its ``workflowType`` query parameter changes the view, per address, so every address aitexvae
# prints carries ``UI_VIEW``.
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = {"workflowType": "machine_learning"}
TAG_STOP_REASON = "aitexvae.stop_reason"  # why a child (or the parent) did not run to its end
TAG_OUTCOME = "aitexvae.outcome"  # on every child: how it ended, in words
TAG_NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
TAG_BEST_OBJECTIVE = "aitexvae.best_objective"
TAG_BEST_EPOCH = "aitexvae.best_epoch"
TAG_LAST_EPOCH = "aitexvae.last_epoch"
TAG_NONFINITE = "aitexvae.nonfinite"  # "key=value at epoch N": the trial can never be the champion
TAG_SEARCH_SPACE = "aitexvae.search_space"
TAG_CODE_VERSION = "aitexvae.code_version"
TAG_DATASET = "aitexvae.dataset_fingerprint"
TAG_RAY_ADDRESS = "aitexvae.ray_address"
TAG_CHAMPION = "aitexvae.champion"  # on the parent: "models:/NAME/VERSION"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows children under it

BEST_CHECKPOINT_PATH = "checkpoints/best"  # artifact folder of a child's best checkpoint
PROBE_PATH = "probe"
SUMMARY_PATH = "summary"
SPACE_ARTIFACT = "search_space.yaml"  # on the parent: the resolved space, as a --space file
WEIGHTS_ARTIFACT = "weights"  # the pyfunc's artifact key and folder for the vae.save output


@dataclass(frozen=True)
class TrackingSettings:
    """Where and how a search is tracked."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    model_name: str = DEFAULT_MODEL_NAME  # registered model the champion is added to
    alias: str = CHAMPION_ALIAS
    register: bool = True
    probe_per_class: int = 4  # probe picture: this many normal + this many defect patches
    probe_seed: int = 0
    calibration_quantile: float = 0.99  # of normal validation scores: the reject threshold

    def __post_init__(self) -> None:
        for name in ("tracking_uri", "experiment", "model_name", "alias"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"tracking {name}={value!r} is invalid; allowed: a non-empty "
                                 "string")
        if isinstance(self.probe_per_class, bool) or not isinstance(self.probe_per_class, int) \
                or not 1 <= self.probe_per_class <= 16:
            raise ValueError(f"probe_per_class={self.probe_per_class!r} is invalid; allowed: an "
                             "integer in [1, 16]")
        if not isinstance(self.calibration_quantile, float | int) \
                or not math.isfinite(self.calibration_quantile) \
                or not 0.0 < self.calibration_quantile < 1.0:
            raise ValueError(f"calibration_quantile={self.calibration_quantile!r} is out of "
                             "range; allowed (0, 1)")

    def resolved(self) -> TrackingSettings:
        """The same settings with a relative SQLite path made absolute (printed commands work
        from any folder, and the store does not move if the driver changes directory)."""
        return dataclasses.replace(self, tracking_uri=absolute_uri(self.tracking_uri))


def check_search_name(name: object, label: str = "search name") -> str:
    """The one rule for a search's name (a folder under the storage path, and a value in MLflow
    filter strings): non-empty, no '/', not '.' or '..', no quotes or backticks."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") \
            or any(c in name for c in "'`\""):
        raise ValueError(f"{label}={name!r} is invalid; allowed: a non-empty folder name "
                         "without '/', quotes or backticks")
    return name


def absolute_uri(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:///:memory:"):
        path = Path(uri[len("sqlite:///"):])
        return f"sqlite:///{path.expanduser().resolve()}"
    return uri


def artifact_root(uri: str) -> str | None:
    """A local artifact folder beside a SQLite database; ``None`` lets a server decide."""
    if uri.startswith("sqlite:///"):
        return (Path(absolute_uri(uri)[len("sqlite:///"):]).parent / ARTIFACTS_FOLDER).as_uri()
    return None


def code_version() -> str:
    """Git commit of this checkout (``+dirty`` with uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        try:
            return metadata.version("aitexvae")
        except metadata.PackageNotFoundError:
            return "unknown"


def run_page(experiment_id: str, run_id: str) -> str:
    """The MLflow UI address (a fragment, after the UI's base URL) of one run."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{urllib.parse.urlencode(UI_VIEW)}"


def trials_page(experiment_id: str, search_name: str, objective: str,
                descending: bool = True) -> str:
    """The MLflow UI address (a fragment, after the UI's base URL) of one search's trials,
    best first: its children filtered by tag and sorted by their ``best/…`` metric."""
    query = urllib.parse.urlencode(
        {"searchFilter": f"tags.`{TAG_SEARCH}` = '{search_name}' and tags.`{TAG_ROLE}` = 'trial'",
         "orderByKey": f"metrics.`{best_metric(objective)}`",
         "orderByAsc": "false" if descending else "true", **UI_VIEW},
        quote_via=urllib.parse.quote)
    return f"#/experiments/{experiment_id}/runs?{query}"


def next_step_lines(tracking_uri: str = DEFAULT_TRACKING_URI,
                    model_name: str = DEFAULT_MODEL_NAME, alias: str = CHAMPION_ALIAS,
                    registered: bool = True, page: str = "") -> list[str]:
    """The commands to browse the search in the MLflow UI and to pull and use the champion;
    ``page``: the UI fragment to open (``trials_page``), else the UI's home."""
    uri = absolute_uri(tracking_uri)
    what = " (this search's trials, best first)" if page else ""
    if uri.startswith(("http://", "https://")):
        lines = [f"open {uri.rstrip('/')}/{page}   # the MLflow UI{what}, through an SSH tunnel "
                 "for a remote head node"]
    else:
        lines = [f"mlflow ui --backend-store-uri {shlex.quote(uri)} --port 5000   # then open "
                 f"http://127.0.0.1:5000/{page}{what}"]
    if registered:
        model_uri = f"models:/{model_name}@{alias}"
        folder = f"./{model_name}"
        lines += [f"aitexvae pull --model-uri {shlex.quote(model_uri)} --tracking-uri "
                  f"{shlex.quote(uri)} --out {folder}",
                  f"aitexvae score --model {folder} --data-root DATA --out scores   # or "
                  f"--model {model_uri}"]
    return lines


def next_steps(tracking_uri: str = DEFAULT_TRACKING_URI, model_name: str = DEFAULT_MODEL_NAME,
               alias: str = CHAMPION_ALIAS, registered: bool = True, page: str = "") -> str:
    """``next_step_lines`` as a block to print at the end of ``aitexvae tune``."""
    lines = next_step_lines(tracking_uri, model_name, alias, registered, page)
    return "\n".join(["Next steps:", *(f"  {line}" for line in lines)])
