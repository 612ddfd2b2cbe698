"""The Ray executor on a real Ray cluster started on this machine (one head node: 2 CPUs, 2 declared GPUs).

The cluster is started once for the module with `ray start --head` in a temp folder of its own and stopped at the
end, with a check that none of its processes is left. The executor scores the fixture task's candidates on it
as a wave would: the task's files shipped as bytes, the harness run in a scratch folder on the worker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import harness_bytecode, link_tree, started_project

# A token in ~/.ray (left by any local `ray.init()` on the machine) turns token authentication on for every
# `ray start`; this module's cluster and its driver both go without, whatever the machine holds.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray", reason="the `ray` extra is not installed (uv sync --extra ray)")

from autoresearch.executors import Job, Outcome, Scoring  # noqa: E402
from autoresearch.executors_ray import SCRATCH_ROOT, RayExecutor, private_pycache  # noqa: E402
from autoresearch.gitops import Repo  # noqa: E402
from autoresearch.harness import timeout_for  # noqa: E402
from autoresearch.runs import RunError, load_config, run_dir  # noqa: E402

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
WEAK = ("    return df\n", '    return df[["age"]]\n')  # the baseline of this module's run: age alone
BETTER = ('return df[["age"]]', "return df")  # every feature: clearly better on the fixture table
CRASH = ("def build_pipeline():\n", "def build_pipeline():\n    raise RuntimeError('boom')\n")
TASK_TITLE = b"ray::score_on_worker"  # a Ray worker's process title while it runs the executor's task
START_TIMEOUT_SECONDS = 180
FIND_WORKER_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def leftovers() -> dict[int, str]:
    """Processes of a scoring on the cluster (they name its scratch folder) still running, with their commands."""
    found = {}
    for pid in processes_mentioning(f"/{SCRATCH_ROOT}/".encode()):
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:300].decode()
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def cluster(data_mirror):
    """A Ray head on this machine; its address. The data mirror is NOT in the cluster's environment: the
    executor must pass it on. The node's harness bytecode cache is seeded as make_project seeds a run's (an
    empty one costs each first scoring seconds of compiling pandas and scikit-learn)."""
    link_tree(harness_bytecode(str(data_mirror)), private_pycache())
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited to 107 bytes
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "RAY_"))}
    env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    started = time.monotonic()
    out = subprocess.run(
        [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--num-gpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    print(f"ray start: {time.monotonic() - started:.1f} s")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)
        left = processes_mentioning(str(temp).encode())
        assert not left, f"Ray processes of {temp} left running: {left}"
        subprocess.run(["rm", "-rf", str(temp)], check=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_mirror):
    def weaken(project):
        project.edit(*WEAK)
        project.git("commit", "-qam", "weak baseline: age alone")

    return started_project(tmp_path_factory.mktemp("ray"), data_mirror, "t1", setup=weaken)


@pytest.fixture(scope="module")
def scoring(run) -> Scoring:
    repo = Repo(run.path)
    config = load_config(repo, "t1")
    return Scoring(
        root=run.path,
        task_rel=config.task,
        folder=run_dir(repo, "t1"),
        timeout=timeout_for(config),
        harness_args=tuple(config.extra.get("harness_args", [])),
    )


@pytest.fixture(scope="module")
def mirror_env(data_mirror):
    """The head's data mirror, as a user sets it: the executor passes it to the workers."""
    before = os.environ.get("AUTORESEARCH_DATA_MIRROR")
    os.environ["AUTORESEARCH_DATA_MIRROR"] = str(data_mirror)
    yield
    if before is None:
        del os.environ["AUTORESEARCH_DATA_MIRROR"]
    else:
        os.environ["AUTORESEARCH_DATA_MIRROR"] = before


@pytest.fixture(scope="module")
def node_ip(cluster, scoring, mirror_env) -> str:
    RayExecutor(scoring, 1, cluster).close()  # connects this process
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    return node["NodeManagerAddress"]  # Ray swaps 127.0.0.1 for the machine's reachable address


def edited(source: str, old: str, new: str) -> str:
    assert old in source
    return source.replace(old, new, 1)


def test_unreachable_or_unnamed_cluster_is_one_line(scoring, monkeypatch):
    if ray.is_initialized():
        pytest.skip("this process is already connected to the module's cluster")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RunError, match=r"^this run scores on Ray and no cluster is named: .*RAY_ADDRESS$"):
        RayExecutor(scoring, 1, None)
    with pytest.raises(RunError, match=r"^cannot reach the Ray cluster at 127\.0\.0\.1:1 \("):
        RayExecutor(scoring, 1, "127.0.0.1:1")


def test_a_wave_of_three_scores_on_the_cluster(run, scoring, cluster, node_ip):
    baseline = run.read()
    executor = RayExecutor(scoring, 2, cluster)
    jobs = {
        "baseline": Job("0001", baseline),
        "better": Job("0002", edited(baseline, *BETTER)),
        "crash": Job("0003", edited(baseline, *CRASH)),
    }
    futures = {name: executor.submit(job) for name, job in jobs.items()}
    outcomes = {name: future.result(timeout=600) for name, future in futures.items()}
    executor.close()
    for name, outcome in outcomes.items():
        assert outcome.worker == f"ray:{node_ip}" and outcome.attempts == 1 and not outcome.notes, (name, outcome)
        assert not outcome.run.harness_error, (name, outcome.run.harness_error)
        assert (scoring.folder / "logs" / f"{jobs[name].key}.log").stat().st_size > 0
    base, better, crash = outcomes["baseline"], outcomes["better"], outcomes["crash"]
    assert base.run.block.status == better.run.block.status == "ok"
    assert float(better.run.block.fields["val_auc"]) > float(base.run.block.fields["val_auc"]) + 0.05
    assert base.heldout and better.heldout and base.heldout != better.heldout
    assert crash.run.block.status == "crash" and "boom" in crash.run.block.error and crash.heldout is None
    assert Outcome.from_json(better.to_json()).run.block == better.run.block  # what the scorer records
    assert not leftovers(), leftovers()  # every scoring's processes are gone


