"""Runs `python -m MODULE ARGS...` with one phase of update $STALL_AT_UPDATE blocked for ever, the way a
hung XLA computation blocks the main thread: $STALL_IN is `update` (the jitted update's call) or `save`
(the checkpoint save of that update). It prints "stalling at update N" to stderr when it blocks.

    STALL_AT_UPDATE=50 STALL_IN=update python tests/helpers/stall.py experiments.moving_bandits --out DIR ...
"""

import os
import runpy
import sys
import threading

from mlsh_jax import checkpoint, trainer

STALL_AT, STALL_IN = int(os.environ["STALL_AT_UPDATE"]), os.environ.get("STALL_IN", "update")


def block_for_ever(update: int) -> None:
    print(f"stalling at update {update}", file=sys.stderr, flush=True)
    threading.Event().wait()  # releases the GIL, as a thread waiting inside XLA does


_init, _save = trainer.Trainer.__init__, checkpoint.save


def _init_with_a_stall(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    update = self.update

    def stalling_update(state):
        if STALL_IN == "update" and int(state.update) + 1 == STALL_AT:
            block_for_ever(STALL_AT)
        return update(state)
    self.update = stalling_update


def _stalling_save(manager, update, *args, **kwargs):
    if STALL_IN == "save" and update == STALL_AT:
        block_for_ever(update)
    return _save(manager, update, *args, **kwargs)


trainer.Trainer.__init__ = _init_with_a_stall
checkpoint.save = _stalling_save
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
