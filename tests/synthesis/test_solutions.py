"""Stage 1 without a model: step splitting, validity, balancing, easy/hard flags and MC(s_1)."""

from __future__ import annotations

from genprm.engines.base import Generation
from genprm.protocol.synthesis import split_steps, strip_step_prefix
from genprm.synthesis.solutions import Draw, SolutionSettings, draw_of, needs_more, select


def gen(text: str, finish: str = "eos") -> Generation:
    return Generation(text, finish, None, 10, len(text))  # type: ignore[arg-type]


def draw(answer: int, correct: bool, *, valid: bool = True, steps: int = 2) -> Draw:
    body = "".join(f"x{i}\nStep {i + 2}: " for i in range(steps - 1)) + f"answer {answer}"
    return Draw(body, "eos", 5, valid, correct, str(answer))


def test_a_response_splits_into_steps_that_keep_their_labels():
    steps = split_steps("Half of 48 is 24.\n\nStep 2: 48 + 24 = 72.\nStep 3: The answer is 72.\n")
    assert steps == ["Step 1: Half of 48 is 24.", "Step 2: 48 + 24 = 72.", "Step 3: The answer is 72."]
    assert strip_step_prefix(steps[1]) == "48 + 24 = 72."


def test_invalid_when_cut_by_the_budget_or_a_single_step():
    assert draw_of(gen("a\nStep 2: b")).valid
    assert not draw_of(gen("a\nStep 2: b", finish="length")).valid
    assert not draw_of(gen("the answer is 72")).valid


def test_balancing_keeps_half_correct_half_wrong():
    settings = SolutionSettings(num_paths=4)
    rounds = [[draw(i, i % 2 == 0) for i in range(10)]]
    chosen = select("p", rounds, settings)
    assert chosen.flag == "medium"
    assert sum(s.correct for s in chosen.solutions) == 2 and len(chosen.solutions) == 4
    assert chosen.mc_s1 == 0.5
    assert select("p", rounds, settings) == chosen  # deterministic
    assert len({s.key for s in chosen.solutions}) == 4


def test_the_larger_half_fills_in_when_the_other_is_short():
    settings = SolutionSettings(num_paths=4)
    rounds = [[draw(1, True), draw(2, False), draw(3, False), draw(4, False), draw(5, False)]]
    chosen = select("p", rounds, settings)
    assert len(chosen.solutions) == 4 and sum(s.correct for s in chosen.solutions) == 1


def test_duplicates_count_once_for_the_selection_but_all_for_mc_s1():
    settings = SolutionSettings(num_paths=4)
    rounds = [[draw(1, True)] * 6 + [draw(2, False), draw(3, False)]]
    chosen = select("p", rounds, settings)
    assert [s.correct for s in chosen.solutions].count(True) == 1
    assert len(chosen.solutions) == 3
    assert chosen.mc_s1 == 6 / 8


def test_easy_and_hard_problems_are_flagged_and_keep_nothing():
    settings = SolutionSettings(num_paths=2)
    easy = select("p", [[draw(1, True), draw(1, True), draw(9, False, valid=False)]], settings)
    hard = select("p", [[draw(i, False) for i in range(3)]], settings)
    assert (easy.flag, easy.solutions, easy.mc_s1) == ("easy", [], 1.0)
    assert (hard.flag, hard.solutions, hard.mc_s1) == ("hard", [], 0.0)
    assert select("p", [[draw(1, True, valid=False)]], settings).mc_s1 is None


def test_invalid_draws_never_enter_the_selection_or_mc_s1():
    settings = SolutionSettings(num_paths=2)
    rounds = [[draw(1, True), draw(2, False, valid=False), draw(3, False)]]
    chosen = select("p", rounds, settings)
    assert chosen.valid == 2 and chosen.mc_s1 == 0.5
    assert all(s.draw != "0:1" for s in chosen.solutions)


def test_more_rounds_while_a_half_is_short_up_to_num_try():
    settings = SolutionSettings(num_paths=4, num_try=2)
    short = [[draw(1, True), draw(2, True), draw(3, False)]]
    assert needs_more(short, settings)
    assert needs_more(short * 2, settings)
    assert not needs_more(short * 3, settings)  # round 0 plus 2 extra rounds
    enough = [[draw(1, True), draw(2, True), draw(3, False), draw(4, False)]]
    assert not needs_more(enough, settings)
    assert not needs_more(short, SolutionSettings(num_paths=4, num_try=0))
