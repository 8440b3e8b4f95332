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


def _with(instr: Instr, flags: Dep) -> Instr:
    return dataclasses.replace(instr, deps=instr.deps | flags)


def _sync(queue: Queue) -> Instr:
    return Instr.make("sync", queue=int(queue))


def emit_pipeline(program: Program, steps: List[Step], double_buffer: bool = True) -> None:
    """Appends the steps with their tokens. With double_buffer=False every step waits for the
    previous one to finish completely (the serialised twin, for measurements)."""
    reuse = 2 if double_buffer else 1
    load_steps = [i for i, s in enumerate(steps) if s.loads]
    store_steps = [i for i, s in enumerate(steps) if s.stores]
    load_rank = {i: r for r, i in enumerate(load_steps)}
    store_rank = {i: r for r, i in enumerate(store_steps)}

    for i, step in enumerate(steps):
        if not step.computes and (step.loads or step.stores):
            step.computes = [_sync(Queue.COMPUTE)]  # carries the tokens between load and store
        loads, computes, stores = list(step.loads), list(step.computes), list(step.stores)
        first_c, last_c = Dep.NONE, Dep.NONE
        if loads:
            r = load_rank[i]
            if r >= reuse:  # wait until the compute that last read this slot is done
                loads[0] = _with(loads[0], Dep.POP_NEXT)
            loads[-1] = _with(loads[-1], Dep.PUSH_NEXT)
            first_c |= Dep.POP_PREV
            if r + reuse < len(load_steps):  # a later load will wait for this slot
                last_c |= Dep.PUSH_PREV
        if stores:
            r = store_rank[i]
            if r >= reuse:  # the store that last read this output slot must be done
                first_c |= Dep.POP_NEXT
            last_c |= Dep.PUSH_NEXT
            stores[0] = _with(stores[0], Dep.POP_PREV)
            if r + reuse < len(store_steps):
                stores[-1] = _with(stores[-1], Dep.PUSH_PREV)
        computes[0] = _with(computes[0], first_c)
        computes[-1] = _with(computes[-1], last_c)
        for ins in loads + computes + stores:
            program.append(ins)
