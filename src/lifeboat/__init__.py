"""lifeboat: disaster recovery for Kubernetes control planes backed by etcd."""

__version__ = "0.1.0"
