"""The paper's experiments, one sub-package per ``dgm`` sub-command (filled in by the next commit)."""
