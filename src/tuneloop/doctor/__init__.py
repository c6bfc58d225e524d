"""The doctor: read a run's loss curves, say what is wrong, recommend the next configuration."""

from tuneloop.doctor.diagnose import Diagnosis, Finding, diagnose_metrics, diagnose_path
from tuneloop.doctor.recommend import Recommendation, recommend

__all__ = ["Diagnosis", "Finding", "Recommendation", "diagnose_metrics", "diagnose_path", "recommend"]
