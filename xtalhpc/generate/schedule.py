"""Dynamic scheduling of shards over the ranks: rank 0's :class:`Coordinator` and the other
ranks' :class:`Worker`, and the progress rank 0 aggregates from both.

Rank 0 keeps the queue of shards still to do and answers requests from the other ranks between
its own sub-batches, so one slow shard (structure costs differ 1000x) never holds up the rest.
Worker r starts on ``todo[r]`` without asking, and asks for its next shard as soon as it starts
one, so the answer is waiting when it finishes. With one rank it is a plain loop.
"""
from __future__ import annotations

import time

from ..job import Log, Progress, fmt_seconds

TAG_REQUEST, TAG_ASSIGN, TAG_DONE = 11, 12, 13


class Coordinator:
    """Rank 0's side of dynamic scheduling: hands out shard indices, collects progress."""

    def __init__(self, comm, todo: list[int], progress: ShardProgress):
        self.comm = comm
        # The first shards go out without a message: worker r starts on todo[r] (see
        # first_shard), so no rank waits for rank 0 to reach its first poll (rank 0's first
        # shard also loads the compiled kernels: ~0.3 s without answering).
        pre = len(todo[1:comm.size])
        self.queue = list(todo[:1]) + list(todo[comm.size:])
        self.progress = progress
        self.closed = comm.size - 1 - pre  # workers told "no more shards" (those with no first shard: implicitly)
        self.assigned = pre  # shards handed to workers
        self.reported = 0  # of those, reported done
        self.infos: dict = {}  # shard index -> ShardInfo of the shards the workers wrote

    def take(self) -> int | None:
        return self.queue.pop(0) if self.queue else None

    def poll(self) -> None:
        if self.comm.size == 1:
            return
        from mpi4py import MPI

        c = self.comm.comm
        st = MPI.Status()
        while c.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st):
            src, tag = st.Get_source(), st.Get_tag()
            msg = c.recv(source=src, tag=tag)
            if tag == TAG_REQUEST:
                nxt = self.take()
                c.send(-1 if nxt is None else nxt, dest=src, tag=TAG_ASSIGN)
                if nxt is None:
                    self.closed += 1
                else:
                    self.assigned += 1
            elif tag == TAG_DONE:
                self.reported += 1
                info = msg.pop("info", None)
                if info is not None:
                    self.infos[info.index] = info
                self.progress.shard_done(**msg)

    def drain(self) -> None:
        """Answer until every worker has been told there is nothing left (and reported its last shard)."""
        # A worker asks for its next shard before reporting the current one, so
        # "all told to stop" is not enough: wait for every report too.
        while self.closed < self.comm.size - 1 or self.reported < self.assigned:
            self.poll()
            time.sleep(0.002)


def first_shard(todo: list[int], rank: int) -> int | None:
    """The shard a rank starts on without asking (rank r: todo[r]), None when there is none."""
    return todo[rank] if rank < len(todo) else None


class Worker:
    """A non-zero rank's side: ask early, so the next assignment is waiting when a shard finishes."""

    def __init__(self, comm, todo: list[int]):
        self.comm = comm
        self.pending = None
        self.first = first_shard(todo, comm.rank)
        self.started = False

    def request(self) -> None:
        self.comm.comm.send(None, dest=0, tag=TAG_REQUEST)
        self.pending = self.comm.comm.irecv(source=0, tag=TAG_ASSIGN)

    def next(self) -> int | None:
        if not self.started:
            self.started = True
            if self.first is None:
                return None  # no shard for this rank; the coordinator counted it as told
            self.request()  # one ahead
            return int(self.first)
        if self.pending is None:
            self.request()
        while True:
            done, val = self.pending.test()
            if done:
                break
            time.sleep(0.0005)
        self.pending = None
        if val < 0:
            return None
        self.request()
        return int(val)

    def report(self, **msg) -> None:
        self.comm.comm.send(msg, dest=0, tag=TAG_DONE)


class ShardProgress:
    """Rank 0's aggregated progress: one ``[generate] shard ...`` line per finished shard, with the
    shard count, patterns, rate and ETA (:class:`xtalhpc.job.Progress` counts the shards)."""

    def __init__(self, n_shards_todo: int, log: Log):
        self.shards = Progress(n_shards_todo, "shards")
        self.log = log
        self.items = 0
        self.patterns = 0
        self.rejected = 0

    def shard_done(self, *, shard: int, rank: int, n_patterns: int, n_rejected: int, seconds: float) -> None:
        self.shards.update(1)
        self.items += n_patterns + n_rejected
        self.patterns += n_patterns
        self.rejected += n_rejected
        if not self.log.enabled:
            return
        el = self.shards.elapsed
        rate = self.patterns / el if el > 0 else 0.0
        self.log(f"shard {shard:05d} rank {rank}: {n_patterns} patterns, {n_rejected} rejected, {seconds:.2f} s | "
                 f"{self.shards.done}/{self.shards.total} shards done, {self.patterns} patterns, "
                 f"{rate:,.1f} patterns/s, ETA {fmt_seconds(self.shards.eta())}")
