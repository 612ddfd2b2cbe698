"""The keep rules' statistics, by hand: "simpler" measured on the syntax tree, the loss cap of simpler keeps,
the corrected repeated-CV t-test, the confirm step's test, and the options `start` refuses in one line."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import scipy.stats
from autoresearch import decide, keeprules, starting, tabular
from autoresearch.contract import Capabilities
from autoresearch.decide import UNPARSEABLE_SIZE, code_lines, code_size, paired_test
from autoresearch.runs import RunError
from conftest import FIXTURE_TASK

TRAIN = (FIXTURE_TASK / "train.py").read_text()


def scores_text(scores: list[float]) -> str:
    return ",".join(f"{s:.6f}" for s in scores)


# -- "simpler" by syntax nodes ---------------------------------------------------------------------------
def test_docstrings_comments_and_formatting_do_not_move_the_size():
    size = code_size(TRAIN)
    no_docstring = TRAIN[TRAIN.index('"""', 3) + 3 :]
    assert no_docstring.lstrip().startswith("import pandas")
    assert code_size(no_docstring) == size and code_lines(no_docstring) < code_lines(TRAIN)  # lines would move
    joined = TRAIN.replace("import pandas as pd\nfrom sklearn.impute", "import pandas as pd; from sklearn.impute")
    joined = joined.replace("C = 1.0  # inverse regularisation strength\nMAX_ITER", "C = 1.0; MAX_ITER")
    assert joined != TRAIN and code_size(joined) == size and code_lines(joined) < code_lines(TRAIN)
    commented = TRAIN.replace("def feature_fn", "# a comment\n# and another\ndef feature_fn")
    reflowed = TRAIN.replace(
        "StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))",
        "StandardScaler(),\n        LogisticRegression(\n            C=C,\n"
        "            max_iter=MAX_ITER,\n        ),\n    )",
    )
    assert reflowed != TRAIN and code_size(commented) == code_size(reflowed) == size
    function_docstring = TRAIN.replace(
        "def feature_fn(df: pd.DataFrame) -> pd.DataFrame:\n",
        'def feature_fn(df: pd.DataFrame) -> pd.DataFrame:\n    """Row-wise features."""\n',
    )
    assert code_size(function_docstring) == size
    hypothesis = TRAIN.replace("on the raw features", "")  # the declared hypothesis is one constant, any length
    assert code_size(hypothesis) == size


def test_deleting_code_makes_it_smaller_and_unparseable_source_never_wins():
    inlined = TRAIN.replace("MAX_ITER = 1000\n", "").replace("max_iter=MAX_ITER", "max_iter=1000")
    assert code_size(inlined) == code_size(TRAIN) - 3  # an assignment: its target, its value and itself
    assert code_size("x = 1\n") == 4 and code_size('"""doc"""\nx = 1\n') == 4  # the module counts too
    assert code_size("def broken(:\n") == UNPARSEABLE_SIZE == code_size("x = 1\0")
    decision = decide.decide([0.8, 0.9], [0.8, 0.9], True, code_size("def broken(:"), code_size(TRAIN))
    assert not decision.keep


def test_the_reason_names_syntax_nodes():
    decision = decide.decide([0.8, 0.9, 0.7], [0.8, 0.9, 0.7], True, 380, 412)
    assert decision.keep and decision.simpler
    assert decision.reason == "equal within noise and simpler (412 -> 380 syntax nodes)"


# -- the loss cap ------------------------------------------------------------------------------------------
BEST_EVER = [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.80]
NOISE_1 = [0.01 * s for s in (1, -1, 1, -1, 1, -1, 1, -1)]  # orthogonal, zero-mean patterns of fold noise
NOISE_2 = [0.01 * s for s in (1, 1, -1, -1, 1, 1, -1, -1)]


def chain(cv_folds: int | None = None) -> tuple[list[float], list[float]]:
    """Two simpler keeps in a row, each 0.9 se (of its own paired difference, as the rule measures it) below
    the best it replaces: within noise each time, 0.9 x 2 / sqrt(2) = 1.27 se below the first in all."""
    se_step = paired_test([b + e for b, e in zip(BEST_EVER, NOISE_1, strict=True)], BEST_EVER, True, cv_folds)[1]
    step = 0.9 * se_step
    first = [b - step + e for b, e in zip(BEST_EVER, NOISE_1, strict=True)]
    second = [c - step + e for c, e in zip(first, NOISE_2, strict=True)]
    return first, second


