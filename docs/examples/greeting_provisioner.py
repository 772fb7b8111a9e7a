"""A custom provisioner: LocalProvisioner plus an environment variable set by configuration.

Registered through an entry point in the group ``kernel_nursery.provisioners``::

    [project.entry-points."kernel_nursery.provisioners"]
    greeting-provisioner = "greeting_provisioner:GreetingProvisioner"

and chosen by a kernel.json stanza::

    "metadata": {"kernel_provisioner": {"provisioner_name": "greeting-provisioner",
                                        "config": {"greeting": "bonjour"}}}
"""

from __future__ import annotations

from traitlets import Unicode

from kernel_nursery import LocalProvisioner


class GreetingProvisioner(LocalProvisioner):
    """Runs kernels locally with ``GREETING`` in their environment."""

    greeting = Unicode("hello", config=True, help="The value of GREETING in the kernel's env.")

    def _finalize_env(self, env: dict[str, str]) -> None:
        super()._finalize_env(env)
        env["GREETING"] = self.greeting
