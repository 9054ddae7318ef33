"""Pure cluster logic: the cluster state, its commands, their transitions and
replica placement. No I/O, no asyncio, no consensus library: ``consensus/``
replicates the encoded commands and calls ``transitions.apply`` on every node."""
