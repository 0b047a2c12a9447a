"""Projections: views derived from the event log, each in its own module, all rebuildable.

Installed as ``opentraces.projections``; always import it under that name.
"""

from __future__ import annotations

from opentraces.projections.base import Projection
from opentraces.projections.bucket_manifest import BucketManifest
from opentraces.projections.context_tree import ContextTree
from opentraces.projections.search_index import SearchIndex
from opentraces.projections.traces import Traces
from opentraces.projections.trail import Trail

#: Every projection the runner keeps, in the order `rebuild` reports them (by name).
ALL: tuple[type[Projection], ...] = (BucketManifest, ContextTree, SearchIndex,
                                       Traces, Trail)

__all__ = ["ALL", "BucketManifest", "ContextTree", "Projection", "SearchIndex", "Traces",
           "Trail"]
