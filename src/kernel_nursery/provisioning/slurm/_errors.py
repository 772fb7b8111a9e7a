r"""The errors only the Slurm provisioner raises: the scheduler refused, never started or ended
the kernel's job. All are :class:`~kernel_nursery.ProvisionerError`\ s.
"""

from __future__ import annotations

from ..._errors import ProvisionerError

__all__ = ["JobEndedError", "JobError", "JobRejectedError", "QueueTimeoutError"]


class JobError(ProvisionerError):
    """A batch scheduler (Slurm) did not run, or stopped running, a kernel's job.

    Attributes:
        job_id: The scheduler's id of the job, when it had one.
    """

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class JobRejectedError(JobError, ValueError):
    """The scheduler refused the kernel's job (unknown partition or account, a resource request
    it cannot satisfy); the message is the scheduler's. Nothing is left in the queue."""


class QueueTimeoutError(JobError, TimeoutError):
    """The kernel's job did not start within the provisioner's queue timeout; it was cancelled
    and nothing is left in the queue."""


class JobEndedError(JobError):
    """The scheduler ended the kernel's job (time limit, ``scancel``, preemption...) and the
    provisioner's restart policy does not submit it again.

    Attributes:
        state: The job's final state as the scheduler names it (``TIMEOUT``, ``CANCELLED``...).
    """

    def __init__(self, message: str, *, job_id: str | None = None, state: str) -> None:
        self.state = state
        super().__init__(message, job_id=job_id)
