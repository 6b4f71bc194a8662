"""Process limits and credentials: open-file limit sized for maxconn, dropping root."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import resource

from balancer.config.model import Config

log = logging.getLogger("balancer")


def raise_nofile_limit(config: Config) -> None:
    """Raise RLIMIT_NOFILE so maxconn client connections plus as many server connections
    fit (two descriptors per proxied connection). The soft limit goes up to the hard one;
    with the right to (root, CAP_SYS_RESOURCE) the hard one too, up to fs.nr_open, as
    HAProxy does: a default hard limit of 20,000 would otherwise cap a node at 10,000
    proxied connections whatever maxconn says."""
    frontend_total = sum(f.maxconn for f in config.frontend) or config.global_.maxconn
    wanted = 2 * min(config.global_.maxconn, frontend_total) + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        ceiling = min(wanted, _nr_open())
        if ceiling > hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
                soft, hard = ceiling, ceiling
            except (ValueError, OSError):
                pass  # not allowed: the soft limit goes up to the hard one below
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit to %d: %s", target, exc)
    if target < wanted:
        log.info("open files limit %d is below what maxconn needs (%d)", target, wanted)


def _nr_open() -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open; 1048576 where it cannot be read)."""
    try:
        with open("/proc/sys/fs/nr_open") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1 << 20


def drop_privileges(user: str, group: str) -> None:
    """After binding: switch to `group` and `user` (names or numbers). No-op when empty."""
    if not user and not group:
        return
    gid = _lookup(group, grp.getgrnam, "gr_gid") if group else None
    uid = _lookup(user, pwd.getpwnam, "pw_uid") if user else None
    if gid is None and uid is not None:
        gid = pwd.getpwuid(uid).pw_gid
    if gid is not None:
        os.setgroups([gid])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    log.info("running as uid=%d gid=%d", os.getuid(), os.getgid())


def _lookup(name: str, getter: object, attribute: str) -> int:
    if name.isdigit():
        return int(name)
    entry = getter(name)  # type: ignore[operator]
    return int(getattr(entry, attribute))
