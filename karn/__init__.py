"""Karn, the operator's view: a live dashboard (`esper-watch`) and a run's report (`esper-report`).

Both read only Nissa's telemetry files (`karn.history`).
"""
