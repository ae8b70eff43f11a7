"""A test-only entry point: ``stgraph ...`` whose ``train`` waits after epoch
``STGRAPH_TEST_PAUSE_AFTER_EPOCH``'s files are written, so that the kill-and-resume test
(tests/test_cli_long_runs.py) can SIGKILL it there. The installed command has no such hook:
the pause is a Trainer callback given to :func:`stgraph.cli.run_train` here."""

import os
import sys
import time

from stgraph import cli

AT = int(os.environ["STGRAPH_TEST_PAUSE_AFTER_EPOCH"])


def pause(trainer, record):
    if record["epoch"] == AT:
        print(f"paused after epoch {AT} (STGRAPH_TEST_PAUSE_AFTER_EPOCH)", flush=True)
        time.sleep(600)


cli.COMMANDS["train"] = lambda args: cli.run_train(args, callbacks=[pause])
sys.exit(cli.main(sys.argv[1:]))
