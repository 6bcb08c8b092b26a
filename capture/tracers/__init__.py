"""The tracers: the contract, each tracer, and what the uprobe tracers share."""
