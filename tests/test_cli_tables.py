"""Tables printed to a log or a pipe keep their titles on one line, however narrow the table."""

from io import StringIO

from rich.console import Console
from rich.table import Table

from genprm.cli.common import print_table


def test_a_narrow_table_does_not_wrap_its_title_or_caption():
    out = StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    table = Table()
    table.add_column("k")
    table.add_row("1")
    title = "ProcessBench F1 — qwen2.5-coder-1.5b-instruct.gguf, threshold 0.5"
    caption = "cell: F1 (acc. on erroneous / acc. on correct, n = erroneous + correct samples)"
    print_table(console, table, title, caption)
    lines = out.getvalue().splitlines()
    assert lines[0] == title
    assert lines[-1] == caption
    assert any(line.strip("│ ") == "1" for line in lines)
