"""A study's settings once every input is checked: what `study.run` hands the driver and every stage reads.

`study.run.prepare` builds it from the command line (or, on --resume, from the run directory's study.json); nothing
else writes it, but `fit_to_minutes`, which sets `spec` and `time_plan` once the machine has been measured.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.corpus import Corpus
from study.spec import StudySpec
from study.timeplan import TimePlan, make_plan


@dataclass
class Plan:
    """A fully checked study, ready to run."""

    spec: StudySpec
    corpus: Corpus
    run_dir: Path
    trials: int
    seed: int
    repeats: int
    final_chars: int
    final_minutes: float
    cpus_per_trial: float
    gpus_per_trial: float | None
    max_concurrent: int | None
    max_failures: int
    address: str | None
    storage: str
    encoding: str
    resume: bool
    report: bool
    study_name: str = ""  # names the Optuna study and the default run directory; the spec's name if empty
    adjusted: dict = field(default_factory=dict)  # what fit_to_corpus changed in the spec, for study.json
    verbose: bool = False
    minutes: float = 0.0  # > 0: the study ends within this many minutes (study.timeplan)
    time_plan: dict | None = None  # the plan made when the study started (study.json `plan`); None until then
    final_minutes_asked: bool = False  # --final-minutes was given: it caps the final model under a time plan too
    started: float = field(default_factory=time.monotonic)  # when this process started the study

    def __post_init__(self) -> None:
        self.study_name = self.study_name or self.spec.name


def fit_to_minutes(plan: Plan, *, parallel: int, device: str) -> TimePlan:
    """Measure this machine and size the study to `plan.minutes` (study.timeplan), with `parallel` trials at once on
    `device`: sets `plan.spec` and `plan.time_plan`, and returns the plan. A local study does this before Ray starts
    (study.run), a study on a cluster once Ray says how many trials run at once (study.driver).

    Raises:
        PlanError: when the minutes cannot hold the trials.
    """
    spec, time_plan = make_plan(plan.spec, plan.corpus, trials=plan.trials, seed=plan.seed, repeats=plan.repeats,
                                minutes=plan.minutes, parallel=parallel, device=device,
                                threads=max(1, int(plan.cpus_per_trial)),
                                final_minutes_cap=plan.final_minutes if plan.final_minutes_asked else 0.0)
    plan.spec, plan.time_plan = spec, time_plan.to_dict()
    return time_plan
