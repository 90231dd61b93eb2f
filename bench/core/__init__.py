"""The torch-free core that the orchestrator and the workers share.

Workers run inside a family's environment and import only this package of ``bench``
(standard library and numpy): the run contract (``contract``: specs, jobs, results,
records), error metrics and units (``metrics``) and small helpers (``util``). Everything
else of the orchestrator (planning, stores, reports) stays out of the workers.
"""
