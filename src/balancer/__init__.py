"""balancer: a software load balancer (HTTP L7 and TCP L4 reverse proxy)."""

__version__ = "0.1.0"
