"""Reconciliation: the kernel converged to the records, at start-up and for ever after.

- :mod:`.plan`: pure planning (records + what the drivers' inventories and the firewall show →
  repair actions);
- :mod:`.loop`: the periodic and event-driven passes that apply a plan under the service's locks;
- :mod:`.startup`: loading the records, removing orphans and finishing interrupted operations
  before the daemon serves;
- :mod:`.reap`: endpoints whose namespace is gone for good;
- :mod:`.recover`, :mod:`.recover_firewall`, :mod:`.recover_copy`: ``netd recover``, rebuilding
  the records from the kernel, the firewall and the recovery copy when the database is lost.
"""
