"""When things run: prefect.yaml (the one declaration of the deployments, their schedules and
their automations) and the code around it.

- `declared`: prefect.yaml read into typed records, for everything that needs the list;
- `deploy`: registers it with a Prefect server (`tbs-emergency deploy`);
- `steps`: the pull step every run starts with (`enter_project`);
- `runner`: the executor of the work pool's runs (`tbs-emergency runner`).
"""