@pytest.mark.parametrize("rule_name", ["paired", "corrected"])
def test_the_loss_cap_stops_a_chain_of_simpler_keeps(rule_name):
    rule = keeprules.rule_named(rule_name, cv_folds=5)
    first, second = chain()  # both rules measure "within noise" by the plain paired se
    baseline = {"status": "keep", "fold_scores": scores_text(BEST_EVER)}
    step1 = rule.judge(first, BEST_EVER, higher_is_better=True, history=[baseline], candidate_size=90, best_size=100)
    assert step1.keep and step1.simpler
    rows = [baseline, {"status": "keep", "fold_scores": scores_text(first)}]
    # The second step is within noise of the best it would replace: alone, it would be kept.
    delta, se, _ = paired_test(second, first, True)
    assert -delta <= decide.SIMPLER_TOLERANCE_SE * se
    alone = rule.judge(second, first, higher_is_better=True, history=rows[1:], candidate_size=80, best_size=90)
    assert alone.keep
    # Against the best score ever kept it has lost more than the cap: not kept.
    step2 = rule.judge(second, first, higher_is_better=True, history=rows, candidate_size=80, best_size=90)
    assert not step2.keep and "below the best score kept in this run" in step2.reason
    assert "simpler (90 -> 80 syntax nodes)" in step2.reason


def test_the_corrected_rule_is_stricter_on_gains_and_no_laxer_on_simpler_losses():
    """The correction widens the se by sqrt(1 + J/(k-1)) (2.7x on 5x5, 1.7x on these 8 folds): used for "equal
    within noise" too, it would keep a simpler edit 1.5 plain se worse. Judged by the plain se, it is not kept."""
    step = 1.5 * paired_test([b + e for b, e in zip(BEST_EVER, NOISE_1, strict=True)], BEST_EVER, True)[1]
    worse = [b - step + e for b, e in zip(BEST_EVER, NOISE_1, strict=True)]
    corrected_se = paired_test(worse, BEST_EVER, True, 5)[1]
    assert step < corrected_se  # within one corrected se: the laxer tolerance would have kept it
    rule = keeprules.rule_named("corrected", cv_folds=5)
    judged = rule.judge(worse, BEST_EVER, higher_is_better=True, history=[], candidate_size=80, best_size=100)
    assert not judged.keep


def test_the_loss_cap_minds_the_direction_and_ignores_other_rows():
    first, second = chain()
    flip = [-s for s in BEST_EVER], [-s for s in first], [-s for s in second]
    rows = [
        {"status": "keep", "fold_scores": scores_text(flip[0])},
        {"status": "discard", "fold_scores": scores_text([-1.0] * 8)},  # not kept: not the best ever
        {"status": "keep", "fold_scores": scores_text([-1.0] * 4)},  # other folds
        {"status": "crash", "fold_scores": ""},
        {"status": "keep", "fold_scores": scores_text(flip[1])},
    ]
    assert keeprules.best_ever(rows, higher_is_better=False, n_scores=8) == pytest.approx(flip[0])
    rule = keeprules.rule_named("paired")
    step2 = rule.judge(flip[2], flip[1], higher_is_better=False, history=rows, candidate_size=80, best_size=90)
    assert not step2.keep and "below the best score kept" in step2.reason
    assert keeprules.best_ever([], higher_is_better=True) is None


def test_the_rerun_rule_caps_simpler_keeps_too():
    rule = keeprules.rule_named("rerun")
    history = [{"status": "keep", "fold_scores": "2.40,2.42,2.41"}, {"status": "keep", "fold_scores": "2.42"}]
    args = dict(higher_is_better=False, history=history, candidate_size=80, best_size=90)
    near_best = rule.judge([2.42], [2.42], **args)  # equal to the current best, 1 se above the best ever
    assert near_best.keep and near_best.simpler
    drifted = rule.judge([2.43], [2.42], **args)  # within noise of the current best, beyond the cap
    assert not drifted.keep and "below the best score kept" in drifted.reason


