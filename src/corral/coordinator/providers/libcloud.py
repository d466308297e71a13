"""`libcloud`: cloud VMs through apache-libcloud's compute drivers, one worker each.

    --scale libcloud:driver=ec2,key=AKIA...,secret=@/etc/corral/ec2.secret,region=eu-west-1,
                     image=ami-0abc...,size=t3.large,slots=2,memory=7G

A launch creates one node named `corral-<launch>` from `image` and `size` (matched by id or
name; `location` too when given), booted with `user_data(start)`: a shell script that
cloud-init (or GCE's startup-script) runs as root on first boot. It installs corral with pip
into /opt/corral (installing python3-venv and bubblewrap with apt-get where that is how the
image gets them) and starts one worker that joins with the launch's one-time token. The node
id is the handle; `stop` destroys the node, `exited` reports a node that is gone or
terminated.

How user-data reaches the VM differs by driver; `userdata_args` reads the driver's own
`create_node` signature: `ex_userdata` (EC2, OpenStack, Linode, Vultr, ...), `ex_user_data`
(DigitalOcean), `ex_customdata` (Azure), `ex_metadata["startup-script"]` (GCE). A driver with
none of these can boot no worker and is refused at launch, except libcloud's `dummy` driver,
which starts no VM at all (it is for trying the provider and for tests).

Options: `driver` (a libcloud provider name: ec2, gce, azure_arm, openstack, dummy, ...),
`image`, `size`, `location`, credentials `key`, `secret`, `region`, `project` (a value
`@FILE` is read from that file, so secrets stay off the command line), `package` (what pip
installs, default `corral`: a version, a wheel URL or a git URL work too), `python` (the
image's interpreter, default `python3`). libcloud's calls block, so they run in a thread.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import shlex
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

from .base import ProviderError, ScaleError, Start, WorkerProvider

__all__ = ["LibcloudProvider", "node_name", "read_secret", "user_data", "userdata_args"]

PREFIX = "/opt/corral"
# create_node keywords that carry user-data as a string, in the drivers that have them
USERDATA_KEYWORDS = ("ex_userdata", "ex_user_data", "ex_customdata")
_CREDENTIALS = ("key", "secret", "region", "project")
_GONE = ("terminated", "error", "stopped", "stopping")  # a node that will not run a worker


def user_data(start: Start, package: str = "corral", python: str = "python3") -> str:
    """The boot script of one worker VM: install corral, run the worker in the background."""
    worker = start.shell(f"{PREFIX}/bin/corral")
    py, venv = shlex.quote(python), f"{PREFIX}"
    return f"""#!/bin/sh
