"""The idea audit against every planted cheat: the supervisor's pure decision on each proposed idea.

Cheats meant for the audit are rejected before anything runs, under the rule they break. The
others are cleared on purpose: they hide from a text audit, and test_runs.py shows the checks
that catch them at run time. Honest ideas are cleared.
"""

from __future__ import annotations

import pytest

from services.supervisor.domain import decide_ideas
from shared.contracts import IdeaCleared, IdeaRejected, IdeasProposed
from tests.cheats.catalogue import CHEATS, HONEST, Case, Cheat
from tests.cheats.harness import CAMPAIGN, Paper, open_paper

PAPERS: dict[tuple[str, str], Paper] = {}


def paper_for(case: Case) -> Paper:
    rules = case.rules if isinstance(case, Cheat) else None
    key = (case.paper, repr(rules))
    if key not in PAPERS:
        PAPERS[key] = open_paper(case.folder, rules=rules)
    return PAPERS[key]


def audit(case: Case) -> IdeaCleared | IdeaRejected:
    proposed = IdeasProposed(campaign=CAMPAIGN, ideas=[case.idea()], brain="planted-cheats", round=1)
    [decision] = decide_ideas(paper_for(case).state, proposed)
    assert isinstance(decision, IdeaCleared | IdeaRejected)
    return decision


def test_the_suite_plants_at_least_twelve_distinct_cheats_across_every_red_line() -> None:
    assert len({cheat.name for cheat in CHEATS}) == len(CHEATS) >= 12
    assert {"R1", "R2", "R3", "R4", "R5", "R6", "R7"} <= {cheat.rule for cheat in CHEATS}
    assert {cheat.stage for cheat in CHEATS} == {"audit", "result", "verification"}


@pytest.mark.parametrize("cheat", [c for c in CHEATS if c.stage == "audit"], ids=lambda c: c.name)
def test_a_cheat_the_audit_can_read_is_rejected_before_it_runs(cheat: Cheat) -> None:
    decision = audit(cheat)
    assert isinstance(decision, IdeaRejected), f"{cheat.name} was cleared"
    assert decision.rule == cheat.rule, decision.evidence
    # The evidence says what was found: the paths, lines, values or pattern that broke the rule.
    assert decision.evidence and set(decision.evidence) & {"paths", "lines", "params", "inadmissible", "pattern"}


@pytest.mark.parametrize("cheat", [c for c in CHEATS if c.stage != "audit"], ids=lambda c: c.name)
def test_a_cheat_hidden_from_the_text_audit_is_cleared_and_left_to_the_run_time_checks(cheat: Cheat) -> None:
    decision = audit(cheat)
    assert isinstance(decision, IdeaCleared), decision.evidence  # type: ignore[union-attr]


@pytest.mark.parametrize("case", HONEST, ids=lambda c: c.name)
def test_an_honest_idea_is_cleared(case: Case) -> None:
    assert isinstance(audit(case), IdeaCleared)


def test_every_cheat_patch_is_a_real_diff_of_the_current_example() -> None:
    # A cheat whose snippet vanished from the example fails here rather than passing for the wrong reason.
    for case in [*CHEATS, *HONEST]:
        idea = case.idea()
        assert (idea.patch is None) == (not case.edits), case.name
        if idea.patch:
            assert idea.patch.startswith("diff --git a/"), case.name
