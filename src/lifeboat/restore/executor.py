"""Running a restore plan step by step, journaling each finished step; resuming; rolling back.

Failure policy (docs/restore.md): if etcd does not start or the restored member does not
serve the snapshot after the data was swapped in, and the old data dir was moved aside,
a single-member restore rolls back at once (old data back in place, etcd started on it)
and reports the failure (with ``--supervisor none``, which cannot stop etcd, it says to stop
it and roll back); a member of a multi-member restore stops and prints the
``--rollback`` command, since its peers may simply not be up yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NoReturn

from lifeboat.disk import no_room_left
from lifeboat.errors import LifeboatError, NoRoom, OperationFailed
from lifeboat.restore.plan import RestorePlan, plan_rollback
from lifeboat.restore.steps import RestoreContext


@dataclass(frozen=True)
class Outcome:
    """Which steps ran now and which the journal already listed as done."""

    ran: tuple[str, ...]
    skipped: tuple[str, ...]


def execute(plan: RestorePlan, ctx: RestoreContext, *, auto_rollback: bool) -> Outcome:
    """Run every step the journal does not list as done; save the journal after each."""
    done = ctx.journal.rollback_done if plan.rollback else ctx.journal.done
    ran: list[str] = []
    skipped = tuple(s.key for s in plan.steps if s.key in done)
    total = len(plan.steps)
    try:
        for number, step in enumerate(plan.steps, 1):
            if step.key in done:
                continue
            ctx.say(f"[{number}/{total}] {step.describe()}")
            if step.changes_node and not plan.rollback and not ctx.journal.node_changed:
                ctx.journal = replace(ctx.journal, node_changed=True)
                ctx.save(ctx.journal)
            try:
                step.check(ctx)
                step.run(ctx)
            except LifeboatError as exc:
                if step.undo_on_failure and auto_rollback and not plan.rollback:
                    _roll_back_after(ctx, exc)
                raise
            except OSError as exc:
                full = no_room_left(exc, "re-run the same command to resume")
                if full is not None:
                    raise NoRoom(f"step '{step.key}' stopped: {full}") from None
                raise OperationFailed(f"step '{step.describe()}' failed: {exc}; fix it and re-run the same "
                                      "command to resume") from None
            ctx.journal = ctx.journal.with_done(step.key, rollback=plan.rollback)
            ctx.save(ctx.journal)
            ran.append(step.key)
    finally:
        ctx.close_surveys()  # a survey no step took: stopped, its staged segments removed
    if plan.rollback:
        ctx.journal = replace(ctx.journal, rolled_back=True)
    else:
        ctx.journal = replace(ctx.journal, finished=True)
    ctx.save(ctx.journal)
    return Outcome(tuple(ran), skipped)


def _roll_back_after(ctx: RestoreContext, failure: LifeboatError) -> NoReturn:
    if not ctx.journal.state.get("moved_aside"):
        raise failure
    if not ctx.supervisor.stops_by_itself:
        # The rollback would stop at its first step: the etcd the operator started is still running.
        raise OperationFailed(
            f"the restored member failed ({failure}); lifeboat cannot stop the etcd you started (--supervisor "
            "none): stop etcd, then run 'lifeboat restore --rollback' to put the old data dir back (or fix the "
            "cause and re-run the same command to resume)") from None
    stamp = ctx.journal.rollback_stamp or ctx.journal.stamp
    ctx.journal = replace(ctx.journal, rollback_stamp=stamp)
    ctx.save(ctx.journal)
    ctx.say(f"restored member failed ({failure}); rolling back to the old data dir")
    rollback = plan_rollback(ctx.journal, ctx.paths, ctx.supervisor, stamp)
    execute(rollback, ctx, auto_rollback=False)
    raise OperationFailed(
        f"the restored member failed ({failure}); rolled back: the old data dir is in place again and "
        f"etcd was started on it; the restored data is kept at {ctx.paths.set_aside(stamp)}"
    )
