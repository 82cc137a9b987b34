"""Reading inputs and writing results: JSON/JSONL in, JSONL out, resumable."""

from genprm.io.inputs import SolutionInput, count_records, read_solutions, validate_record
from genprm.io.outputs import ResultWriter

__all__ = ["ResultWriter", "SolutionInput", "count_records", "read_solutions", "validate_record"]
