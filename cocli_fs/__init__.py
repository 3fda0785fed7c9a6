"""cocli-fs: a FUSE view of cocli's plain-text CRM, merged across a cluster."""

__version__ = "0.1.0"