# -- the corrected repeated-CV t-test ----------------------------------------------------------------------
def test_corrected_t_by_hand():
    best = [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.80, 0.84, 0.77]
    diffs = [0.01, 0.03] * 5  # mean 0.02; s^2 = 10 x 0.01^2 / 9
    candidate = [b + d for b, d in zip(best, diffs, strict=True)]
    s2 = 10 * 0.01**2 / 9
    se = math.sqrt((1 / 10 + 1 / (5 - 1)) * s2)  # J = 10 fold differences of a 5-fold CV, repeated twice
    assert se == pytest.approx(0.006236, abs=1e-6)
    delta, got_se, p = decide.paired_test(candidate, best, True, cv_folds=5)
    assert delta == pytest.approx(0.02) and got_se == pytest.approx(se)
    assert p == pytest.approx(scipy.stats.t.sf(0.02 / se, df=9))
    assert p == pytest.approx(0.005354, abs=1e-6)
    _, plain_se, plain_p = paired_test(candidate, best, True)
    assert plain_se == pytest.approx(math.sqrt(s2 / 10)) and plain_p < p
    lower = decide.paired_test([-c for c in candidate], [-b for b in best], False, cv_folds=5)
    assert lower[2] == pytest.approx(p)
    with pytest.raises(ValueError):
        decide.paired_test(candidate, best, True, cv_folds=1)


def test_a_gain_the_paired_t_keeps_the_corrected_t_does_not():
    best = [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.80, 0.84, 0.77]
    a = 0.01
    mean = 2.5 * a / 3  # plain t = 2.5 on 9 df (p = 0.017); corrected t = 2.5 x sqrt(0.1 / 0.35) = 1.34
    candidate = [b + mean + (a if i % 2 else -a) for i, b in enumerate(best)]
    args = dict(higher_is_better=True, history=[], candidate_size=100, best_size=100)
    paired = keeprules.rule_named("paired", cv_folds=5).judge(candidate, best, **args)
    corrected = keeprules.rule_named("corrected", cv_folds=5).judge(candidate, best, **args)
    assert paired.keep and paired.p_value == pytest.approx(scipy.stats.t.sf(2.5, 9))
    assert not corrected.keep and corrected.p_value == pytest.approx(scipy.stats.t.sf(2.5 * math.sqrt(0.1 / 0.35), 9))
    assert corrected.reason.startswith("gain within noise")
    k2 = keeprules.rule_named("corrected", cv_folds=2).judge(candidate, best, **args)
    assert k2.se == pytest.approx(math.sqrt((1 / 10 + 1) * (10 * a * a / 9)))  # 2-fold: n_test = n_train


def test_rules_by_name_and_the_default_folds():
    assert keeprules.DEFAULT_CV_FOLDS == tabular.N_FOLDS
    corrected = keeprules.rule_named("corrected", cv_folds=5)
    assert isinstance(corrected, keeprules.CorrectedFolds) and corrected.correction() == 5
    assert keeprules.rule_named("corrected").correction() == keeprules.DEFAULT_CV_FOLDS
    assert keeprules.rule_named("paired", cv_folds=5).correction() is None
    assert isinstance(keeprules.rule_named("rerun", cv_folds=5), keeprules.RunToRun)
    assert {name for name, rule in keeprules.RULES.items() if rule.can_confirm} == {"paired", "corrected"}


# -- the confirm step's test ------------------------------------------------------------------------------
def test_confirm_is_the_screens_beyond_noise_test_without_the_simpler_branch():
    best = [0.80, 0.82, 0.78, 0.85, 0.81, 0.79, 0.83, 0.80]
    for name in ("paired", "corrected"):
        rule = keeprules.rule_named(name, cv_folds=2)
        clear = [b + 0.05 + 0.001 * i for i, b in enumerate(best)]
        kept = rule.confirm(clear, best, higher_is_better=True)
        screened = rule.judge(clear, best, higher_is_better=True, history=[], candidate_size=9, best_size=9)
        assert kept.keep and kept.p_value == pytest.approx(screened.p_value)
        same = rule.confirm(best, best, higher_is_better=True)
        assert not same.keep and same.p_value == 1.0 and same.reason == "not better"
    with pytest.raises(NotImplementedError):
        keeprules.rule_named("rerun").confirm([2.3], [2.4], higher_is_better=False)


