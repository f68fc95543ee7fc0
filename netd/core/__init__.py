"""The domain core behind :class:`netd.service.Service`, one responsibility per module.

- :mod:`.state`: the in-memory records, IPAM allocators, locks and the in-flight guard;
- :mod:`.undo`: the one undo mechanism;
- :mod:`.firewalling`: the firewall, for the networks whose driver routes through the host;
- :mod:`.dns_publish`: the DNS seam and what containers are told about DNS;
- :mod:`.networks` and :mod:`.endpoints`: the lifecycles;
- :mod:`.parts`: the bundle the reconciler and the reaper work on.

Nothing here parses HTTP or CNI or imports a web framework; the kernel is reached only through
the driver and firewall seams.
"""
