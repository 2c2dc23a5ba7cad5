"""MLflow tracking of aitexvae searches: parent/child runs, artifacts, the champion, ``pull``.

Never imports Ray (the Ray-side glue is ``search/mlflow_callback.py``). This package's own
import is light; MLflow is imported by the modules that talk to it.
"""

from tracking.settings import TrackingSettings, next_step_lines, next_steps

__all__ = ["TrackingSettings", "next_step_lines", "next_steps"]
