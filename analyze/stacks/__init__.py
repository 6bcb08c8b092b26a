"""Stacks offline: symbolize frames from the archive's own symbol tables (symbolize, demangle), load
the stack tracer's samples as weighted stacks (samples), and draw or rank them (folded, svg,
speedscope, the profile analyzer); stack_text names the frames of the lock and alloc tracers' stacks."""