# -- what start refuses --------------------------------------------------------------------------------------
TASK = SimpleNamespace(prepare_rel="tasks/x/prepare.py")
LM_LIKE = Capabilities("lm", "rerun", False, False, True, True, {"cpu": "cpu"}, ("cpu",))


def test_start_options_the_harness_cannot_do_are_refused_in_one_line():
    for keep_rule, confirm, fault in [
        ("corrected", None, "--keep-rule corrected compares scores fold by fold"),
        ("paired", None, "--keep-rule paired compares scores fold by fold"),
        (None, True, "--confirm rescores a kept gain on fresh folds"),
        ("bayes", None, "--keep-rule: keep rule 'bayes' is not one of"),
    ]:
        with pytest.raises(RunError, match=fault) as caught:
            starting.check_capabilities(TASK, LM_LIKE, None, keep_rule, confirm)
        assert "\n" not in str(caught.value)
    assert starting.check_capabilities(TASK, LM_LIKE, None)[1] is False  # the default, where it cannot confirm
    rule, confirm = starting.check_capabilities(TASK, tabular.CAPABILITIES, None, "corrected", True)
    assert rule.name == "corrected" and confirm is True
    with pytest.raises(RunError, match="declares no --seed"):
        starting.check_capabilities(TASK, tabular.CAPABILITIES, None, "rerun")
    with pytest.raises(RunError, match="keep rule rerun has no confirm step"):
        no_seed = Capabilities("tabular", "paired", True, True, False, True, {"cpu": "wall"}, ("cpu",))
        starting.check_capabilities(TASK, no_seed, None, "rerun", True)
    default = starting.check_capabilities(TASK, tabular.CAPABILITIES, None)
    assert default[0].name == tabular.KEEP_RULE == "corrected" and default[1] is keeprules.DEFAULT_CONFIRM


# -- the confirm step's verdicts in the loop -------------------------------------------------------------------
def scored(value: float, scores: list[float]):
    from autoresearch.contract import Block
    from autoresearch.harness import HarnessRun

    fields = {"status": "ok", "metric": "val_auc", "val_auc": f"{value:.6f}", "fold_scores": scores_text(scores)}
    return HarnessRun(Block(fields), 1.0, "")


def test_a_failure_while_confirming_is_the_harness_s_unless_the_candidate_failed():
    from autoresearch.contract import Block
    from autoresearch.harness import HarnessRun
    from autoresearch.loop import Confirmation, _confirmed

    screen = decide.decide([0.9, 0.91, 0.92], [0.8, 0.8, 0.8], True, 10, 10)
    assert screen.keep and not screen.simpler
    broken = HarnessRun(Block(), 3.0, "the harness exited with code 2 and printed no summary block")
    crashed = HarnessRun(Block.crash("MemoryError"), 3.0, "")
    fine = scored(0.8, [0.8, 0.8, 0.8])
    assert Confirmation(1001, broken, None, None).harness_error.startswith("the harness exited")
    assert Confirmation(1001, fine, broken, None).harness_error.startswith("the harness exited")
    assert "the best's train.py did not score" in Confirmation(1001, fine, crashed, None).harness_error
    own = Confirmation(1001, crashed, None, None)
    assert own.harness_error == ""  # the candidate's own failure there: discarded, not a harness failure
    assert _confirmed(screen, own) == (
        "discard",
        f"beyond noise on the ratchet's folds (p={screen.p_value:.3f}) but it failed on fresh folds (seed 1001): "
        "MemoryError",
    )
    better = scored(0.9, [0.9, 0.91, 0.92])
    passed = Confirmation(1002, better, fine, decide.beyond_noise([0.9, 0.91, 0.92], [0.8, 0.8, 0.8], True))
    assert _confirmed(screen, passed)[0] == "keep" and passed.seconds == 2.0
    assert passed.record("val_auc")["candidate"] == {"val_auc": 0.9, "fold_scores": [0.9, 0.91, 0.92]}
    assert "Autoresearch-Confirm-Seed: 1002\nAutoresearch-Confirm-Candidate: 0.900000" in passed.trailers()