def test_each_candidate_gets_its_own_gpu(run, scoring, cluster, node_ip):
    shows = "import os, sys\nprint('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), file=sys.stderr)\n"
    executor = RayExecutor(scoring, 2, cluster, gpus_per_candidate=1)
    futures = [executor.submit(Job(f"gpu{i}", shows + run.read())) for i in range(2)]
    outcomes = [f.result(timeout=600) for f in futures]
    executor.close()
    seen = []
    for i, outcome in enumerate(outcomes):
        assert outcome.run.block.status == "ok", outcome
        log = (scoring.folder / "logs" / f"gpu{i}.log").read_text()
        devices = set(re.findall(r"^CVD=(\S+)$", log, re.M))
        assert len(devices) == 1 and devices <= {"0", "1"}, devices
        (device,) = devices
        assert outcome.worker == f"ray:{node_ip}/gpu{device}"
        seen.append(device)
    assert sorted(seen) == ["0", "1"]  # scheduled at once: one GPU each


def test_gpus_the_cluster_does_not_have_are_refused_in_one_line(scoring, cluster, node_ip):
    with pytest.raises(RunError, match=r"^the Ray cluster at .* has 2 GPUs; a candidate of this run asks for 3$"):
        RayExecutor(scoring, 1, cluster, gpus_per_candidate=3)


def kill_workers(times: int) -> list[int]:
    """SIGKILL the Ray worker running the executor's task, `times` times (each time the one running it then)."""
    killed: list[int] = []
    deadline = time.monotonic() + FIND_WORKER_SECONDS
    while len(killed) < times and time.monotonic() < deadline:
        running = [pid for pid in processes_mentioning(TASK_TITLE) if pid not in killed]
        if running:
            time.sleep(0.5)  # into the scoring
            os.kill(running[0], signal.SIGKILL)
            killed.append(running[0])
        time.sleep(0.05)
    return killed


def test_a_lost_worker_is_retried_once_then_a_harness_failure(run, scoring, cluster, node_ip):
    slow = "import time\ntime.sleep(1)\n" + run.read()  # a scoring that is surely under way when killed
    executor = RayExecutor(scoring, 1, cluster)
    once = executor.submit(Job("lost1", slow))
    (first,) = kill_workers(1)
    outcome = once.result(timeout=600)
    assert outcome.run.block.status == "ok" and not outcome.run.harness_error, outcome
    assert outcome.attempts == 2 and outcome.worker == f"ray:{node_ip}" and outcome.heldout
    (note,) = outcome.notes
    assert note.startswith(f"attempt 1: lost the Ray worker ray:{node_ip} (pid {first}) (WorkerCrashedError)"), note

    twice = executor.submit(Job("lost2", slow))
    assert len(kill_workers(2)) == 2
    outcome = twice.result(timeout=600)
    executor.close()
    assert outcome.attempts == 2 and not outcome.run.block and outcome.heldout is None, outcome
    assert outcome.worker == f"ray:{node_ip}"  # where it was lost last
    assert outcome.run.harness_error.startswith("the Ray worker was lost 2 times while it scored this train.py")
    assert len(outcome.notes) == 2 and outcome.notes[1].endswith("not scored again")
    assert not leftovers(), leftovers()  # the lost workers' harnesses were swept


def test_a_node_whose_library_is_not_the_heads_refuses_to_score(run, scoring, cluster, node_ip):
    executor = RayExecutor(scoring, 1, cluster)
    executor.library = {**executor.library, "harness.py": "0" * 64}  # as if the node had another version
    outcome = executor.submit(Job("other-library", run.read())).result(timeout=600)
    executor.close()
    assert not outcome.run.block and outcome.attempts == 1 and outcome.worker == f"ray:{node_ip}"
    assert outcome.run.harness_error.startswith("this node's autoresearch library (")
    assert "harness.py differs from the head's" in outcome.run.harness_error


def test_a_wave_through_submit_and_wait_scores_on_the_cluster(tmp_path, data_mirror, cluster, node_ip):
    """The whole path: `start --executor ray`, two `submit`s, `wait`: the scorer hands them to the cluster, the
    head judges and records them; the rows name the Ray worker."""

    def weaken(project):
        project.edit(*WEAK)
        project.git("commit", "-qam", "weak baseline: age alone")

    args = ("t1", "--workers", "2", "--executor", "ray", "--ray-address", cluster)
    project = started_project(tmp_path, data_mirror, *args, setup=weaken)
    assert "workers: 2 (ray)" in project.start_output
    for edit, hypothesis in ((BETTER, "every feature"), (CRASH, "raises")):
        project.edit(*edit)
        out = project.ratchet("submit", hypothesis)
        assert out.returncode == 0 and out.stdout.startswith("queued iter"), out.stderr
    out = project.ratchet("wait", timeout=600)
    for pid in processes_mentioning(b"autoresearch.scorer\0" + str(project.path).encode()):
        os.kill(pid, signal.SIGKILL)
    assert out.returncode == 0, out.stderr
    rows = project.rows()
    assert [r["status"] for r in rows] == ["keep", "keep", "crash"], out.stdout
    assert {r["worker"] for r in rows[1:]} == {f"ray:{node_ip}"} and [r["wave"] for r in rows] == ["", "1", "1"]
    assert "kept iter 1" in out.stdout and project.status() == ""
