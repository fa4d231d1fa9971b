"""Hyperparameter search over brickwork configs: Optuna built in, Ray Tune as an extra.

`brickwork tune CONFIG --space SPACE.yaml` runs a study (docs/tune.md). The parts:
`space` (the SPACE.yaml format and its validation), `study` (the study folder and
its settings), `trial` (one trial: `brickwork.fit` plus a reporting callback),
`optuna_engine` and `ray_engine`, `report` (table, best.yaml, plots), `search`
(which engine, how many workers, what is left at the end).
"""
