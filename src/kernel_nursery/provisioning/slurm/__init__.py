"""The Slurm provisioner: a kernel as a Slurm job, started with ``srun``.

The local ``srun`` process stands for the job (its exit is the kernel's end); the node side
(``provisioning/_scripts/slurm_node.py``) starts the kernel inside the job step and reports its
ports, and the job ends when the launcher goes.
"""

from __future__ import annotations

from ._errors import JobEndedError, JobError, JobRejectedError, QueueTimeoutError
from ._provisioner import SlurmProvisioner

__all__ = ["JobEndedError", "JobError", "JobRejectedError", "QueueTimeoutError", "SlurmProvisioner"]

from ..._util import fixup_module_metadata

fixup_module_metadata("kernel_nursery.provisioning", globals())
del fixup_module_metadata
