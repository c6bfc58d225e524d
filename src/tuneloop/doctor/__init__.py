"""The doctor: read a run's curves and task metric, say what is wrong, recommend the next configuration."""

from tuneloop.doctor.diagnose import Diagnosis, Finding, diagnose_metrics, diagnose_path
from tuneloop.doctor.recommend import Recommendation, recommend


def diagnose_run(path) -> Diagnosis:
    """diagnose_path then recommend: the verdict, the findings and the next config of a run."""
    diagnosis, config = diagnose_path(path)
    return recommend(diagnosis, config)


__all__ = ["Diagnosis", "Finding", "Recommendation", "diagnose_metrics", "diagnose_path", "diagnose_run", "recommend"]
