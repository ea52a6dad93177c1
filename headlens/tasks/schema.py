"""The contract every task produces: an :class:`Example` per document of a split.

Prompting, scoring, importance and pruning all consume Examples: the query's prompt text,
the continuations exactly as scored, and the gold index. Demonstrations are other
examples' ``context + target``.
"""

from __future__ import annotations

from dataclasses import dataclass

# How prompts are built from Examples (demonstration draw and exclusion, layout). It enters
# every task's cache key (``Task.key``): bump it when a change alters any prompt.
# 2: demonstrations never share the query's input (same context text), not only its doc_id.
PROMPT_VERSION = 2


@dataclass(frozen=True)
class Example:
    """One multiple-choice query.

    Attributes:
        context: the query's prompt text without demonstrations, e.g. ``"Question: q\\nAnswer:"``.
        choices: the continuations exactly as scored (leading space included where the
            template has one). Scoring and importance both use these strings unchanged.
        gold: index of the correct choice.
        target: text appended to ``context`` when this example is a demonstration
            (default: ``choices[gold]``).
        group: examples sharing a group form one question (MultiRC all-answers-right).
        gold_set: all acceptable choice indices (ReCoRD: several entities can be right);
            empty when no choice is right (a ReCoRD document whose answers match none of its
            entities: always scored wrong, as in lm-evaluation-harness; ``gold`` is then 0,
            a placeholder).
        doc_id: position of the source document in its split.
        contexts: per-choice contexts when the choices share one continuation but differ in
            context (Winogrande partial scoring); ``context`` is then the gold one.
    """

    context: str
    choices: tuple[str, ...]
    gold: int
    target: str | None = None
    group: str | None = None
    gold_set: tuple[int, ...] | None = None
    doc_id: int = 0
    contexts: tuple[str, ...] | None = None

    @property
    def demo_text(self) -> str:
        """This example as a demonstration: context + target (default the gold choice)."""
        return self.context + (self.target if self.target is not None else self.choices[self.gold])

    @property
    def inputs(self) -> tuple[str, ...]:
        """The texts that identify this example's input: its context, or every per-choice
        context (Winogrande). Demonstrations never share one with the query."""
        return self.contexts if self.contexts is not None else (self.context,)
