"""uetrace: record-and-replay forensic capture for Linux, built on eBPF."""

__version__ = "0.1.0"
