"""Trace Trails: patches, git anchors and survival (see docs/trail.md)."""
