"""netd: a container networking daemon (IPAM, bridges, firewall, DNS) with a CNI plugin.

This package's ``__init__`` stays import-free on purpose: the CNI plugin imports
``netd.cni.plugin`` with ``python3 -I -S`` and must not pay for anything else.
"""

__version__ = "0.1.0"
