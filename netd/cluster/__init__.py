"""netd across hosts: the node's identity in the cluster, its view of the other nodes, and the
store that keeps global networks in etcd (docs/multi-host.md).

``ClusterConfig`` is the ``[cluster]`` table of the daemon's config; ``ClusterStore`` puts
global-scope networks (the overlay) in etcd and everything else in the local SQLite store;
``NodeRegistry`` keeps this node's liveness lease; ``ClusterSync`` keeps the local view of the
other nodes' endpoints current from etcd's watch.
"""
