"""A static HTML report of an evaluation run: figures, plots, and every step of every sample."""

from genprm.report.render import write_report
from genprm.report.run import RunResults, load_run

__all__ = ["RunResults", "load_run", "write_report"]
