"""Trainers run one trial each. Every trainer takes a TrialSpec and returns a TrialOutcome; the trial runner
(metatune.trial) turns that into metrics.json. Heavy imports stay inside the trainer modules that need them."""
