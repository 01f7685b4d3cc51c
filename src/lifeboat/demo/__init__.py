"""``make demo``: lifeboat's main job, end to end, on a local etcd it starts itself."""
