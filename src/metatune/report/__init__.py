"""What researchers look at after a sweep: the numbers behind the plots (data), the plots (plots), a plain
summary (summary) and an Optuna journal of every trial (optuna_export)."""
