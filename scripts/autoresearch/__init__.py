"""autoresearch: the library behind scripts/ratchet.py, the task harnesses and the Claude Code hooks.

One flat package in layers. A module imports only modules of its own layer or of lower ones, and no modules
import each other around a loop (tests/test_layers.py parses every import, those inside functions too, and
checks both, and that this map lists every module). Flat rather than sub-packages, because the import paths
are an interface: every task's prepare.py, those `new-task` wrote included, imports `autoresearch.tabular` (or
`autoresearch.lm`) and `autoresearch.data`, the sandbox runs `-m autoresearch.tabular_child`, and the hooks'
shim, the tests and the benchmarks import modules by name. The layers are the architecture a tree would show.

Layer 0, foundations: know nothing of runs, tasks or the contract
    summary        the summary block's text: `---` then aligned `key: value` lines; the one parser
    data           where a task's data file comes from (--data, the mirror, the cache, a download)
    proc           a command in its own process group, with a hard timeout and capped output
    sandbox        the kernel sandbox around candidate code (bubblewrap; per-fold namespaces)
    trust          sha256 of the frozen inputs (harness and library), checked before every scoring
    gitops         the one git wrapper
    ledger         results.tsv: its columns, rows, durable writes; rows carried in ref messages
    decide         the statistics of the keep rules: the paired fold t-test, the between-run test

Layer 1, the contract between the ratchet and a task's harness
    contract       the block's schema (keys, types, families), its writer and its reader (`Block`);
                   what a harness supports (`Capabilities`, `prepare.py --capabilities`)
    keeprules      keep rules as objects (corrected and paired folds, run to run): calibration runs, judge(),
                   confirm() on fresh folds

Layer 2, the task families: the frozen harnesses and the candidate's side of each
    tabular        the tabular harness: split, repeated CV, scoring; the split and fold defaults, metric
                   directions; what a tabular prepare.py imports
    tabular_child  the fold zygote inside the sandbox: one process per fold
    lm             the language-model harness: budget, export checks, bits per byte
    lm_child       the language-model child: trains under the CPU clock, exports the model
    supervise      runs a candidate command, kills it past a CPU budget, reports how it ended and its CPU time

Layer 3, the run record: what a run is, when it stops, how it reads
    runs           a run's identity, its config (run.json) and private folder, the checkout lock
    taskdir        task discovery: a folder with a committed prepare.py and train.py
    stopping       the stop conditions
    cost           the model's tokens and dollars per iteration, from Claude Code's logs
    digest         the status digest (status, the SessionStart hook, the report)

Layer 4, the ratchet: start, try, submit and wait
    harness        calls to the task's harness: one scoring, reruns folded in, held-out records averaged,
                   its declared capabilities
    refs           the rows and config the ratchet trusts, in the run's refs; results.tsv synced to them
    messages       rows, the one-line result, commit messages, run.log's tail
    recovery       state.json, and finishing or rolling back an iteration whose ratchet died
    starting       `start`: capabilities, baseline and calibration, the run record; resume
    loop           `try`: the iteration's state machine
    executors      where a wave's candidates are scored: the interface, the local slots (CPUs or a GPU each)
    executors_ray  the Ray executor: each scoring a task on an existing cluster (the `ray` extra)
    scorer         the background process that scores a run's queued jobs on its executor
    waves          `submit` and `wait`: candidates queued as commits, screened then confirmed as a wave
    watch          the live view of a run: `watch`'s terminal frame, live.html (rewritten after each try)

Layer 5, the morning review and new tasks
    audit          held-out audit and fresh-fold re-measure (statistics and harness calls)
    report         `report`: progress.png, report.html, report.md
    tablefile      a person's data file as a table: format by content, encoding, separator, decimal mark, dates
    taskfiles      the files `new-task` writes (prepare.py, train.py, the task card)
    newtask        `new-task`: a task from a CSV

Layer 6, the agents' and the person's entry points
    hooks          Claude Code hooks (PreToolUse, Stop, SessionStart)
    headless       an unattended Claude Code run
    cli            what each ratchet verb does; scripts/ratchet.py parses its arguments
"""
