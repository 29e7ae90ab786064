"""The completed invocation both clients return: the parent's, plus the gate's metadata and checks."""

from __future__ import annotations

from typing import Any, Sequence

import dagster as dg
from dagster import PipesClientCompletedInvocation

from dagster_integration._resource import METADATA_PREFIX, Preflight


class ImagegateInvocation(PipesClientCompletedInvocation):
    """The parent's completed invocation, with the gate's metadata on every result."""

    def __init__(self, inner: PipesClientCompletedInvocation, gate: Preflight, output: Sequence[str] = ()) -> None:
        metadata: dict[str, Any] = {**inner.metadata, **gate.metadata()}
        if output:
            metadata[f"{METADATA_PREFIX}/output"] = dg.MetadataValue.md("```\n" + "\n".join(output) + "\n```")
        # PipesClientCompletedInvocation exposes its session only as `_session`
        super().__init__(inner._session, metadata=metadata)
        self.preflight = gate
        self.output = list(output)

    def get_results(self, *, implicit_materializations: bool = True) -> Sequence[Any]:
        """The job's results (with the gate's metadata) and the declared imagegate checks' results."""
        return (*super().get_results(implicit_materializations=implicit_materializations), *self.preflight.check_results())
