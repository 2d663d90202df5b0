"""Sweeps: a grid of ordinary runs (profiles × seeds × methods × grid values) from one spec file, run on this machine or a
Ray cluster, resumable, with one report over all of them.

- ``spec``: the spec file, validated with file:line errors, and the plan: every cell's resolved RunConfig and the control
  arms the cells share
- ``worker``: what runs one task (a cell, or a shared control) in a worker process, wherever it is
- ``executors``: where tasks run: local processes or Ray tasks
- ``folder``: the sweep folder, its log, its tasks' status
- ``driver``: the scheduling of tasks on an executor
- ``report``: summary.md and the figures over profiles
"""
