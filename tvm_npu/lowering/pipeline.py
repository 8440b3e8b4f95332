"""Double-buffered emission of tile steps onto the three queues, with exact dependency tokens.

An operator is lowered to a list of `Step`s. Each step loads into buffer slot `load_slot` (0/1),
computes, and optionally stores from output slot `store_slot` (0/1). The emitter adds the tokens
of the classic VTA pipeline:

* LOAD -> COMPUTE "data ready": the last load of a step signals, the step's first compute waits;
* COMPUTE -> LOAD "slot free": a step's last compute signals that its input slot may be reused,
  and the load of the next step using the same slot (two load-steps later) waits for it;
* COMPUTE -> STORE "output ready" and STORE -> COMPUTE "output slot free", likewise over the
  steps that store.

A token is only signalled when a later instruction will consume it, so nothing is left over at
the end of an operator (operators are separated by barriers; a stray token would let the next
operator race).
"""

from __future__ import annotations

import dataclasses
from typing import List

from ..isa import Dep, Instr, Program, Queue


@dataclasses.dataclass
class Step:
    loads: List[Instr] = dataclasses.field(default_factory=list)  # LOAD queue
    computes: List[Instr] = dataclasses.field(default_factory=list)  # COMPUTE queue
    stores: List[Instr] = dataclasses.field(default_factory=list)  # STORE queue


# the flags as plain ints (or-ing IntFlag members goes through the enum machinery every time)
_POP_PREV, _POP_NEXT = int(Dep.POP_PREV), int(Dep.POP_NEXT)
_PUSH_PREV, _PUSH_NEXT = int(Dep.PUSH_PREV), int(Dep.PUSH_NEXT)


def _with(instr: Instr, flags: int) -> Instr:
    return instr.with_deps(flags) if flags else instr


def _sync(queue: Queue) -> Instr:
    return Instr.make("sync", queue=int(queue))


def emit_pipeline(program: Program, steps: List[Step], double_buffer: bool = True) -> None:
    """Appends the steps with their tokens. With double_buffer=False every step waits for the
    previous one to finish completely (the serialised twin, for measurements)."""
    reuse = 2 if double_buffer else 1
    n_loads = sum(1 for s in steps if s.loads)
    n_stores = sum(1 for s in steps if s.stores)
    load_rank = store_rank = 0  # how many earlier steps load / store
    out = program.instrs
    for step in steps:
        if not step.computes and (step.loads or step.stores):
            step.computes = [_sync(Queue.COMPUTE)]  # carries the tokens between load and store
        loads, computes, stores = list(step.loads), list(step.computes), list(step.stores)
        first_c = last_c = 0  # Dep flags of the step's first and last compute
        if loads:
            if load_rank >= reuse:  # wait until the compute that last read this slot is done
                loads[0] = _with(loads[0], _POP_NEXT)
            loads[-1] = _with(loads[-1], _PUSH_NEXT)
            first_c |= _POP_PREV
            if load_rank + reuse < n_loads:  # a later load will wait for this slot
                last_c |= _PUSH_PREV
            load_rank += 1
        if stores:
            if store_rank >= reuse:  # the store that last read this output slot must be done
                first_c |= _POP_NEXT
            last_c |= _PUSH_NEXT
            stores[0] = _with(stores[0], _POP_PREV)
            if store_rank + reuse < n_stores:
                stores[-1] = _with(stores[-1], _PUSH_PREV)
            store_rank += 1
        computes[0] = _with(computes[0], first_c)
        computes[-1] = _with(computes[-1], last_c)
        out += loads
        out += computes
        out += stores
