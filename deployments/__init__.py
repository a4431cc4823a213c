"""When things run: the deployments, their automations (event triggers) and the runner.

`specs` is the single source of the deployments; `prefect.yaml` at the repository root declares
the same ones for `prefect deploy` (a unit test keeps the two in step); `runner` serves them.
"""
