"""Task adapters (see :mod:`convatlas.tasks.base`)."""

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, get_task, list_tasks, register_task

__all__ = ["MetricAccumulator", "TaskAdapter", "get_task", "list_tasks", "register_task"]
