"""Few-shot tasks: the registry (tasks are data), examples and their splits.

Modules: ``schema`` (:class:`Example`), ``registry`` (:class:`Task`, YAML/TOML/JSONL task
files, groups), ``sources`` (hub / local files / generators), ``processors`` (document ->
Example), ``byo`` (JSONL examples), ``prompts`` (k-shot prompts as tokens), ``synthetic``
(the offline suite), ``texts`` (plain text corpora for layer analyses).
"""

from __future__ import annotations

from headlens.tasks.registry import (
    Task,
    expand_tasks,
    get_task,
    load_task_file,
    task_names,
)
from headlens.tasks.schema import Example

__all__ = ["Example", "Task", "expand_tasks", "get_task", "task_names", "load_task_file"]
