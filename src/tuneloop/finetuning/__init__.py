"""OpenAI's fine-tuning API, served by tuneloop: files, jobs, events, checkpoints and `ft:` models.

    store.py            the files and jobs on disk (the queue survives a restart: it is these files)
    hyperparameters.py  a job request -> a tuneloop RunConfig (the documented mapping)
    validate.py         what OpenAI checks of an uploaded file and of a job's files, as tuneloop checks data
    worker.py           one job in its own process: `tuneloop run`'s loop, events and checkpoints written as it goes
    scheduler.py        the server's side: validate, queue, start, watch, cancel, pause, resume, recover
    routes.py           the HTTP routes (/v1/files, /v1/fine_tuning/jobs...), over the scheduler and the store

Every job is a normal tuneloop run directory under <data dir>/runs: `diagnose`, `eval`, `compare` and
the dashboard read it as they read any run.
"""
