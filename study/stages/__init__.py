"""A study's stages, each a module readable alone: `search` (Optuna under ASHA), `repeats` (the best configuration
with other seeds, and the choice of the final model's configuration) and `final` (the final model, scored once on
the test text). `experiment` holds what they share: building, resuming and running a Tune experiment.

study.driver runs them in order; each takes the study's plan, the trainable and the results writer (which carries
the study's stop reasons, study.stopping).
"""
