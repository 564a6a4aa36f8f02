"""Hyper-parameter search over a spec's search values, on Optuna (docs/search.md).

`space` reads and evaluates the search values (imported by the front end; no optimizer library);
`study` runs the search (imports Optuna when it runs)."""
