"""The harness contract as code: the block's schema (writer and reader), keep rules as objects, and the
capabilities a harness declares and `start` records."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from autoresearch import contract, decide, keeprules, summary
from autoresearch.contract import Block, BlockError, Capabilities
from autoresearch.runs import RunConfig

ROOT = Path(__file__).resolve().parents[1]
RATCHET = ROOT / "scripts" / "ratchet.py"


def tabular_block(**changes) -> dict:
    """A block as tabular.evaluate returns it (values of their own types, or text the harness formatted)."""
    block = {
        "val_auc": 0.887013,
        "val_auc_se": 0.007242,
        "status": "ok",
        "train_seconds": "6.3",
        "total_seconds": "6.5",
        "peak_memory_mb": "71.7",
        "budget_seconds": 60.0,
        "n_folds": 25,
        "n_dev_rows": 242,
        "cv_seed": 0,
        "task": "heart",
        "metric": "val_auc",
        "direction": "higher",
        "fold_scores": [0.904682, 0.89899],
    }
    block.update(changes)
    return block


def lm_block(**changes) -> dict:
    block = {
        "val_bpb": 2.44,
        "val_bpb_se": 0.01,
        "status": "ok",
        "training_seconds": 59.8,
        "wall_seconds": 61.2,
        "cpu_seconds": 119.6,
        "total_seconds": 70.1,
        "tokens_per_second": 12000,
        "num_steps": 2800,
        "num_params": 800000,
        "mfu_percent": "nan",
        "peak_memory_mb": 900.5,
        "device": "cpu",
        "threads": 2,
        "clock": "cpu",
        "budget_seconds": 60.0,
        "timeout_seconds": 1380,
        "seed": 0,
        "val_bytes": 55000,
        "task": "shakespeare",
        "metric": "val_bpb",
        "direction": "lower",
        "keep_rule": "rerun",
        "fold_scores": [2.44],
    }
    block.update(changes)
    return block


# -- the schema ------------------------------------------------------------------------------------------
def test_every_key_says_its_type_family_and_meaning():
    for key in contract.KEYS:
        assert key.kind in ("float", "int", "text", "scores", "choice") and key.family in contract.FAMILIES
        assert key.meaning and (key.kind != "choice" or key.choices)
    names = [k.name for k in contract.KEYS]
    assert len(names) == len(set(names))


def test_render_prints_exactly_the_karpathy_block():
    """The writer checks, and prints what format_block always printed: aligned, greppable `key: value` lines."""
    for block, family in ((tabular_block(), "tabular"), (lm_block(), "lm")):
        text = contract.render(block, family)
        assert text == summary.format_block(block)
    text = contract.render(tabular_block(val_logloss=0.41), "tabular")  # a companion metric is allowed
    assert "\nval_auc:        0.887013\n" in text and "\nfold_scores:    0.904682,0.898990\n" in text


@pytest.mark.parametrize(
    "change, family, fault",
    [
        ({"n_fold": 25}, "tabular", "unknown key 'n_fold'"),
        ({"seed": 0}, "tabular", "unknown key 'seed'"),  # an lm key in a tabular block
        ({"val_r2": 0.5}, "lm", "unknown key 'val_r2'"),  # companions are the tabular family's
        ({"fold_scores": "0.9,0.8"}, "tabular", "fold_scores"),  # text, not a list of scores
        ({"n_folds": 2.5}, "tabular", "n_folds: 2.5 is not of kind int"),
        ({"status": "ko"}, "tabular", "status: 'ko' is not of kind choice"),
        ({"direction": "up"}, "tabular", "direction"),
        ({"val_auc_se": "about 0.01"}, "tabular", "val_auc_se"),
        ({"budget_seconds": True}, "tabular", "budget_seconds"),
        ({"status": "crash"}, "tabular", "status crash without an error"),
        ({"metric": "auc"}, "tabular", "does not name a score key"),
    ],
)
def test_the_writer_refuses_what_the_contract_does_not_allow(change, family, fault):
    block = (tabular_block if family == "tabular" else lm_block)(**change)
    with pytest.raises(BlockError, match="contract refuses|does not name") as caught:
        contract.render(block, family)
    assert fault in str(caught.value)


def test_the_writer_refuses_a_missing_required_key():
    for family, make in (("tabular", tabular_block), ("lm", lm_block)):
        for name in ("status", "fold_scores", "metric", "task"):
            block = make()
            del block[name]
            with pytest.raises(BlockError):
                contract.check_block(block, family)
    block = lm_block()
    del block["val_bpb_se"]  # the metric's own standard error: its name is dynamic
    with pytest.raises(BlockError, match="missing key 'val_bpb_se'"):
        contract.check_block(block, "lm")


def test_a_crash_block_with_no_scores_is_valid():
    block = tabular_block(
        val_auc=math.nan,
        val_auc_se=math.nan,
        status="timeout",
        fold_scores="none",
        error="train.py ran past the 60 s budget",
    )
    text = contract.render(block, "tabular")
    read = Block.parse(text)
    assert not read.ok and read.status == "timeout" and read.fold_scores == [] and math.isnan(read.value)
    assert read.error == "train.py ran past the 60 s budget"


# -- the reader --------------------------------------------------------------------------------------------
def test_the_reader_names_every_key_the_ratchet_reads():
    block = Block.parse("noise\n" + contract.render(lm_block(), "lm"))
    assert block.ok and block.metric_name == "val_bpb" and block.value == pytest.approx(2.44)
    assert block.value_text == "2.440000" and block.se == pytest.approx(0.01)
    assert block.fold_scores == [2.44] and block.direction == "lower" and not block.higher_is_better
    assert block.budget_seconds == 60.0 and block.timeout_seconds == 1380 and block.device == "cpu"
    assert block.task == "shakespeare" and block.keep_rule == "rerun" and block.peak_memory_mb == 900.5
    tab = Block.parse(contract.render(tabular_block(), "tabular"))
    assert tab.higher_is_better and math.isnan(tab.timeout_seconds) and tab.device is None


def test_a_rerun_folds_into_the_scores_and_their_mean():
    block = Block.parse(contract.render(lm_block(), "lm")).with_runs([2.44, 2.46, 2.45])
    assert block.fold_scores == [2.44, 2.46, 2.45] and block.value == pytest.approx(2.45)
    assert block.fold_scores_text == "2.440000,2.460000,2.450000"


def test_a_crash_block_the_ratchet_writes_itself():
    block = Block.crash("the harness was killed by SIGKILL")
    assert block and not block.ok and block.status == "crash" and block.value_text == ""
    assert not Block() and Block().status == ""


def test_a_rerun_that_crashes_ends_the_reruns_with_its_crash():
    from autoresearch.harness import HarnessRun, fold_rerun

    first = HarnessRun(Block.parse(contract.render(lm_block(), "lm")), 60.0, "")
    again = HarnessRun(Block.parse(contract.render(lm_block(val_bpb=2.5, fold_scores=[2.5]), "lm")), 61.0, "")
    folded = fold_rerun(first, again)
    assert folded.scored and folded.block.fold_scores == [2.44, 2.5] and folded.seconds == 121.0
    crashed = fold_rerun(first, HarnessRun(Block.crash("boom"), 5.0, ""))
    assert not crashed.scored and crashed.block.error == "boom" and crashed.seconds == 65.0


# -- keep rules ---------------------------------------------------------------------------------------------
def test_rules_are_registered_by_name_and_the_default_judges_old_records():
    assert set(keeprules.RULES) == {"paired", "corrected", "rerun"}
    assert all(issubclass(rule, keeprules.KeepRule) and rule.name == name for name, rule in keeprules.RULES.items())
    assert isinstance(keeprules.rule_named(None), keeprules.PairedFolds)  # a record from before rules had names
    assert keeprules.rule_named("rerun").calibration_runs == decide.CALIBRATION_RUNS
    assert keeprules.rule_named("paired").calibration_runs == 1
    with pytest.raises(keeprules.UnknownRule, match="'bayes' is not one of paired, corrected, rerun"):
        keeprules.rule_named("bayes")


def test_the_paired_rule_is_the_paired_t_test():
    best = [0.80, 0.82, 0.81, 0.79, 0.83]
    better = [b + 0.02 + 0.001 * i for i, b in enumerate(best)]
    rule = keeprules.rule_named("paired")
    decision = rule.judge(better, best, higher_is_better=True, history=[], candidate_size=10, best_size=10)
    assert keeprules.verdict_of(decision) == keeprules.KEEP
    assert decision == decide.decide(better, best, True, 10, 10)
    worse = rule.judge(best, better, higher_is_better=True, history=[], candidate_size=10, best_size=10)
    assert keeprules.verdict_of(worse) == keeprules.DISCARD


def test_the_run_to_run_rule_estimates_noise_from_the_rows_and_asks_for_another_run():
    history = [{"status": "keep", "fold_scores": "2.44,2.46,2.45"}, {"status": "crash", "fold_scores": ""}]
    assert keeprules.noise(history) == (pytest.approx(0.01), 2)
    rule = keeprules.rule_named("rerun")
    args = dict(higher_is_better=False, history=history, candidate_size=10, best_size=10)
    assert keeprules.verdict_of(rule.judge([2.445], [2.44, 2.46, 2.45], **args)) == keeprules.RUN_AGAIN
    assert keeprules.verdict_of(rule.judge([2.30, 2.31, 2.29], [2.44, 2.46, 2.45], **args)) == keeprules.KEEP
    assert keeprules.verdict_of(rule.judge([2.60, 2.61, 2.59], [2.44, 2.46, 2.45], **args)) == keeprules.DISCARD


# -- capabilities ------------------------------------------------------------------------------------------
def test_capabilities_round_trip_and_junk_is_refused():
    from autoresearch import lm, tabular

    for caps in (tabular.CAPABILITIES, lm.CAPABILITIES):
        assert Capabilities.from_json(json.loads(caps.dumps())) == caps
        assert caps.keep_rule in keeprules.RULES
    assert tabular.CAPABILITIES.fresh_folds and not tabular.CAPABILITIES.budget_arg
    assert lm.CAPABILITIES.budget_arg and lm.CAPABILITIES.seed_arg and lm.CAPABILITIES.keep_rule == "rerun"
    good = tabular.CAPABILITIES.to_json()
    junks = [
        {**good, "fresh_folds": "yes"},
        {k: v for k, v in good.items() if k != "family"},
        {**good, "extra": 1},
        {**good, "family": "vision"},
        {**good, "budget_clocks": {"cpu": "gpu"}},
        [],
    ]
    for junk in junks:
        with pytest.raises(ValueError):
            Capabilities.from_json(junk)
    with pytest.raises(ValueError, match="printed no JSON"):
        contract.parse_capabilities("usage: prepare.py [-h]\n")


def test_prepare_py_declares_its_capabilities():
    out = subprocess.run(
        [sys.executable, str(ROOT / "prepare.py"), contract.CAPABILITIES_FLAG],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    caps = contract.parse_capabilities(out.stdout)
    assert caps.family == "tabular" and caps.keep_rule == "corrected" and caps.fresh_folds


def test_a_record_from_before_capabilities_reads_with_defaults():
    config = RunConfig("t", ".", "0" * 40, "val_auc", True, 60.0, "2026-11-01T00:00:00")
    assert config.capabilities is None and config.keep_rule is None
    assert isinstance(keeprules.rule_named(config.keep_rule), keeprules.PairedFolds)
    config.extra["capabilities"] = {"family": "tabular"}  # damaged: read as not declared
    assert config.capabilities is None


# -- start, and the report, read the declaration --------------------------------------------------------------
def repository(path: Path, prepare_source: str | None = None) -> Path:
    path.mkdir(parents=True)
    for name in ("prepare.py", "train.py", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    if prepare_source is not None:
        (path / "prepare.py").write_text(prepare_source)
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "t"],
        ["config", "user.email", "t@e"],
        ["add", "-A"],
        ["commit", "-qm", "task"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True)
    return path


def test_start_budget_on_a_harness_that_takes_none_is_one_line_and_leaves_nothing(tmp_path):
    repo = repository(tmp_path / "repo")
    out = subprocess.run(
        [sys.executable, str(RATCHET), "start", "b1", "--budget", "5"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "--budget" in out.stderr and "takes no budget option" in out.stderr
    branches = subprocess.run(["git", "branch", "--list"], cwd=repo, capture_output=True, text=True).stdout
    assert "autoresearch/b1" not in branches and not (repo / ".git" / "autoresearch" / "b1").exists()


def test_the_report_asks_the_frozen_harness_of_a_run_recorded_before_capabilities(tmp_path):
    from autoresearch import report
    from autoresearch.gitops import Repo
    from autoresearch.taskdir import find_task

    legacy = RunConfig("old", ".", "0" * 40, "val_auc", True, 60.0, "2026-11-01T00:00:00")
    repo = Repo(repository(tmp_path / "repo"))
    caps, why = report.capabilities_of(repo, legacy, find_task(repo, "."))
    assert caps is not None and caps.fresh_folds and why == ""
    mute = Repo(repository(tmp_path / "mute", "import sys\nsys.exit('no such option')\n"))
    caps, why = report.capabilities_of(mute, legacy, find_task(mute, "."))
    assert caps is None and "predates declared capabilities" in why
    recorded = RunConfig(
        "new",
        ".",
        "0" * 40,
        "val_bpb",
        False,
        60.0,
        "2026-11-01T00:00:00",
        extra={
            "capabilities": {
                **Capabilities.from_json(
                    json.loads(
                        '{"family": "lm", "keep_rule": "rerun", "fresh_folds": false, "audit_records": true,'
                        ' "budget_arg": true, "seed_arg": true, "budget_clocks": {"cpu": "cpu"},'
                        ' "devices": ["cpu"]}'
                    )
                ).to_json()
            }
        },
    )
    caps, _ = report.capabilities_of(mute, recorded, find_task(mute, "."))  # the record, not the harness
    assert caps is not None and not caps.fresh_folds and caps.family == "lm"
