"""The results contract's names: the one copy that the run directory's writer (study.rundir) and its readers
(reports, study.closing) share.

    RUN/
      study.json          what was asked and what the study decided; `schema_version` of the tables
      spec.toml           the spec as given, so that --resume needs nothing else
      trials.parquet      one row per trial (role search, repeat, local, race or final)
      curves.parquet      one row per evaluation of a trial
      samples.parquet     generated text, at each evaluation and from the best weights at the end
      baselines.parquet   the compressors' bits/char on the same held-out text (optional)
      optuna.db           the Optuna study (SQLite)
      final_model.pt      the final model's weights (charrnn.checkpoint.FINAL_MODEL_FILE)

Plain data, and the one command that reads the final model; it imports nothing, so `reports` shares it without
importing `study`, and neither pulls in Ray, Optuna or pandas through it. What a row means, and how a table is
written, stays with the writer; how an older schema is read, with the reader.
"""

SCHEMA_VERSION = 2  # what study.rundir writes
SCHEMA_VERSIONS = (1, 2)  # what reports reads (schema 1 is mapped to 2's names on load)

STUDY_FILE = "study.json"
SPEC_FILE = "spec.toml"
TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
SAMPLES_FILE = "samples.parquet"
BASELINES_FILE = "baselines.parquet"
OPTUNA_FILE = "optuna.db"

# ---- trials.parquet ---------------------------------------------------------------------------------------------
STATUSES = ("completed", "stopped", "diverged", "failed", "running")
FINISHED = ("completed", "stopped", "diverged", "failed")
TRAINED = ("completed", "stopped")  # trained normally: a candidate for the best trial
UNSTABLE = ("diverged", "failed")  # a configuration with a seed repeat of these is not handed over
# The selection rule (runcontract.selection; its decision in study.json `selection`): at most this many of the best
# configurations are checked with repeats.
MAX_CANDIDATES = 3
SEARCH, REPEAT, FINAL = "search", "repeat", "final"  # a trial's `role`
LOCAL = "local"  # a trial of the local design: the center or one hyperparameter moved from it (`moved`)
# A trial of the final stage's race (`candidate`: CHOSEN, the study's configuration, or BASELINE, the spec's
# hand-picked one), trained on the final model's terms to a rung of `final.race_evals`, one row per candidate per
# round (a later round goes on from the earlier one's checkpoint); the winner's continues as the final model.
RACE = "race"
CHOSEN, BASELINE = "chosen", "baseline"
ROLES = (SEARCH, REPEAT, LOCAL, RACE, FINAL)
# Keys of a trial's Tune config that label it for the tables and do not reach the trainer.
LABELS = ("moved", "candidate", "repeat_of")
PARAM_PREFIX = "param."  # + a searched hyperparameter's name: its value in trials.parquet

TRIAL_STRING_COLUMNS = ("trial_id", "status", "role", "node_id", "device", "precision", "error", "retry_error",
                        "checkpoint", "repeat_of", "moved", "candidate")
TRIAL_FLOAT_COLUMNS = ("best_val_bpc", "wall_s", "train_bpc", "eval_s", "chars_per_s", "test_bpc")
TRIAL_INT_COLUMNS = ("chars_seen", "step_chars", "best_chars_seen", "trial_index", "seed", "retries", "threads",
                     "peak_gpu_mem_bytes", "budget_chars")

# ---- the other tables -------------------------------------------------------------------------------------------
CURVE_COLUMNS = ("trial_id", "chars_seen", "steps", "wall_s", "train_bpc", "val_bpc", "best_val_bpc", "lr")
SAMPLE_COLUMNS = ("trial_id", "chars_seen", "temperature", "text", "kind", "prime", "known_word_frac",
                  "copy20_frac")
BASELINE_COLUMNS = ("method", "split", "bpc", "detail")

# ---- what a reader needs, per schema version --------------------------------------------------------------------
TRIALS_REQUIRED = {1: ("trial_id", "status", "val_bpc", "chars_seen", "wall_s", "node_id"),
                   2: ("trial_id", "status", "best_val_bpc", "chars_seen", "wall_s", "node_id")}
CURVES_REQUIRED = {1: ("trial_id", "chars_seen", "wall_s", "train_bpc", "val_bpc"),
                   2: ("trial_id", "chars_seen", "wall_s", "train_bpc", "val_bpc", "best_val_bpc")}
SAMPLES_REQUIRED = ("trial_id", "chars_seen", "temperature", "text")
BASELINES_REQUIRED = ("method", "split", "bpc")


def sample_command(run_dir) -> str:
    """The command that samples more text from a run directory's final model (final_model.pt, read by
    `charrnn.sample --run`): what the study's closing summary and the report both print."""
    return f"python -m charrnn.sample --run {run_dir} --temperature 0.8 --length 1000"


def batch_size_for(step_chars: float, seq_len: float) -> int:
    """The batch size a study's `step_chars` (characters per optimizer step) sets: step_chars / seq_len, rounded
    (half to even, as Python rounds), at least 1. One rule for the trainer (charrnn.config), the spec's checks
    (study.spec) and the report (reports._steps)."""
    return max(1, round(step_chars / seq_len))
