"""Auto-tuning of the tiling stage's MAC decisions with MetaSchedule (docs/TUNING.md).

records.py is what the compile path needs (workloads, the database lookup) and imports no
MetaSchedule machinery; the tuner itself (api.py: `tune`, tasks.py, space.py, measure.py) is imported
on first use, so `import tvm_npu` costs nothing more.
"""


def tune(*args, **kwargs):
    """See tvm_npu.tuning.api.tune."""
    from .api import tune as _tune

    return _tune(*args, **kwargs)


def extract_tasks(*args, **kwargs):
    """See tvm_npu.tuning.tasks.extract_tasks."""
    from .tasks import extract_tasks as _extract

    return _extract(*args, **kwargs)


__all__ = ["extract_tasks", "tune"]
