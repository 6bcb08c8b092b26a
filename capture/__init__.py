"""Live side: load and attach BPF programs, drain rings, write the archive."""
