"""Reading inputs and writing results: JSON/JSONL in, JSONL out, resumable."""

from genprm.io.inputs import SolutionInput, count_records, read_objects, read_solutions, validate_record
from genprm.io.outputs import ResultWriter, write_json_atomic

__all__ = [
    "ResultWriter",
    "SolutionInput",
    "count_records",
    "read_objects",
    "read_solutions",
    "validate_record",
    "write_json_atomic",
]