# corral worker {start.launch_id}, made by the libcloud provider: install corral in its own
# virtualenv, then run one worker that joins with this launch's one-time token
set -u
if command -v apt-get >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q python3-venv python3-pip bubblewrap
fi
{py} -m venv {venv} || exit 1
{venv}/bin/pip install --quiet {shlex.quote(package)} || exit 1
umask 077
cat > {venv}/worker.sh <<'CORRAL_WORKER'
{worker}
CORRAL_WORKER
nohup sh {venv}/worker.sh > /var/log/corral-worker.log 2>&1 < /dev/null &
"""


def userdata_args(parameters: Collection[str], driver: str, text: str) -> dict[str, Any] | None:
    """The create_node keywords that pass `text` as user-data to a driver whose create_node
    takes `parameters`; None when it takes none."""
    for keyword in USERDATA_KEYWORDS:
        if keyword in parameters:
            return {keyword: text}
    if driver == "gce" and "ex_metadata" in parameters:
        return {"ex_metadata": {"startup-script": text}}
    return None


def node_name(launch_id: str) -> str:
    """A node name every cloud accepts: lowercase letters, digits and dashes, at most 63."""
    return ("corral-" + re.sub(r"[^a-z0-9-]+", "-", launch_id.lower())).strip("-")[:63]


def read_secret(value: str) -> str:
    """A credential as given, or the first line of FILE for `@FILE`; ScaleError."""
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).expanduser().read_text().strip()
    except OSError as exc:
        raise ScaleError(f"--scale libcloud: cannot read {value[1:]}: {exc.strerror}") from exc


def _import_libcloud() -> Any:
    try:
        from libcloud.compute import providers
    except ImportError as exc:
        raise ScaleError(
            "--scale libcloud needs apache-libcloud: pip install 'corral[cloud]'"
        ) from exc
    return providers


def _find(things: list[Any], wanted: str, what: str) -> Any:
    for thing in things:
        if str(thing.id) == wanted or thing.name == wanted:
            return thing
    known = ", ".join(sorted({str(t.id) for t in things})[:10])
    raise ProviderError(f"the driver has no {what} {wanted!r} (some it has: {known})")


class LibcloudProvider(WorkerProvider):
    """Workers on cloud VMs through apache-libcloud."""

    kind = "libcloud"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"driver", "image", "size", "location", "package", "python", *_CREDENTIALS}
    )

    def check(self) -> None:
        """The driver exists and takes these credentials (nothing is asked of the cloud)."""
        providers = _import_libcloud()
        name = self.require("driver")
        try:
            cls = providers.get_driver(name)
        except AttributeError as exc:  # libcloud's answer to an unknown provider name
            raise ScaleError(f"--scale libcloud: libcloud has no driver {name!r}") from exc
        creds = {k: read_secret(v) for k, v in self.extra.items() if k in _CREDENTIALS}
        args = [creds.pop(k) for k in ("key", "secret") if k in creds]
        try:
            self.driver = cls(*(args or ["0"]), **creds)
        except Exception as exc:  # drivers raise anything on bad credentials
            raise ScaleError(f"--scale libcloud: driver {name}: {exc}") from exc
        if name != "dummy":
            self.require("image")
            self.require("size")
        self.driver_name = name
        self.nodes: dict[str, Any] = {}  # handle -> node

    def _placement(self) -> dict[str, Any]:
        """The location, size and image to create nodes with, looked up by id or name."""
        d, out = self.driver, {}
        if "location" in self.extra:
            out["location"] = _find(d.list_locations(), self.extra["location"], "location")
        sizes = d.list_sizes(out["location"]) if "location" in out else d.list_sizes()
        images = d.list_images()
        # only the dummy driver may leave them out (checked): it takes its first of each
        out["size"] = _find(sizes, self.extra.get("size", str(sizes[0].id)), "size")
        out["image"] = _find(images, self.extra.get("image", str(images[0].id)), "image")
        return out

    def _create(self, start: Start) -> Any:
        package = self.extra.get("package", "corral")
        text = user_data(start, package, self.extra.get("python", "python3"))
        params = inspect.signature(self.driver.create_node).parameters
        extra = userdata_args(params, self.driver_name, text)
        if extra is None and self.driver_name != "dummy":
            raise ProviderError(f"driver {self.driver_name} takes no user-data for the worker")
        name = node_name(start.launch_id)
        return self.driver.create_node(name=name, **self._placement(), **(extra or {}))

    async def launch(self, start: Start) -> str:
        """Create the node; the handle is its id."""
        try:
            node = await asyncio.to_thread(self._create, start)
        except ProviderError:
            raise
        except Exception as exc:  # a cloud API error of any kind
            raise ProviderError(f"{self.driver_name}: create_node failed: {exc}") from exc
        self.nodes[str(node.id)] = node
        return str(node.id)

    def _node(self, handle: str) -> Any | None:
        return next((n for n in self.driver.list_nodes() if str(n.id) == handle), None)

    async def exited(self, handle: str) -> str | None:
        """A node that is gone or will not run is a launch that failed."""
        try:
            node = await asyncio.to_thread(self._node, handle)
        except Exception:  # the cloud API is out of reach for now: the join timeout holds
            return None
        if node is None:
            return f"node {handle} is gone"
        state = str(node.state).lower()
        return f"node {handle} is {state}" if state in _GONE else None

    async def stop(self, handle: str) -> None:
        """Destroy the node (one already gone is fine)."""
        self.nodes.pop(handle, None)
        try:
            node = await asyncio.to_thread(self._node, handle)
            if node is not None:
                await asyncio.to_thread(self.driver.destroy_node, node)
        except Exception as exc:  # a cloud API error of any kind
            raise ProviderError(f"{self.driver_name}: destroying node {handle}: {exc}") from exc
