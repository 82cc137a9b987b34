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


def test_avg_says_how_many_subsets_it_rests_on():
    from genprm.cli.tables import print_processbench
    from genprm.evaluation.processbench import ProcessBenchSample, compute_results
    from genprm.io import validate_record

    def sample(subset, label, i):
        return ProcessBenchSample(subset, label, validate_record({"problem": f"{subset}{i}", "steps": ["a", "b"]}, position=i))

    # gsm8k has an erroneous and a correct sample (an F1); math only erroneous ones (no F1)
    samples = [sample("gsm8k", 1, 0), sample("gsm8k", -1, 1), sample("math", 1, 2)]
    matrices = {s.item.key: [[0.9], [0.2]] for s in samples}
    results = compute_results(samples, matrices, model="m", n=1, threshold=0.5, settings="k")
    assert results.averaged_subsets("Pass@1") == ["gsm8k"]
    assert results.to_json()["average_of"] == {"Pass@1": ["gsm8k"]}
    out = StringIO()
    print_processbench(Console(file=out, width=200, force_terminal=False), results)
    text = out.getvalue()
    assert "of 1/2" in text and "mean over the k subsets with an F1" in text
