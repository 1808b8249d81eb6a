"""`spotsweep tune`: an adaptive search for the best destVI settings, as Optuna trials run as sweep tasks.

- `space`: a method entry's `search:` block as Optuna suggestions, and a trial's settings as tasks;
- `objective`: a task's score (final, and along its trajectory while it trains) as the study reads it;
- `study`: the Optuna study (journal storage in the output folder, sampler, pruner);
- `loop`: ask, dispatch through the backend core, report and prune, tell; resume what was running;
- `report`: the trials, the best over time, the best settings, the Pareto front, the importances;
- `best`: the best trial's settings as a sweep file (tune/best.yaml), to train again with fresh seeds.

A client of the backend core (`toolkit.backends.core.dispatch`), as `toolkit.launch` is.
"""
