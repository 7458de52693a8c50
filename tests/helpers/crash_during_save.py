"""Runs `python -m MODULE ARGS...` and kills the process (os._exit(3), no cleanup) at the moment orbax
is about to commit checkpoint number $CRASH_AT_UPDATE: all its data is written, the rename that makes
it visible is not done. This is the worst moment for a crash during a save.

    CRASH_AT_UPDATE=4 python tests/helpers/crash_during_save.py experiments.moving_bandits --out DIR ...
"""

import os
import runpy
import sys

from orbax.checkpoint._src.path import atomicity

CRASH_AT = os.environ["CRASH_AT_UPDATE"]
_commit = atomicity.AtomicRenameTemporaryPath.finalize


async def _crashing_commit(self, *args, **kwargs):
    if self.get_final().name == CRASH_AT:
        os._exit(3)
    return await _commit(self, *args, **kwargs)


atomicity.AtomicRenameTemporaryPath.finalize = _crashing_commit
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
