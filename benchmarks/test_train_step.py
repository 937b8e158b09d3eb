"""One full training step of every backend and peer (see bpcore.benchtools.suite)."""

from bpcore.benchtools.suite import test_train_step

__all__ = ["test_train_step"]
