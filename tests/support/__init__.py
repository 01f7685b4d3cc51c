"""Controllers for the real servers the integration tests run (etcd, SeaweedFS S3)."""
